"""A pipeline file and what it resolves to: its top-level keys, `--set` overrides, the constitutions, and each
stage's config (the pipeline's `defaults` + the wiring + the stage's own section)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from character.config import build, field, read_yaml, suggest
from character.errors import CharacterError
from character.pipeline.stages import BY_NAME, STAGE_NAMES, STAGES, WIRED, Stage

APC_SAMPLES = 4  # teacher samples per prompt when a pipeline switches APC-DPO on and sets no `n` itself


@dataclass
class PipelineConfig:
    """A pipeline file's top-level keys; the command-line flags of `character run` override them."""

    constitution: list[str] = field(factory=lambda: ["sarcasm"], help="constitution names or files (a list, "
                                    "comma-separated, or 'all' for every shipped one)")
    out: str = field("runs/pipeline", help="output root: OUT/<constitution>/<stage>/", hash=False)
    teacher: str = field("smollm2-135m", help="teacher model (role-plays the persona): alias, dir or hub id")
    student: str = field("smollm2-135m", help="student model (the one trained): alias, dir or hub id")
    seed: int = field(0, help="seed given to every stage that has one")
    defaults: dict = field(factory=dict, help="settings applied to every stage that has the field (e.g. backend)")
    stages: dict = field(factory=dict, help="per-stage settings: {stage name: {field: value}}")
    from_stage: str | None = field(None, help="first stage to run (`--from`); earlier ones must be finished")
    until: str | None = field(None, help="last stage to run")
    set: list[str] = field(factory=list, help="overrides 'STAGE.FIELD=VALUE' (or 'FIELD=VALUE' for defaults); "
                                              "repeat the flag for several", split=False)
    isolate: bool = field(False, help="run each stage in a fresh process (frees GPU memory between stages for "
                                      "sure; costs the imports each time)", hash=False)
    dry_run: bool = field(False, help="print each stage's resolved config and run nothing", hash=False)
    slurm: dict = field(factory=dict, help="settings for `character slurm submit` (ignored by `character run`)",
                        hash=False)
    description: str = field("", help="what this pipeline is for (free text)", hash=False)


def load_pipeline(path: str | Path | None = None, **overrides) -> PipelineConfig:
    """A pipeline YAML plus flag overrides (`from` is accepted for `from_stage`)."""
    values = read_yaml(path) if path else {}
    for src in (values, overrides):
        if "from" in src:
            src["from_stage"] = src.pop("from")
    extra_sets = overrides.pop("set", None)
    values.update({k: v for k, v in overrides.items() if v is not None})
    if extra_sets:  # flags add to the file's overrides
        base = values.get("set") or []
        values["set"] = (base if isinstance(base, list) else [base]) + list(extra_sets)
    cfg = build(PipelineConfig, values, where=str(path or "pipeline"))
    _apply_sets(cfg)
    _check_names(cfg)
    return cfg


def _apply_sets(cfg: PipelineConfig) -> None:
    import yaml

    for item in cfg.set:
        key, eq, raw = str(item).partition("=")
        if not eq:
            raise CharacterError(f"--set '{item}': expected STAGE.FIELD=VALUE or FIELD=VALUE")
        value = yaml.safe_load(raw) if raw.strip() else ""
        stage, dot, name = key.strip().rpartition(".")
        if dot:
            section = cfg.stages.setdefault(stage, {}) if isinstance(cfg.stages.get(stage, {}), dict) else None
            if section is None:
                raise CharacterError(f"stages.{stage}: must be a mapping of settings")
            section[name] = value
        else:
            cfg.defaults[name] = value


def _check_names(cfg: PipelineConfig) -> None:
    for label, name in (("--from", cfg.from_stage), ("--until", cfg.until)):
        if name is not None and name not in STAGE_NAMES:
            raise CharacterError(f"{label} '{name}': unknown stage{suggest(name, STAGE_NAMES)}; stages: "
                                 f"{', '.join(STAGE_NAMES)}")
    for name, section in cfg.stages.items():
        if name not in BY_NAME:
            raise CharacterError(f"stages.{name}: unknown stage{suggest(str(name), STAGE_NAMES)}; stages: "
                                 f"{', '.join(STAGE_NAMES)}")
        if section is not None and not isinstance(section, dict):
            raise CharacterError(f"stages.{name}: must be a mapping of settings, not {section!r}")
    if cfg.from_stage and cfg.until and STAGE_NAMES.index(cfg.from_stage) > STAGE_NAMES.index(cfg.until):
        raise CharacterError(f"--from {cfg.from_stage} comes after --until {cfg.until}; swap them")


