"""Does the teacher play the persona at all? Measured on dpo-data pairs (chosen = the teacher's role-played
answer, rejected = the student's plain one) in MiniLM space, before any training is spent on them.

- `classifier`: held-out accuracy of a logistic regression that tells the chosen answer of a pair from the
  rejected one (k-fold, folds split by prompt). Near 0.5 means the two sides are indistinguishable: the teacher
  answered as itself, and DPO has nothing to learn.
- `trait_direction`: per vocabulary trait, how much closer the chosen answers sit to the trait's text than the
  rejected ones (cosine difference, mean over pairs, bootstrap interval over prompts). It says which traits the
  data pushes toward; `character.evaluation.marked` uses it to pick the traits an evaluation should watch.

`run_dpo_data` records `check_pairs(pairs)` in its manifest under "separation" (`--separation false` skips it).
On other pairs, e.g. a dpo-data dir's rows:

    measure_separation(StageDir(path, "dpo-data").rows(), EmbeddingJudge("minilm").encode, data.traits())
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from character.errors import CharacterError

MIN_PAIRS = 10
CHANCE = 0.5
# Near chance: the classifier's 95% interval reaches 0.5, or its accuracy is under 0.6 (a real but faint
# separation that DPO would barely learn from). Either rule alone flags it.
WEAK_ACCURACY = 0.6


def trait_text(trait: str, description: str | None) -> str:
    """The text a trait is embedded as; the same as EmbeddingJudge.trait_text, so directions match the judge's."""
    return f"{trait}: {description}" if description else trait


def answer_text(messages: Sequence[dict]) -> str:
    return "\n".join(m.get("content") or "" for m in messages if m.get("role", "assistant") == "assistant")


def prompt_key(pair: dict) -> str:
    """Which prompt a pair answers: its prompt_id, else the prompt's text (both answers of a prompt share a fold)."""
    if pair.get("prompt_id"):
        return str(pair["prompt_id"])
    return "\n".join(m.get("content") or "" for m in pair.get("prompt") or [])


def measure_separation(pairs: Sequence[dict], encode: Callable, traits: dict[str, str], seed: int = 0,
                       folds: int = 5, n_boot: int = 1000, max_pairs: int = 4000) -> dict:
    """How far apart chosen and rejected answers are (see the module docstring). `encode(texts)` returns
    unit-norm rows; `traits` maps vocabulary trait -> description. Over `max_pairs` pairs, a seeded sample."""
    import numpy as np

    if len(pairs) < MIN_PAIRS:
        return {"checked": False, "reason": f"{len(pairs)} pairs; the check needs at least {MIN_PAIRS}"}
    total = len(pairs)
    if total > max_pairs:
        keep = np.sort(np.random.default_rng(seed).choice(total, max_pairs, replace=False))
        pairs = [pairs[i] for i in keep]
    groups = _group_ids([prompt_key(p) for p in pairs])
    if groups.max() < 1:
        return {"checked": False, "reason": "every pair answers the same prompt; held-out folds need several"}
    n = len(pairs)
    vecs = np.asarray(encode([answer_text(p["chosen"]) for p in pairs] + [answer_text(p["rejected"]) for p in pairs]),
                      dtype=np.float64)
    chosen, rejected = vecs[:n], vecs[n:]
    classifier = pairwise_accuracy(chosen, rejected, groups, folds, seed)
    names = list(traits)
    trait_vecs = np.asarray(encode([trait_text(t, traits[t]) for t in names]), dtype=np.float64)
    directions = trait_directions(chosen, rejected, trait_vecs, groups, n_boot, seed)
    return {"checked": True, "pairs": n, "pairs_total": total, "prompts": int(groups.max() + 1),
            "classifier": classifier,
            "trait_direction": {t: {"mean": round(float(m), 4), "ci95": [round(float(lo), 4), round(float(hi), 4)]}
                                for t, m, lo, hi in zip(names, *directions)},
            "near_chance": bool(classifier["ci95"][0] <= CHANCE or classifier["accuracy"] < WEAK_ACCURACY)}


def _group_ids(keys: list[str]):
    import numpy as np

    index: dict[str, int] = {}
    return np.array([index.setdefault(k, len(index)) for k in keys])


