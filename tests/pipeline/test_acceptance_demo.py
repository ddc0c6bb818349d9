"""Acceptance: the demo pipeline and its negative control (issue 12).

The demo persona (poeticism) and a placebo constitution (its own questions, a plain persona-free description,
poeticism's traits as eval_traits) both go through `pipelines/demo.yaml`, each within 15 minutes on this 2-core CPU.
The placebo's marked shift must be indistinguishable from 0 (its interval covers 0), the persona's must exceed the
placebo's (the paired interval of the difference lies above 0), and the evaluation must have scored prompts that
neither run was trained on.

    .venv/bin/python -m pytest tests/pipeline/test_acceptance_demo.py -m acceptance -s

Takes about 25 minutes; `make acceptance` runs it with the other acceptance checks.
"""

from __future__ import annotations

import json
import time

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.vllm, pytest.mark.acceptance]

BUDGET_S = 15 * 60


def run_demo(cli, out, *extra: str) -> float:
    t0 = time.time()
    r = cli("run", "pipelines/demo.yaml", "--out", out, *extra, timeout=2 * BUDGET_S)
    assert r.returncode == 0, r.stderr[-3000:]
    return time.time() - t0


def marked_shift(results: dict) -> dict:
    pref = results["preferences"]
    (sec,) = pref["shifts"].values()  # the demo evaluates one trained system
    return sec


def test_demo_persona_beats_its_placebo(tmp_path, cli):
    placebo_s = run_demo(cli, tmp_path / "placebo", "--constitution", "constitutions/controls/placebo.yaml")
    placebo_eval = tmp_path / "placebo" / "placebo" / "eval"
    persona_s = run_demo(cli, tmp_path / "demo", "--set", f"eval.control={placebo_eval}")
    placebo = json.loads((placebo_eval / "results.json").read_text())
    persona = json.loads((tmp_path / "demo" / "poeticism" / "eval" / "results.json").read_text())
    print(f"\nplacebo run {placebo_s:.0f} s, persona run {persona_s:.0f} s")

    for res in (placebo, persona):
        con = res["contamination"]
        assert con["checked"] and con["overlap"] == 0 and con["training_prompts"] > 0, con
        sec = marked_shift(res)
        assert "p_value" in sec["constitution_mean_shift"] and "unmarked_mean_abs_shift" in sec
        assert res["teacher_separation"]["systems"], res["teacher_separation"]

    p_cm, d_cm = marked_shift(placebo)["constitution_mean_shift"], marked_shift(persona)["constitution_mean_shift"]
    ctl = persona["preferences"]["control"]
    print(f"persona {d_cm['shift']:+.2f} {d_cm['ci95']} p={d_cm['p_value']}; placebo {p_cm['shift']:+.2f} "
          f"{p_cm['ci95']} p={p_cm['p_value']}; difference {ctl['difference']:+.2f} {ctl['ci95']} p={ctl['p_value']}")
    assert p_cm["traits"] == d_cm["traits"]  # the same marked traits in both runs
    assert p_cm["ci95"][0] <= 0 <= p_cm["ci95"][1], "the placebo shows a shift: the method reads noise as persona"
    assert ctl["paired"] and ctl["ci95"][0] > 0, "the demo cannot tell its persona from its placebo"
    assert placebo_s < BUDGET_S and persona_s < BUDGET_S
