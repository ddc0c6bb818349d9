"""One config loader for every stage.

Each stage declares a dataclass whose fields carry a `help` string in their metadata. Values come from, in
order of precedence: command-line flags, a YAML file (`--config x.yaml`), the dataclass defaults. Unknown keys
are errors with a "did you mean" suggestion; values are converted to the field types (python-fire guesses types
from content: "1e3" arrives as a float, "2024-01-01" as a number; we convert back using the raw argv token).
Every problem is collected and reported at once.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import inspect
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from character.errors import CharacterError

C = TypeVar("C")


def field(default: Any = dataclasses.MISSING, *, help: str, hash: bool = True, factory: Any = None):
    """A dataclass field with a help string. `hash=False` keeps it out of the config hash: for settings that do
    not change what a run writes (paths, verbosity, batch and shard sizes, memory and caching knobs), so that
    changing them reuses finished work instead of redoing it."""
    meta = {"help": help, "hash": hash}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def suggest(name: str, options) -> str:
    """' (did you mean X?)' or ''."""
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _raw_flag_value(key: str) -> str | None:
    """The literal text given for --key on the command line, before fire's type guessing."""
    names = {f"--{key}", f"--{key.replace('_', '-')}"}
    argv = sys.argv[1:]
    for i, tok in enumerate(argv):
        head, eq, tail = tok.partition("=")
        if head in names:
            if eq:
                return tail
            if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                return argv[i + 1]
    return None


def _convert(value: Any, tp: Any, key: str, from_cli: bool) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        last: Exception | None = None
        for a in inner:
            try:
                return _convert(value, a, key, from_cli)
            except (TypeError, ValueError) as e:
                last = e
        raise ValueError(str(last))
    if origin is typing.Literal:
        v = _convert(value, type(args[0]), key, from_cli)
        if v not in args:
            raise ValueError(f"must be one of {', '.join(map(str, args))}{suggest(str(v), map(str, args))}")
        return v
    if tp is Any:
        return value
    if tp is str:
        if isinstance(value, str):
            return value
        raw = _raw_flag_value(key) if from_cli else None
        if raw is not None:
            return raw
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ValueError(f"expected text, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "no", "0", "off"):
            return False
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ValueError(f"expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ValueError(f"expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                f = float(value)
            except ValueError:
                raise ValueError(f"expected an integer, got {value!r}") from None
            if f.is_integer():
                return int(f)
        raise ValueError(f"expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ValueError(f"expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"expected a number, got {value!r}") from None
    if origin in (list, tuple) or tp in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()] if value.strip() else []
        if not isinstance(value, (list, tuple)):
            value = [value]
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ValueError(f"expected {len(args)} values, got {len(value)}")
            return tuple(_convert(v, a, key, False) for v, a in zip(value, args))
        elem = args[0] if args else Any
        out = [_convert(v, elem, key, False) for v in value]
        return tuple(out) if origin is tuple else out
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ValueError(f"expected a mapping, got {value!r}")
        return dict(value)
    return value


def read_yaml(path: str | Path) -> dict:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise CharacterError(f"{p}: config file not found; check the path")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise CharacterError(f"{p}:{where} is not valid YAML ({getattr(e, 'problem', e)}); fix the syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CharacterError(f"{p}: a config file must be a mapping of keys to values")
    return data


def build(cls: type[C], values: dict | None = None, *, where: str = "config", from_cli: bool = False) -> C:
    """Make `cls` from a mapping, converting types; every problem is reported at once."""
    values = dict(values or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    problems = []
    kwargs = {}
    for key, value in values.items():
        k = key.replace("-", "_")
        if k not in fields:
            problems.append(f"unknown key '{key}'{suggest(k, fields)}")
            continue
        try:
            kwargs[k] = _convert(value, hints[k], k, from_cli)
        except (TypeError, ValueError) as e:
            problems.append(f"'{key}': {e}")
    for name, f in fields.items():
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            problems.append(f"'{name}' is required ({f.metadata.get('help', '')})")
    if problems:
        raise CharacterError(f"{where}: " + "; ".join(problems))
    try:
        return cls(**kwargs)
    except ValueError as e:  # __post_init__ rejects contradictory settings with ValueError
        raise CharacterError(f"{where}: {e}") from None


def load(cls: type[C], config: str | Path | dict | None = None, from_cli: bool = False, **overrides) -> C:
    """YAML file (or mapping) first, then overrides on top."""
    if isinstance(config, dict):
        values, where = dict(config), "config"
    elif config:
        values, where = read_yaml(config), str(config)
    else:
        values, where = {}, "options"
    values.update({k: v for k, v in overrides.items()})
    return build(cls, values, where=where, from_cli=from_cli)


def to_dict(cfg) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def config_hash(cfg) -> str:
    """sha256 over the fields that change results (not paths or verbosity)."""
    kept = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.metadata.get("hash", True)}
    blob = json.dumps(kept, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def command(cls: type, run, summary: str):
    """A fire command whose signature and --help list the dataclass fields.

    `run(cfg)` does the work. The command takes `--config FILE.yaml` and one flag per field.
    """
    params = [inspect.Parameter("config", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None)]
    lines = [summary, "", "Args:", "    config: a YAML file with any of the options below (flags override it)"]
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default))
        lines.append(f"    {f.name}: {f.metadata.get('help', '')} (default: {default!r})")

    def cmd(config=None, **kwargs):
        return run(load(cls, config, from_cli=True, **kwargs))

    cmd.__signature__ = inspect.Signature(params)
    cmd.__doc__ = "\n".join(lines)
    cmd.__name__ = cls.__name__
    return cmd

