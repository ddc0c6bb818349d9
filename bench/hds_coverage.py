"""How often the HDS interval of `character eval harm` holds the true HDS: percentile against basic bootstrap.

    .venv/bin/python bench/hds_coverage.py            # JSON on the last line

HDS is the variance of a metric's pass rate across personas. Its interval resamples items, and each resample adds
sampling noise to every persona's pass rate, so the resampled variances sit above the estimate: the percentile
interval then lies above the truth. Simulated personas with known pass rates (17 personas, as the shipped list,
a no-persona row) show how often each interval covers the true variance, for several item counts and spreads.
"""

from __future__ import annotations

import argparse
import json


def coverage(n_items: int, spread: float, trials: int, n_boot: int, seed: int) -> dict:
    import numpy as np

    from character.evaluation.harm import _bootstrap_hds, hds
    from character.evaluation.scoring import basic_interval, interval

    rng = np.random.default_rng(seed)
    hits = {"percentile": 0, "basic": 0}
    for t in range(trials):
        rates = np.clip(0.7 + spread * rng.standard_normal(17), 0.02, 0.98)
        truth = float(np.var(rates))
        table = (rng.random((18, n_items)) < np.r_[0.8, rates][:, None]).astype(float)
        boot = _bootstrap_hds({"host": {"metric": table}}, n_boot, seed + t)["host"]["metric"]
        estimate = hds(table[1:].mean(axis=1))
        lo, hi = interval(boot)
        hits["percentile"] += lo <= truth <= hi
        lo, hi = basic_interval(estimate, boot, floor=0.0)
        hits["basic"] += lo <= truth <= hi
    return {"items": n_items, "spread": spread, **{k: v / trials for k, v in hits.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=150)
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rows = [coverage(n, s, args.trials, args.bootstrap, args.seed)
            for n, s in ((4, 0.15), (12, 0.15), (40, 0.10), (12, 0.0))]
    for r in rows:
        print(f"{r['items']:3d} items, spread {r['spread']:.2f}: percentile {r['percentile']:.2f}, "
              f"basic {r['basic']:.2f} (target 0.95)")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
