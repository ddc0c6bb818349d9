"""The statistics behind the preferences report: permutation p-values, the background movement of unmarked
traits, Holm-adjusted flags, and a persona run against a placebo control. Synthetic verdicts, no models."""

from __future__ import annotations

import numpy as np
import pytest

from character.evaluation import preferences

VOCAB = [f"t{i}" for i in range(10)]
MARKED = ["t0", "t1"]


def comparisons(n: int, seed: int = 0) -> list[dict]:
    return preferences.plan(VOCAB, [f"prompt {i}" for i in range(50)], n, seed)


def verdicts(comps, strengths: dict[str, float], rng) -> list[int]:
    """1 when trait_1 is expressed, drawn from a Bradley-Terry model with the given log-strengths."""
    out = []
    for c in comps:
        d = strengths.get(c["trait_1"], 0.0) - strengths.get(c["trait_2"], 0.0)
        out.append(1 if rng.random() < 1 / (1 + np.exp(-d)) else 2)
    return out


def test_a_real_shift_gets_a_small_p_and_noise_does_not():
    rng = np.random.default_rng(0)
    comps = comparisons(400)
    base = verdicts(comps, {}, rng)
    raised = verdicts(comps, {"t0": 1.2, "t1": 1.2}, rng)
    noise = verdicts(comps, {}, rng)
    res = preferences.score(VOCAB, comps, {"base": base, "persona": raised, "placebo": noise}, marked=MARKED,
                            n_boot=100, seed=0, l2=0.1, n_perm=300)
    real, null = res["shifts"]["persona"], res["shifts"]["placebo"]
    assert real["constitution_mean_shift"]["p_value"] < 0.01 and real["constitution_mean_shift"]["ci95"][0] > 0
    assert null["constitution_mean_shift"]["p_value"] > 0.05
    lo, hi = null["constitution_mean_shift"]["ci95"]
    assert lo < 0 < hi
    # the unmarked traits move only by noise, and less than the marked ones moved
    assert 0 < real["unmarked_mean_abs_shift"] < real["constitution_mean_shift"]["shift"]
    # strengths are centred, so raising t0 and t1 lowers every other trait a little: only those two rise
    flagged = {r["trait"] for r in real["rows"] if r["significant"] and r["shift"] > 0}
    assert flagged <= {"t0", "t1"} and flagged
    assert all(r["p_holm"] >= r["p_value"] for r in real["rows"])
    assert not any(r["significant"] for r in null["rows"])
    assert "Holm" in res["significance"]


def test_control_difference_is_paired_when_the_plans_match():
    rng = np.random.default_rng(1)
    comps = comparisons(400)
    base = verdicts(comps, {}, rng)
    sec = lambda trained: preferences.score(VOCAB, comps, {"base": base, "trained": trained},  # noqa: E731
                                            marked=MARKED, n_boot=50, seed=0, l2=0.1, n_perm=0)
    persona = sec(verdicts(comps, {"t0": 1.0, "t1": 1.0}, rng))
    placebo = sec(verdicts(comps, {"t5": 0.5}, rng))
    out = preferences.compare_to_control(persona, placebo, n_boot=200, seed=0, n_perm=200, vocab=VOCAB)
    assert out["paired"] and out["traits"] == MARKED
    assert out["difference"] == pytest.approx(out["shift"] - out["control_shift"], abs=2e-4)
    assert out["ci95"][0] > 0 and out["p_value"] < 0.05
    # the placebo against itself: no difference, the interval covers 0
    same = preferences.compare_to_control(placebo, placebo, n_boot=100, seed=0, n_perm=50, vocab=VOCAB)
    assert same["difference"] == 0 and same["ci95"][0] <= 0 <= same["ci95"][1]
    # another plan (other seed): resampled independently, no permutation p
    other = preferences.score(VOCAB, comparisons(400, seed=9), {"base": base, "trained": base}, marked=MARKED,
                              n_boot=20, seed=0, l2=0.1, n_perm=0)
    indep = preferences.compare_to_control(persona, other, n_boot=100, seed=0, vocab=VOCAB)
    assert indep["paired"] is False and indep["p_value"] is None and indep["ci95"][0] < indep["difference"]
