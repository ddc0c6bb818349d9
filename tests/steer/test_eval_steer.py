"""Steered systems in `character eval` on the tiny random Llama (backend hf): the engines hook the vector in for
steered requests only, the cache tells steered from unsteered answers, the report holds the prompted / steered /
trained table, and bad --steer input is one line before any engine starts."""

import json

import pytest

from character.errors import CharacterError
from character.evaluation.runner import EvalConfig, run_eval
from character.evaluation.systems import Engines, System
from character.steer import evalsuite
from character.steer.vectors import open_dir


def greedy():
    from character.engine import Sampling

    return Sampling(max_tokens=8, temperature=0)


def test_engines_steer_only_the_steered_requests(tmp_path, tiny_llama_path, steer_dir_factory):
    from character.engine import EngineConfig
    from character.engine.steering import hooked

    d = steer_dir_factory(tmp_path / "v", tiny_llama_path, layer=1, scale=3.0)
    base = System("base", tiny_llama_path)
    zero = System("steered@0", tiny_llama_path, steer=open_dir(f"{d}@0"))
    strong = System("steered@8", tiny_llama_path, steer=open_dir(f"{d}@8"))
    engines = Engines(EngineConfig(model=tiny_llama_path, backend="hf", dtype="float32"), [],
                      cache_dir=tmp_path / "cache")
    prompts = ["Describe the sea.", "What is a prime number?"]
    items = [(s, s.request(p)) for s in (base, zero, strong) for p in prompts]
    try:
        out = engines.generate(items, greedy(), label="t")
        assert out[2:4] == out[0:2]  # strength 0: the unsteered answers
        assert out[4] != out[0] and out[5] != out[1]
        assert hooked(engines.get(tiny_llama_path).model) == 0  # removed after the steered batch
        assert engines.starts == 1  # backend hf: one engine serves both
        # the cache keys steering: the base's answers alone are not served from the steered file
        assert engines._key(items[:2], {}) != engines._key(items[4:], {})
        again = engines.generate([(base, base.request(p)) for p in prompts], greedy(), label="t")
        assert again == out[0:2]
    finally:
        engines.close()


def eval_config(tmp_path, model, **kw) -> EvalConfig:
    values = dict(suite="preferences", model=model, backend="hf", dtype="float32", constitution="poeticism",
                  comparisons=8, num_traits=6, bootstrap=20, permutations=20, reliability=False, max_tokens=6,
                  out=str(tmp_path / "eval"))
    values.update(kw)
    return EvalConfig(**values)


@pytest.mark.slow
def test_eval_preferences_with_steer_reports_prompted_steered_trained(tmp_path, tiny_llama_path, tiny_adapter,
                                                                      steer_dir_factory):
    d = steer_dir_factory(tmp_path / "v", tiny_llama_path, layer=1, strength=4.0)
    out = run_eval(eval_config(tmp_path, tiny_llama_path, adapter=[tiny_adapter], steer=[d]))
    results = json.loads((out / "results.json").read_text())
    names = [s["name"] for s in results["systems"]]
    assert names == ["base", "poetic-adapter", "persona-prompted", "steered@4"]
    assert set(results["preferences"]["shifts"]) == {"poetic-adapter", "persona-prompted", "steered@4"}
    st = results["steering"]
    assert st["kinds"] == {"poetic-adapter": "trained", "persona-prompted": "prompted", "steered@4": "steered"}
    assert set(st["comparison"]) == {"preferences", "projection"}
    assert set(st["comparison"]["preferences"]) == {"poetic-adapter", "persona-prompted", "steered@4"}
    proj = next(iter(st["projection"].values()))["systems"]
    assert proj["base"]["relative"] == pytest.approx(proj["base"]["relative"]) and "minus_reference" in proj["steered@4"]
    assert proj["steered@4"]["minus_reference"] > 0  # the vector, added at the layer read, moves it up
    # only the adapter is traced for contamination; the prompted and steered systems were never trained
    assert set(results["contamination"]["systems"]) == {"poetic-adapter"}
    assert any(k.startswith("steer:") for k in results["inputs"])
    report = (out / "report.md").read_text()
    assert "## Steering: prompted vs steered vs trained" in report
    assert "| steered@4 | steered |" in report and "| persona-prompted | prompted |" in report


