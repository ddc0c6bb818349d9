"""Constitutions: a persona as first-person trait statements, each with seed user messages.

Three formats load into the same `Constitution`:
- YAML (ours): `name`, `description`, `traits: [{trait, questions, clarification}]`, optionally `eval_traits`
  (words from evals/traits.jsonl that training should raise; the evaluation marks them in its report).
- JSON list (the original Open Character Training hand-written files, `*.txt` or `*.json`):
  `[{"trait": ..., "questions": [...]}, ...]`.
- expanded JSONL (the original's generated files): one trait a line, `questions` plus `additional_questions`.
A name (`sarcasm`) is looked up in the shipped `constitutions/`; anything else is a path.
Validation reports the first problem as one line: file, trait index, what is wrong, how to fix it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from character.config import suggest
from character.errors import CharacterError
from character.resources import data_path

SUFFIXES = (".yaml", ".yml", ".json", ".txt", ".jsonl")
TOP_KEYS = ("name", "description", "traits", "eval_traits")
TRAIT_KEYS = ("trait", "questions", "clarification", "additional_questions")


@dataclass(frozen=True)
class Trait:
    trait: str
    questions: tuple[str, ...]
    clarification: str | None = None
    additional_questions: tuple[str, ...] = ()


@dataclass(frozen=True)
class Constitution:
    name: str
    traits: tuple[Trait, ...]
    description: str | None = None
    eval_traits: tuple[str, ...] = ()
    source: str | None = field(default=None, compare=False)

    def numbered_traits(self) -> str:
        """'1. I ...\\n2. I ...' for system prompts."""
        return "\n".join(f"{i}. {t.trait}" for i, t in enumerate(self.traits, 1))

    def to_dict(self) -> dict:
        out: dict = {"name": self.name}
        if self.description:
            out["description"] = self.description
        out["traits"] = []
        for t in self.traits:
            d: dict = {"trait": t.trait, "questions": list(t.questions)}
            if t.clarification:
                d["clarification"] = t.clarification
            if t.additional_questions:
                d["additional_questions"] = list(t.additional_questions)
            out["traits"].append(d)
        if self.eval_traits:
            out["eval_traits"] = list(self.eval_traits)
        return out

    def hash(self) -> str:
        """Of what generation and training read: `eval_traits` only steers the report, so editing it reruns
        nothing but the evaluation."""
        from character.artifacts import sha256_text

        d = self.to_dict()
        d.pop("eval_traits", None)
        return sha256_text(json.dumps(d, sort_keys=True))


def constitutions_dir() -> Path:
    return data_path("constitutions")


def available() -> list[str]:
    d = constitutions_dir()
    if not d.is_dir():
        return []
    return sorted(p.stem for p in d.iterdir() if p.suffix in SUFFIXES and p.stem != "template")


def resolve_path(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.is_file():
        return p
    if p.suffix in SUFFIXES or "/" in str(name_or_path):
        if p.exists():
            raise CharacterError(f"{p}: is a directory, not a constitution file")
        raise CharacterError(f"{p}: constitution file not found; check the path")
    for suffix in SUFFIXES:
        cand = constitutions_dir() / f"{name_or_path}{suffix}"
        if cand.is_file():
            return cand
    names = available()
    raise CharacterError(
        f"constitution '{name_or_path}' not found{suggest(str(name_or_path), names)}; "
        f"give a file path or one of: {', '.join(names) or '(none shipped)'}")


def load(name_or_path: str | Path) -> Constitution:
    path = resolve_path(name_or_path)
    return parse(path)


def parse(path: Path) -> Constitution:
    where = str(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise CharacterError(f"{where}: not UTF-8 text (byte {e.start}); save the file as UTF-8") from None
    if not text.strip():
        raise CharacterError(f"{where}: file is empty; add a 'traits' list (see constitutions/template.yaml)")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        traits = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                traits.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise CharacterError(f"{where}:{n}: not valid JSON ({e.msg}); each line must be one trait object") from None
        data: object = traits
    elif suffix in (".json", ".txt"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise CharacterError(f"{where}:{e.lineno}: not valid JSON ({e.msg}); fix the syntax") from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = f":{mark.line + 1}" if mark else ""
            raise CharacterError(f"{where}{line}: not valid YAML ({getattr(e, 'problem', None) or e}); fix the syntax") from None
    return from_data(data, where=where, default_name=path.stem)


def from_data(data: object, *, where: str, default_name: str) -> Constitution:
    if data is None:
        raise CharacterError(f"{where}: file is empty; add a 'traits' list (see constitutions/template.yaml)")
    if isinstance(data, list):
        data = {"name": default_name, "traits": data}
    if not isinstance(data, dict):
        raise CharacterError(f"{where}: expected a mapping with 'name' and 'traits' (or a list of traits)")
    for key in data:
        if key not in TOP_KEYS:
            raise CharacterError(f"{where}: unknown key '{key}'{suggest(str(key), TOP_KEYS)}; allowed: {', '.join(TOP_KEYS)}")
    name = data.get("name", default_name)
    if not isinstance(name, str) or not name.strip():
        raise CharacterError(f"{where}: 'name' must be a non-empty string")
    description = data.get("description")
    if description is not None and not isinstance(description, str):
        raise CharacterError(f"{where}: 'description' must be a string")
    raw_traits = data.get("traits")
    if raw_traits is None:
        raise CharacterError(f"{where}: missing 'traits'; add a list of traits (see constitutions/template.yaml)")
    if not isinstance(raw_traits, list) or not raw_traits:
        raise CharacterError(f"{where}: 'traits' must be a non-empty list of {{trait, questions}} entries")
    traits = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(raw_traits):
        at = f"{where}: trait {i}"
        if not isinstance(raw, dict):
            raise CharacterError(f"{at}: must be a mapping with 'trait' and 'questions'")
        for key in raw:
            if key not in TRAIT_KEYS:
                raise CharacterError(f"{at}: unknown key '{key}'{suggest(str(key), TRAIT_KEYS)}; allowed: {', '.join(TRAIT_KEYS)}")
        text = raw.get("trait")
        if text is None:
            raise CharacterError(f"{at}: missing 'trait'; add a first-person statement such as 'I ...'")
        if not isinstance(text, str) or not text.strip():
            raise CharacterError(f"{at}: 'trait' is empty or not text; write a first-person statement such as 'I ...'")
        text = " ".join(text.split())
        if text in seen:
            raise CharacterError(f"{at}: duplicate of trait {seen[text]}; remove or reword one of them")
        seen[text] = i
        questions = _string_list(raw.get("questions"), f"{at}: 'questions'", required=True)
        extra = _string_list(raw.get("additional_questions"), f"{at}: 'additional_questions'", required=False)
        clar = raw.get("clarification")
        if clar is not None and not isinstance(clar, str):
            raise CharacterError(f"{at}: 'clarification' must be a string")
        traits.append(Trait(text, tuple(questions), clar.strip() if clar else None, tuple(extra)))
    eval_traits = _eval_traits(data.get("eval_traits"), f"{where}: 'eval_traits'")
    return Constitution(name=name.strip(), traits=tuple(traits), eval_traits=eval_traits,
                        description=description.strip() if description else None, source=where)


def _eval_traits(value: object, at: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(t, str) and t.strip() for t in value):
        raise CharacterError(f"{at} must be a list of trait words from evals/traits.jsonl, e.g. [witty, ironic]")
    from character.evaluation.data import traits as vocabulary

    known = vocabulary()
    out = []
    for t in value:
        t = t.strip().lower()
        if t not in known:
            raise CharacterError(f"{at}: '{t}' is not in the trait vocabulary{suggest(t, list(known))}; "
                                 f"pick words listed in evals/traits.jsonl")
        out.append(t)
    return tuple(dict.fromkeys(out))


def _string_list(value: object, at: str, *, required: bool) -> list[str]:
    if value is None:
        if required:
            raise CharacterError(f"{at} missing; add at least one seed user message (5 recommended)")
        return []
    if not isinstance(value, list):
        raise CharacterError(f"{at} must be a list of strings")
    if required and not value:
        raise CharacterError(f"{at} is empty; add at least one seed user message (5 recommended)")
    out = []
    for j, q in enumerate(value):
        if not isinstance(q, str):
            raise CharacterError(f"{at}[{j}] is {type(q).__name__}, not a string; quote it")
        if not q.strip():
            raise CharacterError(f"{at}[{j}] is empty; write the user message or remove the entry")
        out.append(q.strip())
    return out


def render_yaml(c: Constitution) -> str:
    import yaml

    return yaml.safe_dump(c.to_dict(), sort_keys=False, allow_unicode=True, width=110)
