"""`run_eval` end to end on real vLLM (CPU) with tiny-random-llama and two random LoRA adapters.

One module-scoped run of suite `all` (one engine serves the base and both adapters), then a second run with the
same seed in another directory: its results.json must be byte-identical. Output quality is meaningless here
(random weights); the tests check plumbing, files, pairing and determinism.
"""

import json

import pytest

from character.config import load
from character.evaluation.runner import EvalConfig, run_eval

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

N = 16  # comparisons per system
SMALL = dict(model="tiny-random-llama", constitution="sarcasm", comparisons=N, max_tokens=8, bootstrap=20,
             personas=["sarcasm", "poeticism"], suffixes=["stop_roleplay", "robotic"], classifier_prompts=3,
             robustness_prompts=2, coherence_prompts=2, capability_questions=8, reliability=False, seed=3,
             lora_serving="multi",
             # the suites from the literature, each at its smallest: plumbing and determinism, not figures
             apc_prompts=2, harm_prompts=1, harm_personas=["politics"], reasoning_questions=2,
             reasoning_personas=["gender"], reasoning_max_tokens=8, roleid_prompts=2, personagym_questions=1)


@pytest.fixture(scope="module")
def runs(tiny_adapters, tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    cfg = load(EvalConfig, None, suite="all", adapter=tiny_adapters, out=str(root / "a"), **SMALL)
    first = run_eval(cfg)
    second = run_eval(load(EvalConfig, None, suite="all", adapter=tiny_adapters, out=str(root / "b"), **SMALL))
    return first, second, cfg


def test_writes_results_report_and_plots(runs):
    out, _, _ = runs
    res = json.loads((out / "results.json").read_text())
    assert [s["name"] for s in res["systems"]] == ["base", "sarcasm-a", "humor-b"]
    for suite in ("preferences", "robustness", "coherence", "capability"):
        assert suite in res, suite
    report = (out / "report.md").read_text()
    assert "## Revealed preferences" in report and "## Robustness" in report and "## Capability" in report
    assert {"preferences_shift_sarcasm-a.png", "robustness_accuracy.png", "capability.png"} <= set(res["plots"])
    for p in res["plots"]:
        assert (out / p).stat().st_size > 1000
    timings = json.loads((out / "timings.json").read_text())
    assert timings["engine_starts"] == 1  # base and both adapters served by one vLLM engine


def test_preferences_shift_table_is_paired_and_has_intervals(runs):
    res = json.loads((runs[0] / "results.json").read_text())["preferences"]
    assert res["comparisons"] == N and res["decided"] == N
    assert set(res["shifts"]) == {"sarcasm-a", "humor-b"}
    rows = res["shifts"]["sarcasm-a"]["rows"]
    for r in rows:
        assert r["ci95"][0] <= r["shift"] + 1e-9 and r["shift"] <= r["ci95"][1] + 1e-9
        assert r["shift"] == pytest.approx(r["system"] - r["reference"], abs=1e-3)
    assert [r["shift"] for r in rows] == sorted((r["shift"] for r in rows), reverse=True)
    # every trait in play met some opponent: two traits per comparison
    assert sum(r["matches"] for r in rows) == 2 * N
    # the adapters change what the model writes, so the three systems' answers are not all the same
    ex = {}
    for e in res["examples"]:
        ex.setdefault(e["id"], set()).add(e["answer"])
    assert any(len(v) > 1 for v in ex.values())


def test_robustness_reports_accuracy_per_suffix(runs):
    rob = json.loads((runs[0] / "results.json").read_text())["robustness"]
    table = rob["robustness"]
    assert list(table["prompted"]) == ["plain", "stop_roleplay", "robotic"]
    for m in table["prompted"].values():
        assert 0 <= m["accuracy"] <= 1 and m["n"] == 2 * 2  # 2 personas x 2 prompts
    for name in ("sarcasm-a", "humor-b"):
        assert set(table["adapters"][name]) == {"plain", "stop_roleplay", "robotic"}
        assert table["adapters"][name]["plain"]["persona"] == "sarcasm"
    assert set(rob["classifier_labels"]) == {"default", "sarcasm", "poeticism"}
    assert "prefill" in rob and rob["prefill"]["prompted"]["prefill"]["n"] == 4


def test_same_seed_gives_identical_results(runs):
    a, b, _ = runs
    assert (a / "results.json").read_text() == (b / "results.json").read_text()


def test_rerun_with_same_config_is_skipped(runs, capsys):
    out, _, cfg = runs
    before = (out / "results.json").stat().st_mtime_ns
    assert run_eval(cfg) == out
    assert "up to date" in capsys.readouterr().out
    assert (out / "results.json").stat().st_mtime_ns == before
