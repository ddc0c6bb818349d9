"""Activation steering: persona vectors, the training-free baseline, and persona monitoring.

    character steer build --constitution poeticism --model smollm2-135m --out runs/steer/poeticism
    character steer project --model smollm2-135m --adapter runs/demo/poeticism/merge --vector runs/steer/poeticism
    character eval all --model smollm2-135m --adapter A --constitution poeticism --steer runs/steer/poeticism

The Open Character Training paper compares trained characters with a system prompt and with activation steering
(repeng control vectors); persona vectors (Chen et al. 2025) also monitor a model by projecting its activations on
such a vector. Modules: build.py (the command and the pipeline's `steer` stage), activations.py (reading the
residual stream over answers), vectors.py (mean difference, PCA, separation, files), sweep.py (layer and strength),
project.py (monitoring), evalsuite.py (steered systems and the comparison in `character eval`); the hooks are
character/engine/steering.py. Imports nothing heavy.
"""

from __future__ import annotations

from character.config import command
from character.steer.build import SteerConfig, run_steer
from character.steer.project import ProjectConfig, run_project

COMMANDS = {
    "build": command(SteerConfig, run_steer, "Build a persona vector per layer from contrastive activations and "
                     "choose its layer and strength by a sweep on held-out prompts."),
    "project": command(ProjectConfig, run_project, "Project each system's activations on a persona vector over "
                       "held-out evaluation prompts (monitoring), with bootstrap intervals."),
}

__all__ = ["COMMANDS", "ProjectConfig", "SteerConfig", "run_project", "run_steer"]
