"""`character run PIPELINE.yaml`: the whole recipe, stage by stage, skipping what is already done.

    character run pipelines/demo.yaml
    character run pipelines/demo.yaml --constitution path/to/mine.yaml --out runs/mine
    character run pipelines/demo.yaml --constitution sarcasm,humor --from train-dpo --until merge
    character run pipelines/demo.yaml --set train-dpo.beta=0.2      # one stage setting, without editing the file
    character run pipelines/demo.yaml --dry_run                    # print every stage's resolved config

Stages, in order: prompts, teacher, student, steer (optional: `stages: {steer: {enabled: true}}`), dpo-data,
train-dpo, reflection, interaction, sft-data, train-sft, merge, eval. Each writes `OUT/<constitution>/<stage>/` and reads the directories of the stages before it. A stage
config is: the pipeline's `defaults` (for the stages that have such a field) + the wiring (model, constitution,
seed, input and output directories) + the stage's own section under `stages:`. Each stage function skips itself
when its output manifest matches its config hash and its inputs' hashes; so changing one stage's settings reruns
that stage and, because its output hash changes, everything after it, and never anything before it.

Modules: stages.py (the stage table), config.py (the pipeline file and each stage's resolved config), run.py
(execution, engine sharing, isolation), __main__.py (an isolated stage's process). Imports nothing heavy.
"""

from __future__ import annotations

from character.config import command
from character.pipeline.config import (
    PipelineConfig,
    constitutions,
    load_pipeline,
    resolve,
    selected,
    stage_dir,
)
from character.pipeline.run import run_pipeline, run_stage
from character.pipeline.stages import BY_NAME, STAGE_NAMES, STAGES, Stage

COMMANDS = {"run": command(
    PipelineConfig, run_pipeline, "Run a pipeline file: every stage for every constitution, skipping finished work.",
    config="pipeline", config_required=True, config_help="the pipeline YAML (see pipelines/demo.yaml)",
    aliases={"from": "from_stage"}, hidden=("defaults", "stages", "slurm", "description"), loader=load_pipeline)}

__all__ = ["BY_NAME", "COMMANDS", "STAGES", "STAGE_NAMES", "PipelineConfig", "Stage", "constitutions", "load_pipeline",
           "resolve", "run_pipeline", "run_stage", "selected", "stage_dir"]
