"""The built-in evaluation data in evals/: trait vocabulary, templates, suffixes, prompts, labelled judge set,
multiple-choice set, persona -> trait mapping. Each loader checks the shape and names the file on a problem.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from character.errors import CharacterError
from character.resources import data_path


def _path(*parts: str) -> Path:
    p = data_path("evals", *parts)
    if not p.is_file():
        raise CharacterError(f"{p}: evaluation data file missing; reinstall character or set CHARACTER_DATA")
    return p


def _yaml(name: str) -> dict:
    import yaml

    p = _path(name)
    data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise CharacterError(f"{p}: expected a mapping")
    return data


def _jsonl(name: str, keys: tuple[str, ...]) -> list[dict]:
    from character.artifacts import read_jsonl

    p = _path(*name.split("/"))
    rows = read_jsonl(p)
    for n, row in enumerate(rows, 1):
        missing = [k for k in keys if k not in row]
        if missing:
            raise CharacterError(f"{p}: row {n} lacks {', '.join(missing)}; each row needs {', '.join(keys)}")
    return rows


@cache
def traits() -> dict[str, str]:
    """trait word -> description, in file order."""
    return {r["trait"]: r["description"] for r in _jsonl("traits.jsonl", ("trait", "description"))}


@cache
def preference_templates() -> dict:
    d = _yaml("preferences.yaml")
    for key in ("conditions", "judge_template", "coherence_judge_template"):
        if key not in d:
            raise CharacterError(f"{_path('preferences.yaml')}: missing '{key}'")
    return d


@cache
def robustness_settings() -> dict:
    d = _yaml("robustness.yaml")
    if not d.get("suffixes"):
        raise CharacterError(f"{_path('robustness.yaml')}: missing 'suffixes' (a list of {{id, text}})")
    return d


@cache
def persona_traits() -> dict[str, list[str]]:
    return {str(k): [str(t) for t in v] for k, v in _yaml("persona_traits.yaml").items()}


def prompts(name: str = "general") -> list[str]:
    return [r["prompt"] for r in _jsonl(f"prompts/{name}.jsonl", ("prompt",))]


def capability_questions() -> list[dict]:
    rows = _jsonl("capability.jsonl", ("question", "choices", "answer"))
    for n, r in enumerate(rows, 1):
        if not (isinstance(r["choices"], list) and 0 <= int(r["answer"]) < len(r["choices"])):
            raise CharacterError(f"{_path('capability.jsonl')}: row {n}: 'answer' must index into 'choices'")
    return rows


def judge_labelled() -> list[dict]:
    return _jsonl("judge_labelled.jsonl", ("trait", "prompt", "answer"))


@cache
def trait_opposites() -> dict[str, set[str]]:
    """trait -> the vocabulary traits that point the opposite way (evals/trait_opposites.yaml), symmetric."""
    from character.config import suggest

    p, vocab = _path("trait_opposites.yaml"), traits()
    out: dict[str, set[str]] = {}
    for word, others in _yaml("trait_opposites.yaml").items():
        if not isinstance(others, list):
            raise CharacterError(f"{p}: '{word}' must map to a list of traits, e.g. {word}: [other, ...]")
        for w in (word, *others):
            if w not in vocab:
                raise CharacterError(f"{p}: '{w}' is not a trait of traits.jsonl{suggest(str(w), vocab)}; "
                                     "use only vocabulary words")
        for other in others:
            if other == word:
                raise CharacterError(f"{p}: '{word}' is listed as its own opposite")
            out.setdefault(word, set()).add(other)
            out.setdefault(other, set()).add(word)
    return out
