"""Statistics for the evaluations: Bradley-Terry strengths, bootstrap intervals, online Elo, rank correlation,
Wilson intervals.

Pure numpy, imported inside each function so importing this module costs nothing. A match is a pair of integer
item ids (winner, loser). Bradley-Terry is fitted by penalised maximum likelihood (Newton's method): with a few
hundred matches over ~150 traits some traits only ever win or lose, and their unpenalised strength runs off to
infinity; a weak Gaussian prior (`l2`) keeps every strength finite and pulls unseen traits to 0. Strengths are
centred (mean 0) because only differences are identified.

Quick check:  python -m character.evaluation.scoring
"""

from __future__ import annotations

from collections.abc import Sequence

Match = tuple[int, int]  # (winner, loser)


def bradley_terry(matches: Sequence[Match], n_items: int, l2: float = 0.1, iters: int = 50):
    """Log-strengths s (numpy array, mean 0) maximising sum log sigmoid(s_w - s_l) - l2/2 |s|^2.

    Only the items that play are solved for: an item with no match has gradient -l2 * s and no coupling to the
    others, so its optimum is exactly 0, and the smaller system is much faster (the permutation test fits
    thousands of times)."""
    import numpy as np

    s = np.zeros(n_items)
    if not len(matches):
        return s
    m = np.asarray(matches, dtype=int)
    played, local = np.unique(m, return_inverse=True)
    local = local.reshape(m.shape)
    w, lo = local[:, 0], local[:, 1]
    k = len(played)
    t = np.zeros(k)
    eye = np.eye(k)
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(t[w] - t[lo])))  # P(winner beats loser)
        r = 1.0 - p
        grad = -l2 * t + np.bincount(w, r, k) - np.bincount(lo, r, k)
        # Hessian of the negative log-posterior: graph Laplacian weighted by p(1-p), plus the prior
        c = p * (1.0 - p)
        h = l2 * eye
        h[np.diag_indices(k)] += np.bincount(w, c, k) + np.bincount(lo, c, k)
        np.subtract.at(h, (w, lo), c)
        np.subtract.at(h, (lo, w), c)
        step = np.linalg.solve(h, grad)
        t = t + step
        if np.max(np.abs(step)) < 1e-9:
            break
    s[played] = t
    return s - s.mean()


def outcome_matches(pairs, outcomes, idx=None) -> list[Match]:
    """Matches of one system: `pairs[i]` = (trait_1 id, trait_2 id) of comparison i, `outcomes[i]` 1 (trait_1
    expressed), 2, or None (undecided: no match). `idx` picks (and may repeat) comparisons, as a bootstrap does."""
    seq = range(len(pairs)) if idx is None else idx
    out = []
    for i in seq:
        o = outcomes[i]
        if o is not None:
            a, b = pairs[i]
            out.append((a, b) if o == 1 else (b, a))
    return out


def bootstrap_bt(pairs, outcome_sets, n_items: int, n_boot: int = 200, seed: int = 0, l2: float = 0.1):
    """Bradley-Terry strengths of several systems with a paired bootstrap.

    All systems saw the same comparisons (`pairs`: same prompt, same trait pair) and `outcome_sets[k][i]` is system
    k's verdict on comparison i (1, 2 or None); each resample draws the same comparison indices for every system,
    so shifts between systems get intervals that account for the pairing. Returns (point, samples) with point of
    shape (K, n_items) and samples of shape (n_boot, K, n_items).
    """
    import numpy as np

    n = len(pairs)
    assert all(len(o) == n for o in outcome_sets), "paired bootstrap needs the same comparisons for every system"
    point = np.stack([bradley_terry(outcome_matches(pairs, o), n_items, l2) for o in outcome_sets])
    rng = np.random.default_rng(seed)
    samples = np.empty((n_boot, len(outcome_sets), n_items))
    for b in range(n_boot):
        idx = rng.integers(0, n, n)
        for k, o in enumerate(outcome_sets):
            samples[b, k] = bradley_terry(outcome_matches(pairs, o, idx), n_items, l2)
    return point, samples


def permutation_shift_test(pairs, ref, sys, n_items: int, statistics, n_perm: int = 1000, seed: int = 0,
                           l2: float = 0.1):
    """Paired permutation test of a shift between two systems that judged the same comparisons.

    Under the null (the system changed nothing) which of the two produced each comparison's outcome is arbitrary,
    so each permutation swaps the two systems' outcomes within a random half of the comparisons and refits both.
    `statistics(shift_vector) -> numpy array` gives the statistics to test (e.g. the marked traits' mean shift and
    every trait's shift). Returns the two-sided p-values (1 + #{|null| >= |observed|}) / (1 + n_perm), one per
    statistic, and the null draws (n_perm, n_stats).
    """
    import numpy as np

    def shift(a, b):
        return bradley_terry(outcome_matches(pairs, b), n_items, l2) - bradley_terry(outcome_matches(pairs, a),
                                                                                    n_items, l2)

    observed = np.asarray(statistics(shift(ref, sys)), dtype=float)
    rng = np.random.default_rng(seed)
    null = np.empty((n_perm, observed.size))
    ref, sys = list(ref), list(sys)
    for b in range(n_perm):
        swap = rng.random(len(pairs)) < 0.5
        a = [s if w else r for r, s, w in zip(ref, sys, swap)]
        c = [r if w else s for r, s, w in zip(ref, sys, swap)]
        null[b] = statistics(shift(a, c))
    exceed = (np.abs(null) >= np.abs(observed) - 1e-12).sum(axis=0)
    return (1.0 + exceed) / (1.0 + n_perm), null


