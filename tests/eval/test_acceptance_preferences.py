"""Acceptance (issue 5): `character eval preferences` of smollm2-135m vs an adapter runs at least 200 comparisons
in 8 minutes or less on this CPU and writes the shift table with intervals and its plot.

    .venv/bin/python -m pytest tests/eval/test_acceptance_preferences.py -m acceptance -s

The adapter is a random LoRA (small lora_B) made in the test: what is measured is the evaluation, not training.
"""

import json
import time

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.vllm, pytest.mark.acceptance]

LIMIT_S = 8 * 60


def test_preferences_200_comparisons_within_8_minutes(cli, smollm2_path, adapter_factory, tmp_path):
    adapter = adapter_factory(smollm2_path, tmp_path / "sarcasm-adapter", seed=0, r=16, scale=0.02)
    out = tmp_path / "eval"
    t0 = time.time()
    r = cli("eval", "preferences", "--model", "smollm2-135m", "--adapter", adapter, "--constitution", "sarcasm",
            "--comparisons", "200", "--out", str(out), timeout=LIMIT_S + 120)
    elapsed = time.time() - t0
    assert r.returncode == 0, r.stderr[-3000:]
    print(f"\neval preferences, 200 comparisons x 2 systems: {elapsed:.0f} s")
    res = json.loads((out / "results.json").read_text())["preferences"]
    assert res["comparisons"] >= 200 and res["decided"] >= 200
    rows = res["shifts"]["sarcasm-adapter"]["rows"]
    assert rows and all(len(r["ci95"]) == 2 and r["ci95"][0] <= r["ci95"][1] for r in rows)
    assert any(r["constitution"] for r in rows)
    assert (out / "preferences_shift_sarcasm-adapter.png").stat().st_size > 1000
    assert "| trait | reference | system | shift | 95% CI |" in (out / "report.md").read_text()
    assert elapsed <= LIMIT_S, f"took {elapsed:.0f} s, limit {LIMIT_S} s"
