"""Evaluation of trained characters: `character eval SUITE --model BASE [--adapter PATH ...]`.

Suites: preferences (revealed trait preferences, Bradley-Terry shifts), robustness (adversarial suffixes and a
persona classifier), prefill (continuing a base model's answer), coherence (pairwise LLM judge), capability
(multiple-choice by log-likelihood), all. See runner.py for the options; modules here import nothing heavy.
"""

from __future__ import annotations

from character.config import command
from character.evaluation.runner import EvalConfig, run_eval

COMMANDS = {"eval": command(
    EvalConfig, run_eval, "Evaluate a base model, the base with adapters (one engine, multi-LoRA), or a merged "
    "model dir.\n\nWrites results.json, report.md and PNG plots into --out.", positional="suite")}