def holm(p_values) -> list[float]:
    """Holm-Bonferroni adjusted p-values (family-wise error control over all the tests given)."""
    import numpy as np

    p = np.asarray(p_values, dtype=float)
    m = len(p)
    order = np.argsort(p)
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return [float(x) for x in adjusted]


def interval(samples, level: float = 0.95, axis: int = 0):
    """Percentile interval (low, high) of bootstrap samples along `axis`."""
    import numpy as np

    a = (1.0 - level) / 2.0
    return np.quantile(samples, a, axis=axis), np.quantile(samples, 1.0 - a, axis=axis)


def basic_interval(estimate: float, samples, level: float = 0.95, floor: float | None = None) -> tuple[float, float]:
    """Basic (reverse-percentile) bootstrap interval: (2 estimate - q_high, 2 estimate - q_low), cut at `floor`.

    For a statistic the resampling itself biases, such as a variance across groups whose members are resampled
    (each resample adds its own sampling noise to every group mean, so the bootstrap distribution sits above the
    estimate), the percentile interval can miss the estimate altogether; the basic interval reflects that bias
    back. `bench/hds_coverage.py` measures the coverage of both on simulated pass rates.
    """
    lo, hi = interval(samples, level)
    lo, hi = 2 * estimate - float(hi), 2 * estimate - float(lo)
    if floor is not None:
        lo, hi = max(lo, floor), max(hi, floor)
    return lo, hi


def elo(matches: Sequence[Match], n_items: int, k: float = 32.0, start: float = 1000.0, order=None):
    """Online Elo ratings, the original's method: the result depends on the order the matches are played in."""
    import numpy as np

    r = np.full(n_items, float(start))
    seq = range(len(matches)) if order is None else order
    for i in seq:
        w, lo = matches[i]
        expected = 1.0 / (1.0 + 10 ** ((r[lo] - r[w]) / 400.0))
        r[w] += k * (1.0 - expected)
        r[lo] -= k * (1.0 - expected)
    return r


def elo_order_spread(matches: Sequence[Match], n_items: int, n_orders: int = 20, seed: int = 0) -> float:
    """Mean over items of the standard deviation of Elo across random match orders: how much order alone moves it."""
    import numpy as np

    if not len(matches):
        return 0.0
    rng = np.random.default_rng(seed)
    runs = np.stack([elo(matches, n_items, order=rng.permutation(len(matches))) for _ in range(n_orders)])
    return float(runs.std(axis=0).mean())


def ranks(x):
    """Ranks 1..n with ties averaged."""
    import numpy as np

    x = np.asarray(x, dtype=float)
    order = np.argsort(x, kind="mergesort")
    r = np.empty(len(x))
    r[order] = np.arange(1, len(x) + 1)
    for v in np.unique(x):
        tie = x == v
        if tie.sum() > 1:
            r[tie] = r[tie].mean()
    return r


def spearman(a, b) -> float:
    """Spearman rank correlation (Pearson correlation of the ranks); nan when either side is constant."""
    import numpy as np

    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score 95% interval of a proportion (sensible at 0, 1 and small n)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def bootstrap_mean_diff(a: Sequence[float], b: Sequence[float], n_boot: int = 1000, seed: int = 0):
    """Paired difference mean(b - a) with a percentile bootstrap 95% interval: (diff, low, high)."""
    import numpy as np

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    d = b - a
    if not len(d):
        return 0.0, 0.0, 0.0
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), (n_boot, len(d)))].mean(axis=1)
    lo, hi = interval(means)
    return float(d.mean()), float(lo), float(hi)


if __name__ == "__main__":
    import numpy as np

    rng = np.random.default_rng(0)
    true = rng.normal(0, 1, 10)
    games = []
    for _ in range(3000):
        i, j = rng.choice(10, 2, replace=False)
        win = rng.random() < 1 / (1 + np.exp(-(true[i] - true[j])))
        games.append((i, j) if win else (j, i))
    est = bradley_terry(games, 10, l2=0.01)
    print("true  ", np.round(true - true.mean(), 2))
    print("fitted", np.round(est, 2))
    print("spearman", spearman(true, est))
