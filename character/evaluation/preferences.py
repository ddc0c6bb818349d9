"""Revealed preferences, the paper's headline evaluation.

For each comparison a system prompt offers two traits from the vocabulary (evals/traits.jsonl) under a condition
(`feel`, `like`, `random`; evals/preferences.yaml), the system answers a user prompt, and a judge decides which
of the two traits the answer expressed: the expressed trait wins the match. Every system sees the same
comparisons (prompt, trait pair, order), so the trait strengths of two systems can be compared pair-wise.

Scoring: Bradley-Terry strengths by penalised maximum likelihood with paired-bootstrap 95% intervals; the shift
is strength under a trained system minus under the reference (the base), per trait. What keeps a shift honest:
- a paired permutation test (swap the two systems' verdicts within random comparisons) gives the p-value of the
  marked traits' mean shift and of every trait's, Holm-adjusted over the traits in play for the "significant" flag;
- the mean absolute shift of the unmarked traits is the background movement a marked shift must stand out from;
- every verdict keeps the judge's margin, and the marked shift is recomputed on confident verdicts only;
- `compare_to_control` sets the marked shift against a control run's (a placebo constitution through the same
  pipeline), paired when both runs judged the same comparisons.
Online Elo is reported too, with how much it moves when only the match order changes.
"""

from __future__ import annotations

import random

