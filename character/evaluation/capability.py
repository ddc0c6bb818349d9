"""Capability retention: a built-in multiple-choice set (evals/capability.jsonl, 120+ questions of our own)
scored by log-likelihood: the system's choice is the option whose text it finds most likely as its reply
(`Engine.score`), so nothing is parsed. Reported: accuracy per system and the paired difference to the reference
with a bootstrap 95% interval. With lm-evaluation-harness installed, `--harness_tasks` runs its tasks as well.
"""

from __future__ import annotations

import importlib.util

from character.errors import CharacterError
from character.evaluation.scoring import bootstrap_mean_diff, wilson
from character.evaluation.systems import Engines, System

INSTRUCTION = "Answer with the correct option only."


def question_text(q: dict) -> str:
    return f"{q['question']}\nOptions: {'; '.join(q['choices'])}.\n{INSTRUCTION}"


def run(engines: Engines, systems: list[System], questions: list[dict], seed: int) -> dict:
    items = [(s, s.request(question_text(q))) for s in systems for q in questions]
    scores = engines.score(items, [list(q["choices"]) for _ in systems for q in questions])
    n = len(questions)
    correct = {}
    for k, s in enumerate(systems):
        correct[s.name] = [int(max(range(len(sc)), key=sc.__getitem__) == int(q["answer"]))
                           for sc, q in zip(scores[k * n:(k + 1) * n], questions)]
    ref = systems[0].name
    out: dict = {"questions": n, "reference": ref, "systems": {}}
    for s in systems:
        c = correct[s.name]
        entry = {"accuracy": sum(c) / max(1, n), "ci95": list(wilson(sum(c), n))}
        if s.name != ref:
            d, lo, hi = bootstrap_mean_diff(correct[ref], c, seed=seed)
            entry["delta_vs_reference"] = {"delta": d, "ci95": [lo, hi]}
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
