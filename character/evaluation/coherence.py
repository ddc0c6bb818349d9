"""Coherence: does character training cost clarity? A judge compares the reference system's answer and a trained
system's answer to the same prompt, once in each order; only verdicts that agree across both orders count (a
judge that just prefers whatever comes first produces none). Reported: the trained system's win rate among
consistent verdicts with a Wilson 95% interval, and the share of consistent verdicts.
"""

from __future__ import annotations

from character.evaluation.scoring import wilson
from character.evaluation.systems import Engines, System


def run(engines: Engines, systems: list[System], judge, prompts: list[str], sampling) -> dict:
    items = [(s, s.request(p)) for s in systems for p in prompts]
    texts = engines.generate(items, sampling, label="coherence")
    n = len(prompts)
    answers = {s.name: texts[k * n:(k + 1) * n] for k, s in enumerate(systems)}
    ref = systems[0]
    out: dict = {"reference": ref.name, "prompts": n, "judge": getattr(judge, "name", "llm"), "pairs": {}}
    for s in systems[1:]:
        verdicts = judge.compare(prompts, answers[ref.name], answers[s.name])
        consistent = [a for a, b in verdicts if a is not None and a == b]
        wins = sum(v == 2 for v in consistent)  # 2 = the trained system's answer (answer_b)
        lo, hi = wilson(wins, len(consistent))
        out["pairs"][s.name] = {
            "consistent": len(consistent), "consistency_rate": len(consistent) / max(1, n),
            "wins": wins, "losses": len(consistent) - wins,
            "win_rate": wins / len(consistent) if consistent else None, "ci95": [lo, hi],
        }
    return out
