"""The prompts the pipeline writes to models, as data: evals/templates.yaml, overridable per pipeline.

A template is text with named `{placeholders}`, filled one way (`fill`, str.format: `{{` and `}}` are literal
braces). A pipeline (`defaults: {templates: FILE}`) or a stage flag (`--templates FILE`) points at a YAML file
with any of the shipped keys; the keys it leaves out keep the shipped text. A key that is no shipped template, or
a placeholder the stage does not fill, is an error naming the file, the key and the placeholders it may use.
"""

from __future__ import annotations

import functools
import string
from pathlib import Path

from character.artifacts import sha256_text
from character.config import suggest
from character.errors import CharacterError
from character.resources import data_path

SHIPPED = ("evals", "templates.yaml")


def _read(path: Path) -> dict[str, str]:
    from character.config import read_yaml

    data = read_yaml(path)
    bad = [k for k, v in data.items() if not isinstance(v, str)]
    if bad:
        raise CharacterError(f"{path}: template '{bad[0]}' must be text")
    return data


@functools.lru_cache(maxsize=16)
def _load(path: str | None) -> dict[str, str]:
    shipped = _read(data_path(*SHIPPED))
    if not path:
        return shipped
    own = _read(Path(path).expanduser())
    unknown = [k for k in own if k not in shipped]
    if unknown:
        raise CharacterError(f"{path}: '{unknown[0]}' is not a template{suggest(unknown[0], shipped)}; templates: "
                             f"{', '.join(shipped)}")
    return {**shipped, **own}


def load(path: str | Path | None = None) -> dict[str, str]:
    """The shipped templates with a file's overrides on top (None: the shipped ones)."""
    return dict(_load(str(path) if path else None))


def fill(templates: dict[str, str], key: str, **values) -> str:
    """Template `key` with its placeholders filled from `values`; a placeholder not among them is an error."""
    text = templates[key]
    try:
        used = {name for _, name, _, _ in string.Formatter().parse(text) if name}
    except ValueError as e:
        raise CharacterError(f"template '{key}': {e}; write {{{{ and }}}} for literal braces") from None
    missing = sorted(used - set(values))
    if missing:
        raise CharacterError(f"template '{key}' uses {{{missing[0]}}}, which is not filled here; it may use "
                             f"{', '.join('{' + v + '}' for v in values)}")
    return text.format(**values)


def digest(templates: dict[str, str], *keys: str) -> str:
    """A hash of the templates a stage uses, for its manifest's inputs: editing one reruns that stage."""
    return sha256_text("\n\0".join(f"{k}={templates[k]}" for k in keys))
