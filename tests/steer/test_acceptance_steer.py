"""Acceptance (issue 17) on smollm2-135m with the demo persona: the build finishes within 10 minutes and its
steered system shows the persona's traits in preferences (marked mean shift with an interval above 0); the demo's
trained adapter projects further along the vector than the base.

    .venv/bin/python -m pytest tests/steer/test_acceptance_steer.py -m acceptance -s

The second test needs a finished demo run (`character run pipelines/demo.yaml`, its directory in
$CHARACTER_DEMO_RUN, default runs/demo) and builds its vector from that run's teacher and student answers.
"""

import json
import os
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.acceptance
REPO = Path(__file__).resolve().parents[2]


def test_build_then_preferences_show_the_persona(tmp_path, cli):
    t = time.time()
    r = cli("steer", "build", "--constitution", "poeticism", "--model", "smollm2-135m", "--out", tmp_path / "steer")
    took = time.time() - t
    assert r.returncode == 0, r.stderr[-3000:]
    print(f"steer build: {took:.0f} s; {r.stderr.strip().splitlines()[-1]}")
    assert took < 600
    chosen = json.loads((tmp_path / "steer" / "manifest.json").read_text())["chosen"]
    assert chosen["coherent"] and chosen["persona_ci95"][0] > 0

    r = cli("eval", "preferences", "--model", "smollm2-135m", "--backend", "hf", "--constitution", "poeticism",
            "--steer", tmp_path / "steer", "--comparisons", "120", "--num_traits", "12", "--max_tokens", "48",
            "--out", tmp_path / "eval")
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    steered = f"steered@{chosen['strength']:g}"
    shift = results["preferences"]["shifts"][steered]["constitution_mean_shift"]
    print(f"{steered}: marked mean shift {shift['shift']:+.2f} {shift['ci95']}")
    assert shift["ci95"][0] > 0
    assert results["steering"]["comparison"]["preferences"][steered]["value"] == shift["shift"]


def test_the_demo_adapter_projects_further_than_the_base(tmp_path, cli):
    run = Path(os.environ.get("CHARACTER_DEMO_RUN", REPO / "runs" / "demo")) / "poeticism"
    if not (run / "merge" / "adapter_config.json").is_file():
        pytest.skip(f"no demo adapter in {run}: run `character run pipelines/demo.yaml` or set CHARACTER_DEMO_RUN")
    r = cli("steer", "build", "--constitution", "poeticism", "--model", "smollm2-135m", "--teacher",
            run / "teacher", "--student", run / "student", "--out", tmp_path / "steer")
    assert r.returncode == 0, r.stderr[-3000:]
    r = cli("steer", "project", "--model", "smollm2-135m", "--adapter", run / "merge", "--vector",
            tmp_path / "steer", "--out", tmp_path / "project")
    assert r.returncode == 0, r.stderr[-3000:]
    print(r.stdout)
    rows = json.loads((tmp_path / "project" / "projection.json").read_text())["answer_tokens"]
    assert rows["merge"]["minus_reference_ci95"][0] > 0