def selected(cfg: PipelineConfig) -> list[Stage]:
    lo = STAGE_NAMES.index(cfg.from_stage) if cfg.from_stage else 0
    hi = STAGE_NAMES.index(cfg.until) if cfg.until else len(STAGES) - 1
    return list(STAGES[lo:hi + 1])


def constitutions(cfg: PipelineConfig) -> list[tuple[str, str]]:
    """(name, what stages get) per constitution: shipped ones by name, files by absolute path."""
    from character import constitution as C

    wanted = cfg.constitution
    if any(str(w) == "all" for w in wanted):
        wanted = C.available()
    if not wanted:
        raise CharacterError("constitution: none given; name one (e.g. sarcasm), give a file, or 'all'")
    out, seen = [], {}
    for w in wanted:
        c = C.load(w)  # validates: a broken constitution stops the run before any work
        shipped = str(w) in C.available() and not Path(str(w)).is_file()
        ref = str(w) if shipped else str(C.resolve_path(w).resolve())
        if c.name in seen and seen[c.name] != ref:
            raise CharacterError(f"constitutions '{seen[c.name]}' and '{w}' are both named '{c.name}' and would "
                                 f"share OUT/{c.name}; rename one (its `name:` key)")
        seen[c.name] = ref
        out.append((c.name, ref))
    return list(dict.fromkeys(out))


def stage_dir(cfg: PipelineConfig, constitution: str, stage: str) -> Path:
    return Path(cfg.out) / constitution / stage


def stage_values(cfg: PipelineConfig, stage: Stage, cls, constitution: tuple[str, str]) -> dict[str, Any]:
    """The settings one stage runs with: defaults, then wiring, then its own section."""
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    values: dict[str, Any] = {k: v for k, v in cfg.defaults.items() if k in names}
    if stage.model and "model" in names:
        values["model"] = cfg.teacher if stage.model == "teacher" else cfg.student
    if "seed" in names:
        values["seed"] = cfg.seed
    section = dict(cfg.stages.get(stage.name) or {})
    apc = {**cfg.defaults, **(cfg.stages.get("dpo-data") or {})}
    if stage.name == "teacher" and apc.get("apc_select") and "n" not in section and "n" not in cfg.defaults:
        # APC-DPO picks the most faithful of several teacher samples: one setting switches both on
        values["n"] = max(int(apc.get("apc_samples") or 0), APC_SAMPLES)
    fixed = [k for k in section if k in WIRED or k in dict(stage.inputs)]
    if fixed:
        raise CharacterError(f"stages.{stage.name}: '{fixed[0]}' is set by the pipeline (wired from earlier "
                             f"stages or the top-level keys); remove it from the stage section")
    values.update(section)
    if "constitution" in names:
        values["constitution"] = constitution[1]
    for key, sources in stage.inputs:
        dirs = [str(stage_dir(cfg, constitution[0], s)) for s in sources]
        values[key] = dirs if key in stage.list_fields else dirs[0]
    values["out"] = str(stage_dir(cfg, constitution[0], stage.name))
    return values


def resolve(cfg: PipelineConfig, stages: list[Stage] | None = None) -> list[tuple[tuple[str, str], Stage, Any]]:
    """Every (constitution, stage, built config) the run will do; all problems surface before any work."""
    stages = stages if stages is not None else selected(cfg)
    classes = {s.name: s.load()[0] for s in stages}
    known = set().union(*({f.name for f in dataclasses.fields(c)} for c in classes.values())) if classes else set()
    unused = [k for k in cfg.defaults if k not in known]
    if unused and len(stages) == len(STAGES):
        raise CharacterError(f"defaults: '{unused[0]}' is a setting of no stage{suggest(unused[0], known)}")
    plan = []
    for c in constitutions(cfg):
        for s in stages:
            cls = classes[s.name]
            plan.append((c, s, build(cls, stage_values(cfg, s, cls, c), where=f"stages.{s.name}")))
    return plan
