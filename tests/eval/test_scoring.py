"""Bradley-Terry, bootstrap, Elo, rank correlation and Wilson intervals on synthetic matches with known truth."""

import numpy as np
import pytest

from character.evaluation import scoring


def simulate(strengths, n, rng):
    k = len(strengths)
    games = []
    for _ in range(n):
        i, j = rng.choice(k, 2, replace=False)
        p = 1 / (1 + np.exp(-(strengths[i] - strengths[j])))
        games.append((i, j) if rng.random() < p else (j, i))
    return games


def test_bradley_terry_recovers_known_strengths():
    rng = np.random.default_rng(1)
    true = np.array([-1.5, -0.5, 0.0, 0.5, 1.5, 2.0])
    fit = scoring.bradley_terry(simulate(true, 4000, rng), len(true), l2=0.001)
    assert abs(fit.mean()) < 1e-9
    assert np.max(np.abs(fit - (true - true.mean()))) < 0.25
    assert scoring.spearman(fit, true) == pytest.approx(1.0)


def test_prior_keeps_undefeated_trait_finite_and_unseen_at_zero():
    fit = scoring.bradley_terry([(0, 1), (0, 2), (0, 1)], 4, l2=0.1)
    assert np.all(np.isfinite(fit)) and fit[0] == fit.max()
    # item 3 never played: it sits between the winner and the losers, and the unpenalised fit would diverge
    assert fit[0] > fit[3] > fit[1]
    assert fit[0] - fit[1] < 10


def test_bt_is_order_invariant_but_elo_is_not():
    rng = np.random.default_rng(2)
    games = simulate(np.linspace(-1, 1, 8), 300, rng)
    shuffled = [games[i] for i in rng.permutation(len(games))]
    assert np.allclose(scoring.bradley_terry(games, 8), scoring.bradley_terry(shuffled, 8))
    assert not np.allclose(scoring.elo(games, 8), scoring.elo(shuffled, 8))
    assert scoring.elo_order_spread(games, 8) > 1.0


def play(s, pairs, rng):
    """Outcomes (1: the first trait of the pair won, 2: the second) of comparisons under strengths s."""
    return [1 if rng.random() < 1 / (1 + np.exp(-(s[i] - s[j]))) else 2 for i, j in pairs]


def test_paired_bootstrap_interval_finds_the_shifted_trait():
    rng = np.random.default_rng(3)
    base = np.zeros(6)
    trained = base.copy()
    trained[2] = 2.0  # training raised trait 2 only
    pairs = [tuple(rng.choice(6, 2, replace=False)) for _ in range(600)]

    point, samples = scoring.bootstrap_bt(pairs, [play(base, pairs, rng), play(trained, pairs, rng)], 6,
                                          n_boot=100, seed=0, l2=0.01)
    lo, hi = scoring.interval(samples[:, 1] - samples[:, 0])
    shift = point[1] - point[0]
    assert shift[2] == shift.max() and lo[2] > 0
    # strengths are centred, so raising trait 2 lowers the others a little; their intervals still reach 0
    assert all(lo[i] < 0 < hi[i] or hi[i] < 0 for i in (0, 1, 3, 4, 5))
    assert all(lo[i] <= shift[i] <= hi[i] for i in range(6))


def test_wilson_and_spearman_and_mean_diff():
    lo, hi = scoring.wilson(0, 10)
    assert lo == 0 and 0.2 < hi < 0.35
    lo, hi = scoring.wilson(50, 100)
    assert lo < 0.5 < hi and hi - lo < 0.21
    assert scoring.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1)
    assert scoring.spearman([1, 1, 1], [1, 2, 3]) != scoring.spearman([1, 1, 1], [1, 2, 3])  # nan
    d, lo, hi = scoring.bootstrap_mean_diff([0, 0, 0, 0] * 10, [1, 1, 0, 1] * 10)
    assert d == pytest.approx(0.75) and lo <= d <= hi


def test_items_without_matches_do_not_change_the_fit():
    # the fit solves only for the items that play; the full problem's optimum puts the others at exactly 0
    rng = np.random.default_rng(1)
    games = simulate(np.array([0.5, -0.5, 1.0, 0.0]), 300, rng)
    small = scoring.bradley_terry(games, 4, l2=0.1)
    big = scoring.bradley_terry(games, 40, l2=0.1)
    assert np.allclose(big[4:], big[4]) and np.allclose(small - small.mean(), big[:4] - big[:4].mean())


def test_bootstrap_skips_undecided_outcomes():
    pairs = [(0, 1)] * 30
    point, _ = scoring.bootstrap_bt(pairs, [[1] * 30, [None] * 15 + [1] * 15], 2, n_boot=5)
    assert point[0, 0] > point[1, 0] > 0  # 15 wins move strength less than 30 under the same prior


def test_permutation_test_separates_a_real_shift_from_noise():
    rng = np.random.default_rng(5)
    pairs = [tuple(int(x) for x in rng.choice(6, 2, replace=False)) for _ in range(300)]
    raised = np.zeros(6)
    raised[2] = 1.5
    base = play(np.zeros(6), pairs, rng)
    stats = lambda d: np.array([d[2], d[[2, 3]].mean()])  # noqa: E731
    p_real, null = scoring.permutation_shift_test(pairs, base, play(raised, pairs, rng), 6, stats, n_perm=300)
    p_noise, _ = scoring.permutation_shift_test(pairs, base, play(np.zeros(6), pairs, rng), 6, stats, n_perm=300)
    assert null.shape == (300, 2)
    assert p_real[0] < 0.01 and p_noise[0] > 0.05
    # identical systems: every permutation is as extreme as the observed 0, so p is 1
    p_same, _ = scoring.permutation_shift_test(pairs, base, base, 6, stats, n_perm=50)
    assert np.allclose(p_same, 1.0)


def test_holm_adjustment():
    # by hand: sorted 0.01, 0.02, 0.04 -> 0.03, 0.04 (2 x 0.02), 0.04 (max with 1 x 0.04)
    assert scoring.holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert scoring.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
