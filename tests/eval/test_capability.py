"""Capability scoring: summed log-prob (acc) against log-prob per byte (acc_norm), on a hand-made score table and
on smollm2-135m through the hf engine, and the report's capability table."""

import pytest

from character.evaluation import capability
from character.evaluation.systems import Engines, System


def test_per_byte_scoring_picks_the_long_right_option_that_the_sum_passes_over():
    choices = ["No", "Yes, every time it rains"]
    scores = [-3.0, -9.0]  # 1.5 nats a byte for "No", 0.375 for the 24-byte answer
    assert capability.pick(scores, choices) == 0
    assert capability.pick(scores, choices, per_byte=True) == 1


def test_per_byte_counts_utf8_bytes_not_characters():
    # "é" is two bytes: per byte -2.0 / 2 = -1.0 beats "e" at -1.5, though per character it would lose (-2.0)
    assert capability.pick([-2.0, -1.5], ["é", "e"], per_byte=True) == 0
    assert capability.pick([-2.0, -1.5], ["é", "e"]) == 1


# questions of our own where the right option is long and the wrong one short; smollm2-135m gives the short one
# the higher summed log-prob and the long one the higher log-prob per byte (measured: -4.7 vs -8.2 summed for the
# first, -1.17 vs -0.24 per byte)
LONG_RIGHT = [
    {"question": "What do green plants need to make their food?",
     "choices": ["Salt", "Sunlight, water and carbon dioxide"], "answer": 1},
    {"question": "What happens to pure water at 100 degrees Celsius at sea level?",
     "choices": ["It freezes", "It boils and turns into steam"], "answer": 1},
    {"question": "Why do we see lightning before we hear the thunder?",
     "choices": ["Wind", "Light travels much faster than sound"], "answer": 1},
]


@pytest.fixture(scope="module")
def capability_results(smollm2_path):
    from character.engine.base import EngineConfig

    engines = Engines(EngineConfig(model=smollm2_path, backend="hf", dtype="float32"), [])
    try:
        # the same model twice: the second system's paired deltas against the reference must be exactly 0
        systems = [System("base", smollm2_path), System("same", smollm2_path)]
        yield capability.run(engines, systems, LONG_RIGHT, seed=0)
    finally:
        engines.close()


def test_acc_norm_picks_long_right_options_where_acc_picks_short_wrong_ones(capability_results):
    base = capability_results["systems"]["base"]
    assert base["accuracy"] == 0.0 and base["acc_norm"] == 1.0, base
    assert base["ci95"][1] < 0.6 and base["acc_norm_ci95"][0] > 0.4  # Wilson intervals on 3 questions
    same = capability_results["systems"]["same"]
    assert same["delta_vs_reference"] == {"delta": 0.0, "ci95": [0.0, 0.0]}
    assert same["acc_norm_delta_vs_reference"] == {"delta": 0.0, "ci95": [0.0, 0.0]}
    assert "delta_vs_reference" not in base and "acc_norm_delta_vs_reference" not in base


def test_report_shows_acc_and_acc_norm(capability_results, tmp_path):
    from character.evaluation import report

    results = {"suite": "test", "systems": [{"name": "base", "model": "m", "adapter": None}], "seed": 0,
               "config_hash": "x", "capability": capability_results}
    results["plots"] = report.plots(results, tmp_path)
    report.write(results, tmp_path / "report.md")
    text = (tmp_path / "report.md").read_text()
    assert "| acc_norm |" in text
    assert "| base | 0.000 | [0.00, 0.56] | (reference) | | 1.000 | [0.44, 1.00] | (reference) | |" in text
    assert "| same | 0.000 |" in text and "+0.000 | [0.000, 0.000]" in text
    assert "capability.png" in results["plots"] and (tmp_path / "capability.png").stat().st_size > 0