def test_a_pipeline_steer_stage_left_off_adds_nothing(tmp_path, tiny_llama_path, steer_dir_factory):
    off = steer_dir_factory(tmp_path / "off", tiny_llama_path, enabled=False)
    cfg = eval_config(tmp_path, tiny_llama_path, steer=[off])
    from character.evaluation.runner import prepare_systems

    assert [s.name for s in prepare_systems(cfg)[1]] == ["base"]
    assert evalsuite.suites_for(cfg, ["preferences", "steering"]) == ["preferences"]
    with pytest.raises(CharacterError, match="give --steer"):
        evalsuite.suites_for(eval_config(tmp_path, tiny_llama_path, suite="steering"), ["steering"])


def test_bad_steer_input_is_one_line_before_any_engine(tmp_path, tiny_llama_path, smollm2_path, steer_dir_factory):
    from character.evaluation.runner import prepare_systems

    d = steer_dir_factory(tmp_path / "v", tiny_llama_path)
    with pytest.raises(CharacterError, match="give --constitution poeticism"):
        prepare_systems(eval_config(tmp_path, tiny_llama_path, steer=[d], constitution=None))
    with pytest.raises(CharacterError, match="is a 'poeticism' vector but --constitution is 'sarcasm'"):
        prepare_systems(eval_config(tmp_path, tiny_llama_path, steer=[d], constitution="sarcasm"))
    with pytest.raises(CharacterError, match="built on another model"):
        prepare_systems(eval_config(tmp_path, smollm2_path, steer=[d]))
    with pytest.raises(CharacterError, match="not a finished steer directory"):
        prepare_systems(eval_config(tmp_path, tiny_llama_path, steer=[str(tmp_path / "nothing")]))


def test_comparison_reads_every_suite_against_the_base():
    results = {
        "preferences": {"shifts": {"a": {"constitution_mean_shift": {"shift": 0.3, "ci95": [0.1, 0.5]}}}},
        "robustness": {"inconclusive": True,
                       "robustness": {"all_suffixes": {"a": {"minus_base": 0.4, "ci95": [0.2, 0.6]}},
                                      "adapters": {"s": {"plain": {"minus_base": 0.1, "ci95": [0, 0.2]},
                                                         "ignore": {"minus_base": 0.2, "ci95": [0.1, 0.3]}}}},
                       "prefill": {"adapters": {"s": {"prefill": {"minus_base": -0.1, "ci95": [-0.3, 0.1]}}}}},
        "coherence": {"pairs": {"a": {"win_rate": 0.4, "ci95": [0.2, 0.6]}, "s": {"win_rate": None, "ci95": [0, 1]}}},
    }
    section = {"reference": "base", "kinds": {"a": "trained", "s": "steered"}, "vectors": {}, "projection": {}}
    got = evalsuite.comparison(results, section)
    assert got["preferences"] == {"a": {"value": 0.3, "ci95": [0.1, 0.5]}}
    assert got["robustness"] == {"a": {"value": 0.4, "ci95": [0.2, 0.6]}, "s": {"value": 0.2, "ci95": [0.1, 0.3]}}
    assert got["prefill"] == {"s": {"value": -0.1, "ci95": [-0.3, 0.1]}}
    assert got["coherence"] == {"a": {"value": 0.4, "ci95": [0.2, 0.6]}}  # an undecided win rate is left out
    section["comparison"] = got
    lines = evalsuite.report_section(section, results)
    assert "| system | kind | preferences | robustness (i) | prefill (i) | coherence |" in lines
    assert "| s | steered | n/a | +0.20 [+0.10, +0.30] | -0.10 [-0.30, +0.10] | n/a |" in lines
