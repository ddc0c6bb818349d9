"""Choosing the layer and strength of a persona vector: a small sweep on held-out prompts instead of one constant
per model family (the Open Character Training code sets one strength per family by hand).

On `sweep_prompts` general prompts that no vector was built from, the model answers plainly, with the persona's
system prompt (the reference for coherence), and steered at each candidate layer with strengths rising in turn.
Each steered setting gets:
- **persona**: how far its answers move toward the persona's traits (the MiniLM trait similarity of the
  preferences judge: an answer's mean cosine to the constitution's marked traits, `character eval`'s marked traits
  of evals/traits.jsonl), steered minus plain on the same prompt, with a paired bootstrap interval;
- **coherence**: the share of its answers that read like the model's own: not empty, no more surprising per token
  to the unsteered model given the persona's system prompt than the least likely of the plain and prompted answers,
  and repeating word pairs no more than the most repetitive of them (runaway repetition is likely text, so the
  per-token likelihood alone would pass it).
A setting holds when at least `coherent_share` of its answers are coherent. At each layer the strengths rise until
one breaks: the last that held is that layer's strength, "just below where coherence breaks". The chosen layer is
the one whose strength moves the persona furthest; the choice and every setting's figures go to sweep.json.
"""

from __future__ import annotations

import re


def distinct_pairs(text: str) -> float:
    """Share of distinct word bigrams (1 for fewer than 3 words, 0 for none): low for text that loops."""
    words = re.findall(r"\w+", text.lower())
    if len(words) < 3:
        return 1.0 if words else 0.0
    pairs = list(zip(words, words[1:]))
    return len(set(pairs)) / len(pairs)


def per_token_nll(engine, system: str, prompts: list[str], answers: list[str]) -> list[float | None]:
    """Negative log-likelihood per token of each answer under the unsteered model given the persona's system
    prompt; None for an empty answer."""
    from character.engine.base import Request, continuation_ids

    idx = [i for i, a in enumerate(answers) if a.strip()]
    out: list[float | None] = [None] * len(answers)
    if not idx:
        return out
    reqs = [Request([{"role": "system", "content": system}, {"role": "user", "content": prompts[i]}]) for i in idx]
    scores = engine.score(reqs, [[answers[i]] for i in idx])
    for i, s in zip(idx, scores):
        out[i] = -s[0] / max(1, len(continuation_ids(engine.tokenizer, answers[i])))
    return out


def coherence_bars(nll: list[float | None], distinct: list[float]) -> dict:
    """The bars a steered answer must meet, from the plain and prompted answers: the highest per-token NLL and the
    lowest distinct-pair share among those that are not empty."""
    seen = [(n, d) for n, d in zip(nll, distinct) if n is not None]
    if not seen:
        return {"nll_max": float("inf"), "distinct_min": 0.0}
    return {"nll_max": max(n for n, _ in seen), "distinct_min": min(d for _, d in seen)}


def coherent(nll: float | None, distinct: float, bars: dict) -> bool:
    return nll is not None and nll <= bars["nll_max"] and distinct >= bars["distinct_min"]


def choose(settings: list[dict]) -> dict:
    """The chosen setting: per layer the last strength that held (strengths were tried rising, stopping at the
    first that broke); of those, the one that moves the persona furthest (ties: the lower strength). When none
    held anywhere: the weakest setting with the most coherent answers, marked `coherent: false`."""
    held = [s for s in settings if s["holds"]]
    best_per_layer: dict[int, dict] = {}
    for s in held:
        if s["layer"] not in best_per_layer or s["strength"] > best_per_layer[s["layer"]]["strength"]:
            best_per_layer[s["layer"]] = s
    if best_per_layer:
        pick = max(best_per_layer.values(), key=lambda s: (s["persona_shift"], -s["strength"]))
        return {"layer": pick["layer"], "strength": pick["strength"], "coherent": True,
                "persona_shift": pick["persona_shift"], "persona_ci95": pick["persona_ci95"]}
    pick = max(settings, key=lambda s: (s["coherent_share"], -s["strength"], s["persona_shift"]))
    return {"layer": pick["layer"], "strength": pick["strength"], "coherent": False,
            "persona_shift": pick["persona_shift"], "persona_ci95": pick["persona_ci95"]}


def run(engine, *, vectors, method: str, layers: list[int], strengths: list[float], prompts: list[str],
        system: str, marked: list[str], encode, trait_text, sampling, coherent_share: float, n_boot: int,
        seed: int) -> dict:
    """The sweep (see the module docstring) on an hf engine; returns sweep.json's content."""
    import numpy as np

    from character.engine.base import Request
    from character.engine.steering import add_vectors
    from character.evaluation.scoring import bootstrap_mean_diff

    traits = encode([trait_text(t) for t in marked])

    def persona(texts: list[str]):
        return (encode(texts) @ traits.T).mean(axis=1)

    plain_reqs = [Request([{"role": "user", "content": p}]) for p in prompts]
    prompted_reqs = [Request([{"role": "system", "content": system}, {"role": "user", "content": p}]) for p in prompts]
    plain = [c.texts[0] for c in engine.generate(plain_reqs, sampling, progress="sweep plain")]
    prompted = [c.texts[0] for c in engine.generate(prompted_reqs, sampling, progress="sweep prompted")]
    ref_texts = plain + prompted
    bars = coherence_bars(per_token_nll(engine, system, prompts * 2, ref_texts), [distinct_pairs(t) for t in ref_texts])
    plain_score = persona(plain)

    def summary(texts: list[str]) -> dict:
        nll = per_token_nll(engine, system, prompts, texts)
        distinct = [distinct_pairs(t) for t in texts]
        ok = [coherent(n, d, bars) for n, d in zip(nll, distinct)]
        shift, lo, hi = bootstrap_mean_diff(plain_score, persona(texts), n_boot=n_boot, seed=seed)
        seen = [n for n in nll if n is not None]
        return {"persona_shift": round(shift, 4), "persona_ci95": [round(lo, 4), round(hi, 4)],
                "coherent_share": round(float(np.mean(ok)), 4),
                "mean_nll": round(float(np.mean(seen)), 4) if seen else None,
                "mean_distinct_pairs": round(float(np.mean(distinct)), 4), "example": texts[0]}

    settings = []
    for layer in layers:
        for strength in sorted(strengths):
            with add_vectors(engine.model, {layer: vectors[method][layer]}, strength):
                texts = [c.texts[0] for c in engine.generate(plain_reqs, sampling,
                                                             progress=f"sweep layer {layer} x{strength:g}")]
            row = {"layer": layer, "strength": strength, **summary(texts)}
            row["holds"] = row["coherent_share"] >= coherent_share
            settings.append(row)
            if not row["holds"]:
                break  # stronger settings at this layer break it further
    prompted_summary = summary(prompted)
    return {"method": method, "layers": layers, "strengths": sorted(strengths), "prompts": prompts,
            "marked_traits": marked, "coherence_bars": {k: round(v, 4) if np.isfinite(v) else None for k, v in bars.items()},
            "coherent_share": coherent_share, "plain_example": plain[0],
            "prompted": {k: v for k, v in prompted_summary.items() if k != "example"} | {"example": prompted[0]},
            "settings": settings, "chosen": {"method": method, **choose(settings)}}
