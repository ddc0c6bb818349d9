"""One config loader for every stage, and one way to turn a config dataclass into a command (`command`).

Each stage declares a dataclass whose fields carry a `help` string in their metadata. Values come from, in
order of precedence: command-line flags, a YAML file (`--config x.yaml`), the dataclass defaults. Unknown keys
are errors with a "did you mean" suggestion; values are converted to the field types (python-fire guesses types
from content: "1e3" arrives as a float, "2024-01-01" as a number; `command` reads the typed text back with
`argv_values`, the one function that scans the command line).
Every problem is collected and reported at once.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import inspect
import json
import keyword
import sys
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from character.errors import CharacterError

C = TypeVar("C")


def field(default: Any = dataclasses.MISSING, *, help: str, hash: bool = True, factory: Any = None,
          split: bool = True):
    """A dataclass field with a help string. `hash=False` keeps it out of the config hash: for settings that do
    not change what a run writes (paths, verbosity, batch and shard sizes, memory and caching knobs), so that
    changing them reuses finished work instead of redoing it. `split=False` (list fields): a flag value is one
    item even if it holds commas (`--set stages.eval.suites=[a,b]`); the flag is repeated to give several."""
    meta = {"help": help, "hash": hash, "split": split}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def suggest(name: str, options) -> str:
    """' (did you mean X?)' or ''."""
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _convert(value: Any, tp: Any, key: str) -> Any:
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
                return _convert(value, a, key)
            except (TypeError, ValueError) as e:
                last = e
        raise ValueError(str(last))
    if origin is typing.Literal:
        v = _convert(value, type(args[0]), key)
        if v not in args:
            raise ValueError(f"must be one of {', '.join(map(str, args))}{suggest(str(v), map(str, args))}")
        return v
    if tp is Any:
        return value
    if tp is str:
        if isinstance(value, str):
            return value
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
            return tuple(_convert(v, a, key) for v, a in zip(value, args))
        elem = args[0] if args else Any
        out = [_convert(v, elem, key) for v in value]
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


def build(cls: type[C], values: dict | None = None, *, where: str = "config") -> C:
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
            kwargs[k] = _convert(value, hints[k], k)
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


def load(cls: type[C], config: str | Path | dict | None = None, **overrides) -> C:
    """YAML file (or mapping) first, then overrides on top."""
    if isinstance(config, dict):
        values, where = dict(config), "config"
    elif config:
        values, where = read_yaml(config), str(config)
    else:
        values, where = {}, "options"
    values.update({k: v for k, v in overrides.items()})
    return build(cls, values, where=where)


def to_dict(cfg) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def config_hash(cfg, exclude: tuple[str, ...] = ()) -> str:
    """sha256 over the fields that change results (not paths or verbosity, nor the `exclude`d ones)."""
    kept = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)
            if f.metadata.get("hash", True) and f.name not in exclude}
    blob = json.dumps(kept, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]




# ---- commands ------------------------------------------------------------------------------------------
def argv_values(flag: str, argv: list[str] | None = None) -> list[str]:
    """Every value typed for `--flag` (or `--fl-ag`) on the command line, in order, as text.

    Fire keeps only the last of a repeated flag and guesses types from content ("1e3" becomes 1000.0), so the
    command wrapper reads the typed text back from here: the one place that scans argv.
    """
    names = {f"--{flag}", f"--{flag.replace('_', '-')}"}
    argv = sys.argv[1:] if argv is None else argv
    found = []
    for i, tok in enumerate(argv):
        head, eq, tail = tok.partition("=")
        if head in names:
            if eq:
                found.append(tail)
            elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                found.append(argv[i + 1])
    return found


def _base_type(tp: Any) -> Any:
    """`str | None` -> str; `list[str] | None` -> list[str]."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return inner[0] if len(inner) == 1 else tp
    return tp


def _typed_text(flag: str, value: Any, tp: Any, split: bool) -> Any:
    """The flag's value as typed, for text and list fields; fire's parse for the others."""
    raw = argv_values(flag)
    if not raw:
        return value
    tp = _base_type(tp)
    origin = typing.get_origin(tp)
    if origin is list or tp is list:
        return [piece.strip() for v in raw for piece in (v.split(",") if split else [v]) if piece.strip()]
    if tp is str or (origin is typing.Literal and all(isinstance(a, str) for a in typing.get_args(tp))):
        return raw[-1]
    return value


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else None


