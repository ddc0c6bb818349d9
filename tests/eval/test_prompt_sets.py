"""The held-out evaluation prompts (evals/prompts/eval.jsonl) share nothing with the texts training sees, and the
overlap checker behind that claim (character/evaluation/overlap.py) catches each kind of overlap.

    .venv/bin/pytest -x -q tests/eval/test_prompt_sets.py

Every text is embedded once (MiniLM) for the whole module and the vectors are kept under CHARACTER_HOME, so a
rerun encodes only new or changed texts (the first run takes about half a minute of CPU, later ones seconds).
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from character.artifacts import read_jsonl
from character.errors import CharacterError
from character.evaluation import overlap
from character.resources import data_path

CATEGORIES = ("advice", "facts", "feelings", "creative", "technical", "opinions")
SOURCES = overlap.training_prompt_sources()  # YAML and JSONL only: cheap enough at collection, and names the cases
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@pytest.fixture(scope="module")
def eval_rows() -> list[dict]:
    return read_jsonl(data_path("evals", "prompts", "eval.jsonl"))


@pytest.fixture(scope="module")
def eval_prompts(eval_rows) -> list[str]:
    return [row["prompt"] for row in eval_rows]


@pytest.fixture(scope="module")
def stored_embed(embedding_judge):
    """MiniLM vectors kept between runs (keyed by text, in a file named after the model's files): a rerun
    encodes only what changed."""
    return overlap.cached_embedder(embedding_judge.encode, store=overlap.embedding_store(embedding_judge.model_path))


@pytest.fixture(scope="module")
def embed(stored_embed, eval_prompts):
    stored_embed([*eval_prompts, *(text for texts in SOURCES.values() for text in texts)])  # one pass, every text
    return stored_embed


def describe(found: list[dict]) -> str:
    def line(o: dict) -> str:
        cos = f", cos {o['cosine']:.3f}" if o["cosine"] is not None else ""
        return f"  {o['reason']}{cos}: {o['candidate']!r} ~ {o['reference']!r}"

    return "\n".join(line(o) for o in found)


# --- the shipped eval set -------------------------------------------------------------------------------------

@pytest.mark.parametrize("source", sorted(SOURCES))
def test_eval_set_is_disjoint_from_training_source(source, eval_prompts, embed):
    found = overlap.find_overlaps(eval_prompts, SOURCES[source], embed=embed)
    assert not found, f"{len(found)} eval prompt(s) overlap {source}; rewrite them:\n{describe(found)}"


def test_eval_set_has_no_near_duplicates(eval_prompts, embed):
    found = overlap.find_overlaps(eval_prompts, None, embed=embed)
    assert not found, f"{len(found)} pair(s) of eval prompts are near-duplicates:\n{describe(found)}"


def test_eval_set_size_and_categories(eval_rows):
    assert len(eval_rows) >= 400
    odd = [row for row in eval_rows if set(row) != {"prompt", "category"} or row["category"] not in CATEGORIES]
    assert not odd, f"rows need exactly 'prompt' and one of {CATEGORIES} as 'category': {odd[:3]}"
    counts = {c: sum(row["category"] == c for row in eval_rows) for c in CATEGORIES}
    assert all(n >= 60 for n in counts.values()), f"each category needs at least 60 prompts: {counts}"


def sentence_count(text: str) -> int:
    return len([s for s in _SENTENCE_END.split(text.strip()) if s])


def test_eval_prompts_are_one_to_four_sentences(eval_prompts):
    assert sentence_count("Hi. Is 3.5 km far? Thanks!") == 3
    wrong = {p: sentence_count(p) for p in eval_prompts if not 1 <= sentence_count(p) <= 4}
    assert not wrong, f"prompts must be 1-4 sentences: {wrong}"


def test_sources_cover_the_training_side():
    constitution_files = sorted(p.name for p in data_path("constitutions").rglob("*.yaml"))
    assert sorted(name.rsplit("/", 1)[-1] for name in SOURCES if name.startswith("constitutions/")) == \
        constitution_files
    for name in ("evals/prompts/general.jsonl", "evals/introspection.yaml", "evals/judge_labelled.jsonl",
                 "evals/capability.jsonl"):
        assert name in SOURCES
    assert all(SOURCES.values()), [name for name, texts in SOURCES.items() if not texts]
    assert "What is 12 + 15?" in SOURCES["evals/capability.jsonl"]


# --- the checker on hand-made lists ---------------------------------------------------------------------------

def test_normalise_and_ngrams():
    assert overlap.normalise("  How do I   boil an EGG?!  ") == "how do i boil an egg"
    assert overlap.normalise("don't—stop") == "don t stop"
    assert overlap.ngrams("one two three", n=2) == {("one", "two"), ("two", "three")}
    assert overlap.ngrams("too short to have one", n=8) == set()


def test_exact_match_fires_despite_case_and_punctuation():
    found = overlap.find_overlaps(["How do I boil an egg?"], ["how do i boil an EGG ?!", "Name a blue fruit."])
    assert [(o["reference"], o["reason"]) for o in found] == [("how do i boil an EGG ?!", "exact")]


def test_shared_8_gram_fires_and_7_gram_does_not():
    shared = "the quickest way to get to the airport"  # 8 words
    found = overlap.find_overlaps([f"Tell me {shared} tomorrow."], [f"Honestly, {shared} by bus?"])
    assert [o["reason"] for o in found] == ["8-gram"] and found[0]["ngram"] == shared
    seven = "quickest way to get to the airport"
    assert overlap.find_overlaps([f"Tell me the {seven} tomorrow."], [f"Honestly, a {seven} by bus?"]) == []


def test_cosine_fires_on_a_paraphrase_and_a_different_prompt_passes(stored_embed):
    embed = stored_embed
    refs = ["What is the best way to fall asleep fast?"]
    found = overlap.find_overlaps(["What's the best way to fall asleep quickly?"], refs, embed=embed)
    assert [o["reason"] for o in found] == ["cosine"] and found[0]["cosine"] >= 0.9
    assert overlap.find_overlaps(["Write a limerick about a tram conductor."], refs, embed=embed) == []


def fixed_embed(vectors: dict[str, list[float]]):
    return lambda texts: np.array([vectors[t] for t in texts], dtype=float)


def test_cosine_threshold_is_inclusive_and_within_set_pairs_once():
    unit = {"a": [1.0, 0.0], "b": [0.9, np.sqrt(1 - 0.81)], "c": [0.89, np.sqrt(1 - 0.89 ** 2)], "d": [0.0, 1.0]}
    embed = fixed_embed(unit)
    found = overlap.find_overlaps(["a"], ["b", "c", "d"], embed=embed)
    assert [(o["reference"], o["reason"], round(o["cosine"], 6)) for o in found] == [("b", "cosine", 0.9)]
    within = overlap.find_overlaps(["a", "b", "d", "a"], None, embed=embed)
    assert sorted((o["candidate"], o["reference"], o["reason"]) for o in within) == \
        [("a", "a", "exact"), ("a", "b", "cosine"), ("b", "a", "cosine")]
    assert overlap.nearest(["a", "d"], ["c", "d"], embed) == {"candidate": "d", "reference": "d", "cosine": 1.0}
    assert overlap.nearest(["a", "c", "d"], None, embed)["cosine"] == pytest.approx(0.89)


def test_bad_settings_are_one_line_errors():
    with pytest.raises(CharacterError, match="n-gram length"):
        overlap.find_overlaps(["x"], ["y"], n=0)
    with pytest.raises(CharacterError, match="threshold"):
        overlap.find_overlaps(["x"], ["y"], cosine=1.5)


def test_cached_embedder_encodes_each_text_once_and_persists(tmp_path):
    calls: list[list[str]] = []

    def encode(texts):
        calls.append(list(texts))
        return np.array([[float(len(t)), 1.0] for t in texts])

    store = tmp_path / "vectors.npz"
    first = overlap.cached_embedder(encode, store=store)
    assert first(["ab", "c", "ab"]).tolist() == [[2.0, 1.0], [1.0, 1.0], [2.0, 1.0]]
    first(["c"])
    assert calls == [["ab", "c"]]
    second = overlap.cached_embedder(encode, store=store)  # a later run: read back, nothing to encode
    assert second(["c", "ab"]).tolist() == [[1.0, 1.0], [2.0, 1.0]] and calls == [["ab", "c"]]
    store.write_bytes(b"not a zip file")
    assert overlap.cached_embedder(encode, store=store)(["c"]).tolist() == [[1.0, 1.0]]
    assert calls[-1] == ["c"]