def fold_of_group(groups, folds: int, seed: int):
    """Each prompt's fold: prompts shuffled with `seed`, dealt round-robin so folds differ by at most one prompt."""
    import numpy as np

    n_groups = int(groups.max()) + 1
    k = max(2, min(folds, n_groups))
    order = np.random.default_rng(seed).permutation(n_groups)
    fold = np.empty(n_groups, dtype=int)
    fold[order] = np.arange(n_groups) % k
    return fold[groups], k


def _logistic(c: float = 1.0):
    """Standardised features (MiniLM rows are unit-norm, so raw coordinates are tiny) + L2 logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))


def pairwise_accuracy(chosen, rejected, groups, folds: int, seed: int, c: float = 1.0) -> dict:
    """Held-out share of pairs whose chosen answer a linear model trained on the other folds scores higher.

    Trained on differences (chosen - rejected -> 1, rejected - chosen -> 0), so what the two answers of a prompt
    share (its topic) cancels and the model sees only how the teacher's answer differs from the student's.
    Measured against classifying single answers (both answers of a prompt in one fold) on the demo's 104
    poeticism pairs: 0.88 [0.81, 0.93] here vs 0.64 [0.58, 0.71] per answer; with chosen and rejected swapped
    at random (no signal) both stay at chance (pairwise 0.51, sd 0.05 over 60 shuffles).
    """
    import numpy as np

    from character.evaluation.scoring import wilson

    fold, k = fold_of_group(groups, folds, seed)
    diff = chosen - rejected
    right = 0
    for f in range(k):
        train, test = fold != f, fold == f
        x = np.concatenate([diff[train], -diff[train]])
        y = np.concatenate([np.ones(train.sum()), np.zeros(train.sum())])
        model = _logistic(c).fit(x, y)
        right += int((model.decision_function(diff[test]) > model.decision_function(-diff[test])).sum())
    n = len(diff)
    lo, hi = wilson(right, n)
    return {"accuracy": round(right / n, 4), "ci95": [round(lo, 4), round(hi, 4)], "folds": k, "chance": CHANCE,
            "held_out": n, "formulation": "pairwise"}


def trait_directions(chosen, rejected, trait_vecs, groups, n_boot: int, seed: int):
    """Per trait: mean over pairs of cos(chosen, trait) - cos(rejected, trait), and a 95% bootstrap interval that
    resamples prompts (the samples of one prompt are not independent). Returns (mean, low, high) arrays."""
    import numpy as np

    from character.evaluation.scoring import interval

    per_pair = (chosen - rejected) @ trait_vecs.T  # rows are unit-norm, so dot products are cosines
    n_groups = int(groups.max()) + 1
    sums = np.zeros((n_groups, per_pair.shape[1]))
    np.add.at(sums, groups, per_pair)
    counts = np.bincount(groups, minlength=n_groups).astype(float)
    draws = np.random.default_rng(seed).multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n_boot)
    boot = (draws @ sums) / (draws @ counts)[:, None]
    lo, hi = interval(boot)
    return per_pair.mean(axis=0), lo, hi


def check_pairs(pairs: Sequence[dict], seed: int = 0, model: str = "minilm") -> dict:
    """measure_separation with MiniLM and the vocabulary, for the dpo-data manifest; never fails the stage:
    without sentence-transformers or the model it records why it could not check."""
    from character.evaluation import data

    if len(pairs) < MIN_PAIRS:  # decided before loading any model
        return measure_separation(pairs, None, {}, seed)
    try:
        from character.evaluation.judges import EmbeddingJudge

        return measure_separation(pairs, EmbeddingJudge(model).encode, data.traits(), seed)
    except (ImportError, OSError, CharacterError) as e:
        return {"checked": False, "reason": f"could not embed the answers with {model}: {str(e).splitlines()[0]}"}


def warning(separation: dict) -> str | None:
    """One line for stderr when the teacher barely plays the persona, else None."""
    if not separation.get("checked") or not separation.get("near_chance"):
        return None
    c = separation["classifier"]
    lo, hi = c["ci95"]
    return (f"dpo-data: the teacher barely plays this persona (chosen vs rejected held-out accuracy "
            f"{c['accuracy']:.2f} [{lo:.2f}, {hi:.2f}], chance {c['chance']:.2f}): use a stronger teacher or "
            "`persona_prompt: description`")
