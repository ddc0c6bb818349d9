"""The recipe as a table: each stage, where its code lives, which pipeline model it uses, which earlier stages
feed which of its fields, and whether it generates with an engine. Adding a stage is one row here."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

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
    uses_engine: bool = False  # takes `engine=`: consecutive such stages with equal settings share one engine

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
    Stage("prompts", "character.stages.prompts", "PromptsConfig", "run_prompts", "generate", "teacher",
          uses_engine=True),
    Stage("teacher", "character.stages.distill", "TeacherConfig", "run_teacher", "generate", "teacher",
          (("prompts", ("prompts",)),), uses_engine=True),
    Stage("student", "character.stages.distill", "StudentConfig", "run_student", "generate", "student",
          (("prompts", ("prompts",)),), uses_engine=True),
    # optional: off unless the pipeline's `stages: {steer: {enabled: true}}`; off, it writes only a manifest saying so
    Stage("steer", "character.steer.build", "SteerStageConfig", "run_steer_stage", "generate", "student",
          (("teacher", ("teacher",)), ("student", ("student",)))),
    Stage("dpo-data", "character.stages.distill", "DPODataConfig", "run_dpo_data", "generate", None,
          (("chosen", ("teacher",)), ("rejected", ("student",)))),
    Stage("train-dpo", "character.train.dpo", "DPOTrainConfig", "train_dpo", "train", "student",
          (("data", ("dpo-data",)),)),
    Stage("reflection", "character.stages.introspect", "ReflectionConfig", "run_reflection", "generate", "student",
          (("adapter", ("train-dpo",)),), uses_engine=True),
    Stage("interaction", "character.stages.introspect", "InteractionConfig", "run_interaction", "generate",
          "student", (("adapter", ("train-dpo",)),), uses_engine=True),
    Stage("sft-data", "character.stages.introspect", "SFTDataConfig", "run_sft_data", "generate", None,
          (("reflection", ("reflection",)), ("interaction", ("interaction",)))),
    Stage("train-sft", "character.train.sft", "SFTTrainConfig", "train_sft", "train", "student",
          (("data", ("sft-data",)), ("adapter", ("train-dpo",)))),
    Stage("merge", "character.train.merge", "MergeConfig", "merge_adapters", "train", "student",
          (("adapters", ("train-dpo", "train-sft")),), list_fields=("adapters",)),
    Stage("eval", "character.evaluation.runner", "EvalConfig", "run_eval", "eval", "student",
          (("adapter", ("merge",)), ("steer", ("steer",))), list_fields=("adapter", "steer")),
)
STAGE_NAMES = tuple(s.name for s in STAGES)
BY_NAME = {s.name: s for s in STAGES}
# what the pipeline sets itself; a stage section may not
WIRED = ("out", "constitution")
