"""Evaluation of trained characters: `character eval SUITE --model BASE [--adapter PATH ...]`.

Suites: preferences (revealed trait preferences, Bradley-Terry shifts), robustness (adversarial suffixes and a
persona classifier), prefill (continuing a base model's answer), coherence (pairwise LLM judge), capability
(multiple-choice by log-likelihood), all. See runner.py for the options; modules here import nothing heavy.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys


def _repeated_flag(name: str) -> list[str] | None:
    """All values of a flag given several times (`--adapter A --adapter B`); fire would keep only one."""
    vals, argv = [], sys.argv[1:]
    for i, tok in enumerate(argv):
        head, eq, tail = tok.partition("=")
        if head in (f"--{name}", f"--{name.replace('_', '-')}"):
            if eq:
                vals.append(tail)
            elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                vals.append(argv[i + 1])
    return vals if len(vals) > 1 else None


def _make_command():
    from character.config import load
    from character.evaluation.runner import EvalConfig, run_eval
    from character.evaluation.suites import CHOICES

    params = [inspect.Parameter("suite", inspect.Parameter.POSITIONAL_OR_KEYWORD),
              inspect.Parameter("config", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None)]
    lines = ["Evaluate a base model, the base with adapters (one engine, multi-LoRA), or a merged model dir.",
             "", "Writes results.json, report.md and PNG plots into --out.", "", "Args:",
             f"    suite: {', '.join(CHOICES)}",
             "    config: a YAML file with any of the options below (flags override it)"]
    from character.engine.base import EngineConfig, Sampling

    shared = {f.name for f in dataclasses.fields(EngineConfig)} | {f.name for f in dataclasses.fields(Sampling)}
    own = [f for f in dataclasses.fields(EvalConfig) if f.name not in shared]
    # the evaluation's own options first, then model/engine and sampling settings
    for f in own + [f for f in dataclasses.fields(EvalConfig) if f.name in shared]:
        if f.name == "suite":
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default))
        lines.append(f"    {f.name}: {f.metadata.get('help', '')} (default: {default!r})")

    def eval(suite, config=None, **flags):  # noqa: A001 - the command's name on the CLI
        for name in ("adapter", "personas", "suffixes", "harness_tasks"):
            many = _repeated_flag(name)
            if many is not None:
                flags[name] = many
        run_eval(load(EvalConfig, config, from_cli=True, suite=suite, **flags))

    eval.__signature__ = inspect.Signature(params)
    eval.__doc__ = "\n".join(lines)
    return eval


COMMANDS = {"eval": _make_command()}