def command(cls: type, run, summary: str, *, positional: tuple[str, ...] | str = (), config: str | None = "config",
            config_help: str = "a YAML file with any of the options below (flags override it)",
            config_required: bool = False, nested: dict[str, type] | None = None,
            aliases: dict[str, str] | None = None, hidden: tuple[str, ...] = (), loader=None):
    """A fire command whose signature and --help list the fields of `cls`; `run(cfg)` does the work.

    positional: fields given as positional arguments, in order (`character eval SUITE`).
    config: the name of the YAML-file argument (None: the command has none); `config_required` makes it the
        first positional argument (`character run PIPELINE.yaml`).
    nested: {field: dataclass}: that dataclass's fields are flags too, gathered into a dict under `field`
        (`character slurm submit --partition gpu` -> `settings={"partition": "gpu"}`).
    aliases: {flag: field} for flags named otherwise than their field (`--from` -> `from_stage`).
    hidden: fields that only a YAML file sets (mappings such as a pipeline's `stages:`).
    loader: `loader(config_file, **values) -> cfg`; default: `load(cls, config_file, **values)`.

    A list field takes a flag repeated (`--adapter A --adapter B`) or comma-separated values; text fields get the
    text as typed. An unknown flag is an error naming the closest known one.
    """
    positional = (positional,) if isinstance(positional, str) else tuple(positional)
    aliases = dict(aliases or {})
    nested = dict(nested or {})
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and f.name not in nested}
    for ncls in nested.values():
        fields.update({f.name: f for f in dataclasses.fields(ncls) if f.init})
    nested_of = {f.name: key for key, ncls in nested.items() for f in dataclasses.fields(ncls)}
    hints = typing.get_type_hints(cls)
    for ncls in nested.values():
        hints.update(typing.get_type_hints(ncls))
    flag_of = {v: k for k, v in aliases.items()}
    own = set(getattr(cls, "__annotations__", {}))
    # the command's own options first, then those it inherits (engine and sampling settings)
    shown = [f for f in fields.values() if f.name not in hidden and f.name not in positional]
    shown.sort(key=lambda f: f.name not in own and f.name not in nested_of)

    P = inspect.Parameter
    params, lines, also = [], ["Args:"], []
    for name in ((config,) if config and config_required else ()) + positional:
        params.append(P(name, P.POSITIONAL_OR_KEYWORD))
        text = config_help if name == config else fields[name].metadata.get("help", "")
        lines.append(f"    {name}: {text}")
    if config and not config_required:
        params.append(P(config, P.POSITIONAL_OR_KEYWORD, default=None))
        lines.append(f"    {config}: {config_help}")
    for f in shown:
        flag = flag_of.get(f.name, f.name)
        default = _default(f)
        if flag.isidentifier() and not keyword.iskeyword(flag):  # fire prints the default of a parameter
            params.append(P(flag, P.KEYWORD_ONLY, default=default))
            lines.append(f"    {flag}: {f.metadata.get('help', '')}")
        else:  # not a Python name: fire lists it nowhere, so the description does
            also.append(f"--{flag}: {f.metadata.get('help', '')} (default: {default!r})")
    params.append(P("flags", P.VAR_KEYWORD))
    signature = inspect.Signature(params)
    known = {flag_of.get(f.name, f.name) for f in shown}
    load_cfg = loader or (lambda file, **values: load(cls, file, **values))

    def cmd(*args, **kwargs):
        try:
            bound = signature.bind(*args, **kwargs).arguments
        except TypeError as e:
            raise CharacterError(f"{e}; see --help") from None
        given = {**{k: v for k, v in bound.items() if k != "flags"}, **bound.get("flags", {})}
        file = given.pop(config, None) if config else None
        values: dict[str, Any] = {}
        for flag, value in given.items():
            flag = flag.replace("-", "_")
            name = aliases.get(flag, flag)
            if name in positional:
                if _base_type(hints[name]) is str and not isinstance(value, str):
                    # fire reads `a,b` as a tuple and `7` as a number; a text argument keeps what was typed
                    value = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
                values[name] = value
                continue
            if flag not in known:
                raise CharacterError(f"unknown option --{flag}{suggest(flag, known)}; see --help")
            value = _typed_text(flag, value, hints[name], fields[name].metadata.get("split", True))
            if name in nested_of:
                values.setdefault(nested_of[name], {})[name] = value
            else:
                values[name] = value
        run(load_cfg(file, **values))  # its return value is for library callers; fire would print it

    cmd.__signature__ = signature
    cmd.__doc__ = "\n".join([summary, "", *(["Also: " + "; ".join(also), ""] if also else []), *lines])
    cmd.__name__ = cls.__name__
    return cmd
