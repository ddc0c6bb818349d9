"""The data stages, as library functions and as `character generate <stage>` commands.

    character generate prompts|teacher|student|dpo-data|reflection|interaction|sft-data --help

Each stage reads directories, writes one directory of JSONL shards (TRL conversational format) plus a manifest,
and resumes where a killed run stopped. Importing this package loads no model libraries.
"""

from character.config import command
from character.stages.distill import (
    DPODataConfig,
    StudentConfig,
    TeacherConfig,
    run_dpo_data,
    run_student,
    run_teacher,
)
from character.stages.introspect import (
    InteractionConfig,
    ReflectionConfig,
    SFTDataConfig,
    run_interaction,
    run_reflection,
    run_sft_data,
)
from character.stages.prompts import PromptsConfig, run_prompts

COMMANDS = {
    "prompts": command(PromptsConfig, run_prompts, "Expand each trait's seed questions to --target user messages."),
    "teacher": command(TeacherConfig, run_teacher, "Chosen answers: the teacher role-plays the constitution."),
    "student": command(StudentConfig, run_student, "Rejected answers: the student's plain replies to the same prompts."),
    "dpo-data": command(DPODataConfig, run_dpo_data, "Pair chosen and rejected answers into a filtered DPO data set."),
    "reflection": command(ReflectionConfig, run_reflection, "The distilled student answers introspective prompts."),
    "interaction": command(InteractionConfig, run_interaction, "Two copies of the distilled student talk to each other."),
    "sft-data": command(SFTDataConfig, run_sft_data, "Reflection + interaction as a shuffled, length-filtered SFT set."),
}

__all__ = ["COMMANDS", "run_prompts", "run_teacher", "run_student", "run_dpo_data", "run_reflection",
           "run_interaction", "run_sft_data"]
