"""Where the shipped data lives: constitutions/, pipelines/, evals/, slurm/.

In a clone (editable install) they are the top-level folders of the repo; an installed wheel carries
them under <prefix>/share/character. `CHARACTER_DATA` overrides both.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    override = os.environ.get("CHARACTER_DATA")
    if override:
        return Path(override)
    if (_REPO_ROOT / "constitutions").is_dir() and (_REPO_ROOT / "evals").is_dir():
        return _REPO_ROOT
    return Path(sys.prefix) / "share" / "character"


def data_path(*parts: str) -> Path:
    """A path inside the shipped data, e.g. data_path("evals", "traits.jsonl")."""
    return data_root().joinpath(*parts)


def character_home() -> Path:
    """Cache for prepared models and other derived files (`CHARACTER_HOME`, default ~/.cache/character)."""
    return Path(os.environ.get("CHARACTER_HOME", Path.home() / ".cache" / "character"))
