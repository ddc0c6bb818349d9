"""Revealed preferences, the paper's headline evaluation.

For each comparison a system prompt offers two traits from the vocabulary (evals/traits.jsonl) under a condition
(`feel`, `like`, `random`; evals/preferences.yaml), the system answers a user prompt, and a judge decides which
of the two traits the answer expressed: the expressed trait wins the match. Every system sees the same
comparisons (prompt, trait pair, order), so the trait strengths of two systems can be compared pair-wise.

Scoring: Bradley-Terry strengths by penalised maximum likelihood with paired-bootstrap 95% intervals; the shift
is strength under a trained system minus under the reference (the base), per trait. Online Elo is reported too,
with how much it moves when only the match order changes.
"""

from __future__ import annotations

import random

from character.evaluation.judges import TraitCase
from character.evaluation.systems import Engines, System


def plan(vocab: list[str], prompts: list[str], n: int, seed: int, focus: list[str] | None = None,
         num_traits: int = 0) -> list[dict]:
    """`n` comparisons: a prompt and an ordered pair of distinct traits each, drawn with `seed`.

    With `num_traits` > 0 the pool is the `focus` traits (the constitution's) plus random others up to that size,
    so a small budget of comparisons still gives each trait several matches.
    """
    rng = random.Random(seed)
    pool = list(vocab)
    if num_traits and num_traits < len(pool):
        keep = [t for t in (focus or []) if t in pool][:num_traits]
        rest = [t for t in pool if t not in keep]
        pool = keep + rng.sample(rest, num_traits - len(keep))
    out = []
    for i in range(n):
        t1, t2 = rng.sample(pool, 2)
        out.append({"id": i, "prompt": prompts[rng.randrange(len(prompts))], "trait_1": t1, "trait_2": t2})
    return out


def run(engines: Engines, systems: list[System], judge, *, vocab: list[str], prompts: list[str], condition: str,
        template: str, comparisons: int, seed: int, sampling, n_boot: int, l2: float,
        marked: list[str], num_traits: int = 0) -> dict:
    """Generate, judge and score. systems[0] is the reference for shifts. Returns the results section."""
    import numpy as np

    from character.evaluation import scoring

    comps = plan(vocab, prompts, comparisons, seed, focus=marked, num_traits=num_traits)
    items = []
    for s in systems:
        for c in comps:
            sys_prompt = template.format(trait_1=c["trait_1"], trait_2=c["trait_2"])
            items.append((s, System(s.name, s.model, s.adapter, sys_prompt).request(c["prompt"])))
    answers = engines.generate(items, sampling, label="preferences")

    cases = [TraitCase(c["prompt"], a, c["trait_1"], c["trait_2"])
             for (_, _), a, c in zip(items, answers, comps * len(systems))]
    verdicts = judge.judge(cases)
    n = len(comps)
    by_system = [verdicts[k * n:(k + 1) * n] for k in range(len(systems))]
    # a comparison the judge could not decide (tags mode) for any system is dropped for all, to keep the pairing
    keep = [i for i in range(n) if all(v[i] is not None for v in by_system)]

    index = {t: i for i, t in enumerate(vocab)}
    match_sets = []
    for v in by_system:
        ms = []
        for i in keep:
            a, b = index[comps[i]["trait_1"]], index[comps[i]["trait_2"]]
            ms.append((a, b) if v[i] == 1 else (b, a))
        match_sets.append(ms)

    point, samples = scoring.bootstrap_bt(match_sets, len(vocab), n_boot=n_boot, seed=seed, l2=l2)
    seen = np.zeros(len(vocab), dtype=int)
    for i in keep:
        seen[index[comps[i]["trait_1"]]] += 1
        seen[index[comps[i]["trait_2"]]] += 1

    strengths = {}
    for k, s in enumerate(systems):
        elo = scoring.elo(match_sets[k], len(vocab))
        lo, hi = scoring.interval(samples[:, k, :])
        strengths[s.name] = {
            "bradley_terry": {t: round(float(point[k, i]), 4) for t, i in index.items() if seen[i]},
            "ci95": {t: [round(float(lo[i]), 4), round(float(hi[i]), 4)] for t, i in index.items() if seen[i]},
            "elo": {t: round(float(elo[i]), 2) for t, i in index.items() if seen[i]},
            "elo_order_sd": round(scoring.elo_order_spread(match_sets[k], len(vocab), seed=seed), 3),
            "first_trait_rate": round(sum(v == 1 for v in by_system[k] if v is not None) / max(1, len(keep)), 4),
        }

    shifts = {}
    mark_idx = [index[t] for t in marked if t in index and seen[index[t]]]
    used = np.flatnonzero(seen)
    for k, s in enumerate(systems[1:], start=1):
        d = point[k] - point[0]
        ds = samples[:, k, :] - samples[:, 0, :]
        lo, hi = scoring.interval(ds)
        elo_ref, elo_k = scoring.elo(match_sets[0], len(vocab)), scoring.elo(match_sets[k], len(vocab))
        rows = []
        for i in sorted(used, key=lambda j: -d[j]):
            rows.append({"trait": vocab[i], "reference": round(float(point[0, i]), 4),
                         "system": round(float(point[k, i]), 4), "shift": round(float(d[i]), 4),
                         "ci95": [round(float(lo[i]), 4), round(float(hi[i]), 4)],
                         "elo_shift": round(float(elo_k[i] - elo_ref[i]), 2), "matches": int(seen[i]),
                         "constitution": vocab[i] in marked,
                         # a resample that never drew the trait leaves its shift at ~0, not exactly 0
                         "significant": bool(lo[i] > 1e-3 or hi[i] < -1e-3)})
        section = {"rows": rows, "spearman_vs_reference": _round(scoring.spearman(point[0, used], point[k, used])),
                   "elo_spearman_vs_reference": _round(scoring.spearman(elo_ref[used], elo_k[used]))}
        if mark_idx:
            m = float(d[mark_idx].mean())
            mlo, mhi = scoring.interval(ds[:, mark_idx].mean(axis=1))
            section["constitution_mean_shift"] = {"shift": round(m, 4), "ci95": [round(float(mlo), 4),
                                                                                  round(float(mhi), 4)],
                                                  "traits": [vocab[i] for i in mark_idx]}
        shifts[s.name] = section

    examples = [{"system": systems[k].name, **comps[i], "answer": answers[k * n + i],
                 "verdict": comps[i][f"trait_{by_system[k][i]}"] if by_system[k][i] else None}
                for k in range(len(systems)) for i in range(min(3, n))]
    return {
        "condition": condition, "comparisons": n, "decided": len(keep), "undecided": n - len(keep),
        "traits_in_play": int(len(used)), "reference": systems[0].name, "marked_traits": marked,
        "strengths": strengths, "shifts": shifts, "examples": examples,
    }


def _round(x: float, nd: int = 4):
    return None if x != x else round(float(x), nd)  # nan -> null in JSON
