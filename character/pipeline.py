"""`character run PIPELINE.yaml`: the whole recipe, stage by stage, skipping what is already done.

    character run pipelines/demo.yaml
    character run pipelines/demo.yaml --constitution path/to/mine.yaml --out runs/mine
    character run pipelines/demo.yaml --constitution sarcasm,humor --from train-dpo --until merge
    character run pipelines/demo.yaml --set train-dpo.beta=0.2      # one stage setting, without editing the file
    character run pipelines/demo.yaml --dry_run                    # print every stage's resolved config

Stages, in order: prompts, teacher, student, dpo-data, train-dpo, reflection, interaction, sft-data, train-sft,
merge, eval. Each writes `OUT/<constitution>/<stage>/` and reads the directories of the stages before it. A stage
config is: the pipeline's `defaults` (for the stages that have such a field) + the wiring (model, constitution,
seed, input and output directories) + the stage's own section under `stages:`. Each stage function skips itself
when its output manifest matches its config hash and its inputs' hashes; so changing one stage's settings reruns
that stage and, because its output hash changes, everything after it, and never anything before it.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from character.config import build, command, field, read_yaml, suggest, to_dict
from character.errors import CharacterError


@dataclass(frozen=True)
class Stage:
    """One step of the recipe: where its code lives and which earlier stages feed which of its fields."""

    name: str
    module: str
    config_class: str
    function: str
    kind: str  # generate | train | eval: which Slurm job runs it
    model: str | None = None  # teacher | student: which pipeline model it uses
    inputs: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (config field, earlier stages); a list field if several
    list_fields: tuple[str, ...] = ()  # fields that take a list of directories

    def load(self):
        """(config class, function), imported only now: the stage modules import their heavy parts lazily."""
        try:
            mod = importlib.import_module(self.module)
        except ModuleNotFoundError as e:
            if e.name and self.module.startswith(e.name):
                raise CharacterError(f"stage '{self.name}': module {self.module} is not installed; "
                                     f"reinstall character (`make install`)") from None
            raise
        return getattr(mod, self.config_class), getattr(mod, self.function)


STAGES: tuple[Stage, ...] = (
    Stage("prompts", "character.stages.prompts", "PromptsConfig", "run_prompts", "generate", "teacher"),
    Stage("teacher", "character.stages.distill", "TeacherConfig", "run_teacher", "generate", "teacher",
          (("prompts", ("prompts",)),)),
    Stage("student", "character.stages.distill", "StudentConfig", "run_student", "generate", "student",
          (("prompts", ("prompts",)),)),
    Stage("dpo-data", "character.stages.distill", "DPODataConfig", "run_dpo_data", "generate", None,
          (("chosen", ("teacher",)), ("rejected", ("student",)))),
    Stage("train-dpo", "character.train.dpo", "DPOTrainConfig", "train_dpo", "train", "student",
          (("data", ("dpo-data",)),)),
    Stage("reflection", "character.stages.introspect", "ReflectionConfig", "run_reflection", "generate", "student",
          (("adapter", ("train-dpo",)),)),
    Stage("interaction", "character.stages.introspect", "InteractionConfig", "run_interaction", "generate",
          "student", (("adapter", ("train-dpo",)),)),
    Stage("sft-data", "character.stages.introspect", "SFTDataConfig", "run_sft_data", "generate", None,
          (("reflection", ("reflection",)), ("interaction", ("interaction",)))),
    Stage("train-sft", "character.train.sft", "SFTTrainConfig", "train_sft", "train", "student",
          (("data", ("sft-data",)), ("adapter", ("train-dpo",)))),
    Stage("merge", "character.train.merge", "MergeConfig", "merge_adapters", "train", "student",
          (("adapters", ("train-dpo", "train-sft")),), list_fields=("adapters",)),
    Stage("eval", "character.evaluation.runner", "EvalConfig", "run_eval", "eval", "student",
          (("adapter", ("merge",)),), list_fields=("adapter",)),
)
STAGE_NAMES = tuple(s.name for s in STAGES)
BY_NAME = {s.name: s for s in STAGES}
# what the pipeline sets itself; a stage section may not
WIRED = ("out", "constitution")


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


# ---- loading -------------------------------------------------------------------------------------------
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


# ---- running -------------------------------------------------------------------------------------------
def _finished_at(path: Path) -> str | None:
    from character.artifacts import read_manifest

    m = read_manifest(path)
    return m.get("finished_at") if m and m.get("status") == "complete" else None


def _check_earlier(cfg: PipelineConfig, stages: list[Stage], names: list[str]) -> None:
    """With --from, the stages before it must have finished: their directories are the inputs."""
    first = STAGE_NAMES.index(stages[0].name)
    needed = {src for s in stages for _, srcs in s.inputs for src in srcs if STAGE_NAMES.index(src) < first}
    for c in names:
        for src in sorted(needed, key=STAGE_NAMES.index):
            if _finished_at(stage_dir(cfg, c, src)) is None:
                raise CharacterError(f"--from {stages[0].name}: stage '{src}' has no finished output in "
                                     f"{stage_dir(cfg, c, src)}; run from '{src}' (or without --from) first")


class SharedEngine:
    """One engine for consecutive generating stages with the same engine settings (the teacher's prompts and
    answers, the student's answers; reflection and interaction): a model loads once instead of per stage.

    It starts on the first request, so stages that skip themselves start nothing; it is closed before any
    other stage runs, so training never shares the GPU with an idle vLLM.
    """

    def __init__(self):
        self.config = None
        self.engine = None

    def for_stage(self, stage_cfg):
        from character.engine.base import EngineConfig, subset

        wanted = subset(stage_cfg, EngineConfig)
        if self.config != wanted:
            self.close()
            self.config = wanted
        return _Lazy(self)

    def get(self):
        if self.engine is None:
            from character.engine.base import make_engine

            self.engine = make_engine(self.config)
        return self.engine

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
        self.engine, self.config = None, None


class _Lazy:
    """What a stage receives as its engine: starts the shared one on the first call, never closes it."""

    def __init__(self, shared: SharedEngine):
        self._shared = shared
        self.config = shared.config

    def generate(self, *args, **kwargs):
        return self._shared.get().generate(*args, **kwargs)

    def score(self, *args, **kwargs):
        return self._shared.get().score(*args, **kwargs)

    def __getattr__(self, name):  # tokenizer and other backend extras
        return getattr(self._shared.get(), name)

    def close(self) -> None:
        pass


def run_stage(stage: Stage, stage_cfg, isolate: bool, shared: SharedEngine | None = None) -> None:
    if not isolate:
        import inspect

        fn = stage.load()[1]
        if shared is not None and "engine" in inspect.signature(fn).parameters and hasattr(stage_cfg, "backend"):
            fn(stage_cfg, engine=shared.for_stage(stage_cfg))
        else:
            if shared is not None:
                shared.close()
            fn(stage_cfg)
        return
    import subprocess
    import tempfile

    # a fresh interpreter: whatever the stage leaves in (GPU) memory goes away with it
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(to_dict(stage_cfg), f)
    try:
        rc = subprocess.run([sys.executable, "-m", "character.pipeline", stage.name, f.name]).returncode
    finally:
        Path(f.name).unlink(missing_ok=True)
    if rc == 2:
        raise CharacterError(f"stage '{stage.name}' stopped on the error above")
    if rc != 0:
        raise RuntimeError(f"stage '{stage.name}' failed with exit code {rc}; its output is above")


def _run_plan(cfg: PipelineConfig, plan, summary: dict, shared: SharedEngine) -> None:
    for (c, _), s, sc in plan:
        out = stage_dir(cfg, c, s.name)
        before = _finished_at(out)
        print(f"[{c}] {s.name} -> {out}", flush=True)
        t = time.time()
        run_stage(s, sc, cfg.isolate, shared)
        after = _finished_at(out)
        took = time.time() - t
        status = "skipped (up to date)" if before is not None and before == after else f"done in {took:.0f} s"
        print(f"[{c}] {s.name}: {status}", flush=True)
        summary.setdefault(c, {})[s.name] = {"status": "skipped" if status.startswith("skipped") else "ran",
                                             "seconds": round(took, 1), "out": str(out)}


def run_pipeline(cfg: PipelineConfig) -> Path:
    from character.artifacts import atomic_write_json

    stages = selected(cfg)
    plan = resolve(cfg, stages)
    names = list(dict.fromkeys(c[0] for c, _, _ in plan))
    if cfg.dry_run:
        import yaml

        for (c, _), s, sc in plan:
            print(f"# {c} / {s.name}  ({s.module}.{s.function})")
            print(yaml.safe_dump(to_dict(sc), sort_keys=False).rstrip() + "\n")
        return Path(cfg.out)
    _check_earlier(cfg, stages, names)
    summary: dict[str, dict] = {}
    t_all = time.time()
    shared = SharedEngine()
    try:
        _run_plan(cfg, plan, summary, shared)
    finally:
        shared.close()
    print(f"pipeline finished in {time.time() - t_all:.0f} s")
    for c in names:
        record = Path(cfg.out) / c / "pipeline.json"
        previous = json.loads(record.read_text()) if record.is_file() else {}
        atomic_write_json(record, {"stages": {**previous.get("stages", {}), **summary[c]},
                                   "pipeline": to_dict(cfg)})
        ran = [n for n, v in summary[c].items() if v["status"] == "ran"]
        print(f"[{c}] ran: {', '.join(ran) or 'nothing (all up to date)'}")
        report = stage_dir(cfg, c, "eval") / "report.md"
        if report.is_file():
            print(f"[{c}] report: {report}")
    return Path(cfg.out)


# ---- the command ---------------------------------------------------------------------------------------
COMMANDS = {"run": command(
    PipelineConfig, run_pipeline, "Run a pipeline file: every stage for every constitution, skipping finished work.",
    config="pipeline", config_required=True, config_help="the pipeline YAML (see pipelines/demo.yaml)",
    aliases={"from": "from_stage"}, hidden=("defaults", "stages", "slurm", "description"), loader=load_pipeline)}


def _child(stage_name: str, config_json: str) -> None:
    """Entry of an isolated stage: `python -m character.pipeline STAGE CONFIG.json`."""
    from character.errors import run_cli

    def go():
        stage = BY_NAME[stage_name]
        cls, fn = stage.load()
        fn(build(cls, json.loads(Path(config_json).read_text()), where=f"stages.{stage_name}"))

    run_cli(go)


if __name__ == "__main__":
    _child(*sys.argv[1:3])
