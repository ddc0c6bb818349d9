"""Overlap between prompt sets: does an evaluation prompt repeat, quote or paraphrase a training prompt?

Three rules, checked per (candidate, reference) pair, strongest first:
- "exact": equal after `normalise` (lower case, runs of whitespace and punctuation collapsed to one space);
- "8-gram": the two share a run of n (default 8) consecutive normalised words;
- "cosine": sentence embeddings (MiniLM) at or above a similarity threshold (default 0.9), a near-paraphrase.

    from character.evaluation import data, overlap
    from character.evaluation.judges import EmbeddingJudge

    judge = EmbeddingJudge("minilm")
    embed = overlap.cached_embedder(judge.encode, store=overlap.embedding_store(judge.model_path))
    for source, texts in overlap.training_prompt_sources().items():
        print(source, overlap.find_overlaps(data.prompts("eval"), texts, embed=embed))

`training_prompt_sources()` lists every shipped text a model is trained or generated on, so the held-out set
(evals/prompts/eval.jsonl) can be checked against all of them (tests/eval/test_prompt_sets.py does).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

from character.errors import CharacterError

Embed = Callable[[Sequence[str]], object]  # texts -> numpy array of unit-norm rows
_NOT_WORD = re.compile(r"[\W_]+")


def normalise(text: str) -> str:
    """Lower case, every run of whitespace/punctuation one space, no space at either end."""
    return _NOT_WORD.sub(" ", text.lower()).strip()


def ngrams(text: str, n: int = 8) -> set[tuple[str, ...]]:
    """The word n-grams of the normalised text (none when it has fewer than n words)."""
    words = normalise(text).split()
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def cached_embedder(encode: Embed, store: Path | None = None) -> Embed:
    """`encode` that embeds each distinct text once, so checking one set against many sources stays cheap.

    With `store` (an .npz file; one per model, see `embedding_store`) the vectors also persist between runs, so
    a second run encodes only texts it has not seen (and never loads the model when there are none).
    """
    import numpy as np

    vectors = _load_store(store) if store is not None else {}

    def embed(texts: Sequence[str]):
        todo = [t for t in dict.fromkeys(texts) if t not in vectors]
        if todo:
            vectors.update(zip(todo, encode(todo)))
            if store is not None:
                _save_store(store, vectors)
        return np.stack([vectors[t] for t in texts]) if texts else np.zeros((0, 0))

    return embed


def embedding_store(model_path: str) -> Path:
    """Where `cached_embedder` keeps one model's vectors: a name that changes whenever the model's files do."""
    from character.artifacts import sha256_text
    from character.resources import character_home

    files = sorted(p for p in Path(model_path).rglob("*") if p.is_file())
    stamp = [str(Path(model_path).resolve()), *(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)]
    return character_home() / "embeddings" / f"{sha256_text(chr(10).join(stamp))}.npz"


def _load_store(store: Path) -> dict[str, object]:
    import zipfile

    import numpy as np

    try:
        with np.load(store, allow_pickle=False) as saved:
            return dict(zip(saved["texts"].tolist(), saved["vectors"]))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):  # absent or unreadable: a cache, so start afresh
        return {}


def _save_store(store: Path, vectors: dict[str, object]) -> None:
    import os
    import tempfile

    import numpy as np

    store.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=store.parent, prefix=f".{store.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, texts=np.array(list(vectors), dtype=str), vectors=np.stack(list(vectors.values())))
        os.replace(tmp, store)  # atomic: a concurrent reader sees the old file or the new one, never half of one
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def similarities(candidates: Sequence[str], references: Sequence[str], embed: Embed):
    """Cosine matrix (candidates x references); `embed` must return unit-norm rows."""
    import numpy as np

    if not candidates or not references:
        return np.zeros((len(candidates), len(references)))
    return np.asarray(embed(list(candidates))) @ np.asarray(embed(list(references))).T


def find_overlaps(candidates: Sequence[str], references: Sequence[str] | None, embed: Embed | None = None,
                  n: int = 8, cosine: float = 0.9) -> list[dict]:
    """Every (candidate, reference) pair that breaks a rule, one dict per pair with its strongest reason.

    references=None compares the candidates with each other (each unordered pair once).
    Each dict: candidate, reference, reason ("exact", "8-gram" (f"{n}-gram") or "cosine"), cosine (the pair's
    similarity when `embed` is given, else None) and, for an n-gram, the shared words. Without `embed` the cosine
    rule is skipped.
    """
    if n < 1:
        raise CharacterError(f"find_overlaps: n={n}; the n-gram length must be at least 1")
    if not 0.0 < cosine <= 1.0:
        raise CharacterError(f"find_overlaps: cosine={cosine}; give a similarity threshold in (0, 1]")
    within = references is None
    refs = list(candidates) if within else list(references)
    sims = similarities(candidates, refs, embed) if embed is not None else None
    ref_grams = [ngrams(r, n) for r in refs]
    ref_norms = [normalise(r) for r in refs]
    found = []
    for i, cand in enumerate(candidates):
        cand_norm, cand_grams = normalise(cand), ngrams(cand, n)
        for j in range(i + 1 if within else 0, len(refs)):
            sim = None if sims is None else float(sims[i, j])
            hit = _strongest_reason(cand_norm, ref_norms[j], cand_grams & ref_grams[j], n, sim, cosine)
            if hit:
                found.append({"candidate": cand, "reference": refs[j], "cosine": sim, **hit})
    return found


def _strongest_reason(cand_norm: str, ref_norm: str, shared: set, n: int, sim: float | None,
                      cosine: float) -> dict | None:
    if cand_norm == ref_norm:
        return {"reason": "exact"}
    if shared:
        return {"reason": f"{n}-gram", "ngram": " ".join(min(shared))}
    if sim is not None and sim >= cosine:
        return {"reason": "cosine"}
    return None


def nearest(candidates: Sequence[str], references: Sequence[str] | None, embed: Embed) -> dict | None:
    """The most similar (candidate, reference) pair and its cosine; references=None looks within candidates."""
    import numpy as np

    within = references is None
    refs = list(candidates) if within else list(references)
    sims = similarities(candidates, refs, embed)
    if within:
        sims = np.where(np.triu(np.ones_like(sims, dtype=bool), k=1), sims, -np.inf)
    if sims.size == 0 or not np.isfinite(sims.max()):
        return None
    i, j = np.unravel_index(int(np.argmax(sims)), sims.shape)
    return {"candidate": candidates[i], "reference": refs[j], "cosine": float(sims[i, j])}


def training_prompt_sources() -> dict[str, list[str]]:
    """The shipped texts that training and data generation see, by source (a path under the data root):
    general prompts, every constitution's questions and additional questions (controls included), the
    introspection prompts, the judge-labelled prompts and the capability questions."""
    from character import constitution
    from character.evaluation import data
    from character.stages.introspect import load_introspection

    sources: dict[str, list[str]] = {"evals/prompts/general.jsonl": data.prompts("general")}
    root = constitution.constitutions_dir()
    for path in sorted([*root.glob("*.yaml"), *root.glob("controls/*.yaml")]):
        traits = constitution.load(path).traits
        sources[str(path.relative_to(root.parent))] = [q for t in traits for q in (*t.questions,
                                                                                  *t.additional_questions)]
    intro = load_introspection(None)
    sources["evals/introspection.yaml"] = [*intro["reflection_prompts"],
                                           *(p for group in intro["interaction_openers"].values() for p in group)]
    sources["evals/judge_labelled.jsonl"] = list(dict.fromkeys(r["prompt"] for r in data.judge_labelled()))
    sources["evals/capability.jsonl"] = [r["question"] for r in data.capability_questions()]
    return sources