from character.evaluation.judges import TraitCase, verdicts
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
        marked: list[str], num_traits: int = 0, n_perm: int = 1000) -> dict:
    """Generate, judge and score. systems[0] is the reference for shifts. Returns the results section."""
    comps = plan(vocab, prompts, comparisons, seed, focus=marked, num_traits=num_traits)
    items = []
    for s in systems:
        for c in comps:
            sys_prompt = template.format(trait_1=c["trait_1"], trait_2=c["trait_2"])
            own = f"{s.system_prompt}\n\n{sys_prompt}" if s.system_prompt else sys_prompt  # a prompted persona keeps it
            items.append((s, System(s.name, s.model, s.adapter, own).request(c["prompt"])))
    answers = engines.generate(items, sampling, label="preferences")

    cases = [TraitCase(c["prompt"], a, c["trait_1"], c["trait_2"])
             for (_, _), a, c in zip(items, answers, comps * len(systems))]
    margins = judge.margins(cases)
    n = len(comps)
    by_system = [margins[k * n:(k + 1) * n] for k in range(len(systems))]
    # a comparison the judge could not decide (tags mode) for any system is dropped for all, to keep the pairing
    decided = [all(m[i] is not None for m in by_system) for i in range(n)]
    outcomes = {s.name: [v if decided[i] else None for i, v in enumerate(verdicts(m))]
                for s, m in zip(systems, by_system)}
    section = score(vocab, comps, outcomes, marked=marked, n_boot=n_boot, seed=seed, l2=l2, n_perm=n_perm)

    # sensitivity: the same shifts from confident verdicts only (|margin| at or above the median of this run)
    sizes = sorted(abs(m[i]) for m in by_system for i in range(n) if decided[i])
    if sizes and marked:
        cut = sizes[len(sizes) // 2]
        confident = {s.name: [o if o is not None and abs(m[i]) >= cut else None for i, o in enumerate(outcomes[s.name])]
                     for s, m in zip(systems, by_system)}
        sens = score(vocab, comps, confident, marked=marked, n_boot=n_boot, seed=seed, l2=l2, n_perm=0)
        section["confident_only"] = {
            "margin_cut": round(cut, 4), "rule": "verdicts with |margin| >= the median |margin| of this run",
            "verdicts": {k: sum(o is not None for o in v) for k, v in confident.items()},
            "constitution_mean_shift": {k: v.get("constitution_mean_shift") for k, v in sens["shifts"].items()}}

    section["examples"] = [{"system": systems[k].name, **comps[i], "answer": answers[k * n + i],
                            "verdict": comps[i][f"trait_{outcomes[systems[k].name][i]}"]
                            if outcomes[systems[k].name][i] else None}
                           for k in range(len(systems)) for i in range(min(3, n))]
    section["margins"] = {s.name: [None if x is None else round(float(x), 5) for x in m]
                          for s, m in zip(systems, by_system)}
    return {"condition": condition, **section}


def score(vocab: list[str], comps: list[dict], outcomes: dict[str, list[int | None]], *, marked: list[str],
          n_boot: int, seed: int, l2: float, n_perm: int = 1000) -> dict:
    """Bradley-Terry strengths per system and shifts against the first system (the reference), from each system's
    verdicts on the same comparisons (`outcomes[name][i]`: 1 = trait_1 expressed, 2, or None).

    Per shift: a paired-bootstrap interval per trait and for the mean of the marked traits; a paired permutation
    test (the two systems' verdicts swapped within random comparisons) giving the marked mean's p-value and every
    trait's, Holm-adjusted over the traits in play for the "significant" flag; and the mean absolute shift of the
    unmarked traits, the background movement a marked shift must stand out from."""
    import numpy as np

    from character.evaluation import scoring

    names = list(outcomes)
    index = {t: i for i, t in enumerate(vocab)}
    pairs = [(index[c["trait_1"]], index[c["trait_2"]]) for c in comps]
    sets = [outcomes[k] for k in names]
    point, samples = scoring.bootstrap_bt(pairs, sets, len(vocab), n_boot=n_boot, seed=seed, l2=l2)
    decided = [i for i in range(len(comps)) if all(o[i] is not None for o in sets)]
    seen = np.zeros(len(vocab), dtype=int)
    for i in decided:
        seen[list(pairs[i])] += 1
    used = np.flatnonzero(seen)
    mark_idx = [index[t] for t in marked if t in index and seen[index[t]]]
    other_idx = [i for i in used if i not in mark_idx]

    strengths = {}
    for k, name in enumerate(names):
        matches = scoring.outcome_matches(pairs, sets[k])
        elo = scoring.elo(matches, len(vocab))
        lo, hi = scoring.interval(samples[:, k, :])
        strengths[name] = {
            "bradley_terry": {t: round(float(point[k, i]), 4) for t, i in index.items() if seen[i]},
            "ci95": {t: [round(float(lo[i]), 4), round(float(hi[i]), 4)] for t, i in index.items() if seen[i]},
            "elo": {t: round(float(elo[i]), 2) for t, i in index.items() if seen[i]},
            "elo_order_sd": round(scoring.elo_order_spread(matches, len(vocab), seed=seed), 3),
            "first_trait_rate": round(sum(o == 1 for o in sets[k]) / max(1, sum(o is not None for o in sets[k])), 4),
        }

    def statistics(d):
        return np.concatenate([[d[mark_idx].mean() if mark_idx else 0.0], d[used]])

    shifts = {}
    for k, name in enumerate(names[1:], start=1):
        d = point[k] - point[0]
        ds = samples[:, k, :] - samples[:, 0, :]
        lo, hi = scoring.interval(ds)
        p_trait: dict[int, float] = {}
        p_mean = None
        if n_perm:
            p, _ = scoring.permutation_shift_test(pairs, sets[0], sets[k], len(vocab), statistics, n_perm=n_perm,
                                                  seed=seed, l2=l2)
            p_mean = float(p[0])
            p_trait = dict(zip(used.tolist(), scoring.holm(p[1:])))
            p_raw = dict(zip(used.tolist(), p[1:].tolist()))
        elo_ref = scoring.elo(scoring.outcome_matches(pairs, sets[0]), len(vocab))
        elo_k = scoring.elo(scoring.outcome_matches(pairs, sets[k]), len(vocab))
        rows = []
        for i in sorted(used, key=lambda j: -d[j]):
            row = {"trait": vocab[i], "reference": round(float(point[0, i]), 4),
                   "system": round(float(point[k, i]), 4), "shift": round(float(d[i]), 4),
                   "ci95": [round(float(lo[i]), 4), round(float(hi[i]), 4)],
                   "elo_shift": round(float(elo_k[i] - elo_ref[i]), 2), "matches": int(seen[i]),
                   "constitution": vocab[i] in marked}
            if p_trait:
                row.update(p_value=round(p_raw[i], 4), p_holm=round(p_trait[i], 4), significant=p_trait[i] < 0.05)
            rows.append(row)
        section = {"rows": rows, "spearman_vs_reference": _round(scoring.spearman(point[0, used], point[k, used])),
                   "elo_spearman_vs_reference": _round(scoring.spearman(elo_ref[used], elo_k[used])),
                   "unmarked_mean_abs_shift": _round(float(np.abs(d[other_idx]).mean())) if other_idx else None}
        if mark_idx:
            mlo, mhi = scoring.interval(ds[:, mark_idx].mean(axis=1))
            section["constitution_mean_shift"] = {
                "shift": round(float(d[mark_idx].mean()), 4), "ci95": [round(float(mlo), 4), round(float(mhi), 4)],
                "traits": [vocab[i] for i in mark_idx], "p_value": None if p_mean is None else round(p_mean, 4)}
        shifts[name] = section

    return {"comparisons": len(comps), "decided": len(decided), "undecided": len(comps) - len(decided),
            "traits_in_play": int(len(used)), "reference": names[0], "marked_traits": list(marked),
            "significance": (f"per-trait paired permutation test ({n_perm} permutations), Holm-adjusted over the "
                             f"{len(used)} traits in play, family-wise error 0.05") if n_perm else None,
            "strengths": strengths, "shifts": shifts,
            "plan": [{"prompt": c["prompt"], "trait_1": c["trait_1"], "trait_2": c["trait_2"]} for c in comps],
            "outcomes": outcomes}


def compare_to_control(run: dict, control: dict, *, n_boot: int = 1000, seed: int = 0, l2: float = 0.1,
                       n_perm: int = 1000, vocab: list[str] | None = None) -> dict:
    """The marked traits' mean shift of a persona run minus that of a control run (a placebo constitution through
    the same pipeline), from both runs' `preferences` sections, with this run's marked traits in both.

    When both runs judged the same comparisons (same seed, plan and trait pool) one bootstrap draw of comparison
    indices serves all four systems (the two references and the two trained systems), so the shared base cancels;
    otherwise each run is resampled on its own. The p-value (same plan only) is a paired permutation test of the
    persona's trained system against the control's."""
    import numpy as np

    from character.evaluation import data, scoring

    vocab = vocab or list(data.traits())
    index = {t: i for i, t in enumerate(vocab)}
    marked = [t for t in run["marked_traits"] if t in index]
    if not marked:
        raise ValueError("the persona run has no marked traits to compare")
    idx = [index[t] for t in marked]

    def trained(sec):
        names = list(sec["outcomes"])
        return sec["outcomes"][names[0]], sec["outcomes"][names[1]], names[1]

    def pairs_of(sec):
        return [(index[c["trait_1"]], index[c["trait_2"]]) for c in sec["plan"]]

    ref_a, sys_a, name_a = trained(run)
    ref_b, sys_b, name_b = trained(control)
    pa, pb = pairs_of(run), pairs_of(control)
    same = run["plan"] == control["plan"]

    def shift(pairs, ref, sys, draw=None):
        s = scoring.bradley_terry(scoring.outcome_matches(pairs, sys, draw), len(vocab), l2)
        r = scoring.bradley_terry(scoring.outcome_matches(pairs, ref, draw), len(vocab), l2)
        return float((s - r)[idx].mean())

    point_a, point_b = shift(pa, ref_a, sys_a), shift(pb, ref_b, sys_b)
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot):
        da = rng.integers(0, len(pa), len(pa))
        db = da if same else rng.integers(0, len(pb), len(pb))
        diffs.append(shift(pa, ref_a, sys_a, da) - shift(pb, ref_b, sys_b, db))
    lo, hi = scoring.interval(np.asarray(diffs))
    out = {"system": name_a, "control_system": name_b, "traits": marked, "paired": same,
           "shift": round(point_a, 4), "control_shift": round(point_b, 4), "difference": round(point_a - point_b, 4),
           "ci95": [round(float(lo), 4), round(float(hi), 4)], "p_value": None}
    if same and n_perm:
        p, _ = scoring.permutation_shift_test(pa, sys_b, sys_a, len(vocab), lambda d: np.array([d[idx].mean()]),
                                              n_perm=n_perm, seed=seed, l2=l2)
        out["p_value"] = round(float(p[0]), 4)
    return out


def _round(x: float, nd: int = 4):
    return None if x != x else round(float(x), nd)  # nan -> null in JSON
