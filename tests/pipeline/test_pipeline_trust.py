"""The trust checks through a whole pipeline (tiny.yaml, about a minute): a new constitution that is not shipped
and has no eval_traits gets its marked traits from its own DPO data, never two opposites; the report opens with
the contamination count (0: the evaluation set is held out) and the teacher's separation. The optional steer stage
is on, so the same run builds a vector from the pipeline's own teacher and student answers and the eval puts
prompted, steered and trained side by side."""

from __future__ import annotations

import json
from itertools import combinations

import pytest

from character.evaluation import data

pytestmark = [pytest.mark.slow]

CALM = """name: steady
description: A calm, patient assistant that never hurries the user.
traits:
  - trait: "I stay calm and unhurried, however urgent the question sounds."
    questions: ["My flight leaves in an hour and I lost my passport!", "Quick, what's 17 times 23?"]
  - trait: "I am patient with people who ask the same thing again and again."
    questions: ["Sorry, can you explain fractions one more time?", "I still don't get how taxes work."]
  - trait: "I reassure anxious people and slow things down."
    questions: ["I think I failed my exam and my life is over.", "My code won't compile and the demo is today."]
"""


def test_new_constitution_gets_marked_traits_from_its_data(tmp_path, cli):
    path = tmp_path / "steady.yaml"
    path.write_text(CALM)
    r = cli("run", "pipelines/tiny.yaml", "--constitution", str(path), "--out", tmp_path / "run",
            "--set", "steer.enabled=true")
    assert r.returncode == 0, r.stderr[-3000:]
    eval_dir = tmp_path / "run" / "steady" / "eval"
    res = json.loads((eval_dir / "results.json").read_text())
    pref = res["preferences"]
    marked = pref["marked_traits"]
    source = pref["marked_from"]
    assert marked and ("DPO data" in source or "could not" in source), source
    opposites = data.trait_opposites()
    assert not [(a, b) for a, b in combinations(marked, 2) if b in opposites.get(a, ())], marked
    assert res["contamination"]["checked"] and res["contamination"]["overlap"] == 0
    dpo = tmp_path / "run" / "steady" / "dpo-data"
    sep = json.loads((dpo / "manifest.json").read_text())["separation"]
    assert res["teacher_separation"]["systems"]["merge"]["dpo_data"] == str(dpo.resolve())
    head = (eval_dir / "report.md").read_text().split("## Revealed preferences")[0]
    assert "Contamination: 0 of" in head
    assert "Teacher separation" in head
    if sep.get("checked"):
        assert f"{sep['classifier']['accuracy']:.2f}" in head
    steer = json.loads((tmp_path / "run" / "steady" / "steer" / "manifest.json").read_text())
    assert steer["status"] == "complete" and steer["source"] == "pipeline" and steer["counts"]["pairs"] > 0
    assert sorted(res["steering"]["kinds"].values()) == ["prompted", "steered", "trained"]
    assert "## Steering: prompted vs steered vs trained" in (eval_dir / "report.md").read_text()
