"""Capability retention: a built-in multiple-choice set (evals/capability.jsonl, 120+ questions of our own)
scored by log-likelihood: the system's choice is the option it finds most likely as its reply (`Engine.score`),
so nothing is parsed. Two readings, as lm-evaluation-harness reports them:

- `accuracy` (acc): the option with the highest summed log-probability. Every token costs log-probability, so
  this favours short options.
- `acc_norm`: the option with the highest log-probability per UTF-8 byte of its text, which removes that length
  bias (the harness's byte-normalised score; for ASCII options bytes are characters).

Each with a Wilson 95% interval, and per trained system the paired difference to the reference with a bootstrap
95% interval. With lm-evaluation-harness installed, `--harness_tasks` runs its tasks as well.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

from character.errors import CharacterError
from character.evaluation.scoring import bootstrap_mean_diff, wilson
from character.evaluation.systems import Engines, System

INSTRUCTION = "Answer with the correct option only."


def question_text(q: dict) -> str:
    return f"{q['question']}\nOptions: {'; '.join(q['choices'])}.\n{INSTRUCTION}"


def pick(scores: Sequence[float], choices: Sequence[str], per_byte: bool = False) -> int:
    """Index of the chosen option: highest summed log-prob, or (per_byte) highest log-prob per UTF-8 byte."""
    if per_byte:
        scores = [s / max(1, len(c.encode("utf-8"))) for s, c in zip(scores, choices)]
    return max(range(len(scores)), key=scores.__getitem__)


def _summary(correct: list[int], reference: list[int] | None, seed: int) -> dict:
    n = len(correct)
    out = {"accuracy": sum(correct) / max(1, n), "ci95": list(wilson(sum(correct), n))}
    if reference is not None:
        d, lo, hi = bootstrap_mean_diff(reference, correct, seed=seed)
        out["delta_vs_reference"] = {"delta": d, "ci95": [lo, hi]}
    return out


def run(engines: Engines, systems: list[System], questions: list[dict], seed: int) -> dict:
    """Per system: accuracy, ci95, delta_vs_reference (summed log-prob) and acc_norm, acc_norm_ci95,
    acc_norm_delta_vs_reference (per byte); systems[0] is the reference."""
    items = [(s, s.request(question_text(q))) for s in systems for q in questions]
    scores = engines.score(items, [list(q["choices"]) for _ in systems for q in questions])
    n = len(questions)
    correct: dict[str, dict[bool, list[int]]] = {}
    for k, s in enumerate(systems):
        mine = list(zip(scores[k * n:(k + 1) * n], questions))
        correct[s.name] = {norm: [int(pick(sc, q["choices"], norm) == int(q["answer"])) for sc, q in mine]
                           for norm in (False, True)}
    ref = systems[0].name
    out: dict = {"questions": n, "reference": ref, "systems": {}}
    for s in systems:
        is_ref = s.name == ref
        entry = _summary(correct[s.name][False], None if is_ref else correct[ref][False], seed)
        norm = _summary(correct[s.name][True], None if is_ref else correct[ref][True], seed)
        entry.update({"acc_norm": norm["accuracy"], "acc_norm_ci95": norm["ci95"]})
        if "delta_vs_reference" in norm:
            entry["acc_norm_delta_vs_reference"] = norm["delta_vs_reference"]
        out["systems"][s.name] = entry
    return out


def run_harness(systems: list[System], tasks: list[str], limit: int | None) -> dict:
    """lm-evaluation-harness tasks per system (its own HF backend, PEFT adapters via `peft=`)."""
    if importlib.util.find_spec("lm_eval") is None:
        raise CharacterError("harness_tasks: lm-evaluation-harness is not installed; `pip install lm-eval` or "
                             "leave --harness_tasks empty")
    import lm_eval

    out = {}
    for s in systems:
        args = f"pretrained={s.model}" + (f",peft={s.adapter}" if s.adapter else "")
        res = lm_eval.simple_evaluate(model="hf", model_args=args, tasks=list(tasks), limit=limit, device="cpu")
        out[s.name] = res.get("results", {})
    return out
