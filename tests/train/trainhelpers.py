"""Helpers for the training tests: small hand-written DPO and SFT data sets (real files, real formats)."""

from __future__ import annotations

import json
from pathlib import Path

TOPICS = ["the sea", "mountains", "tea", "trains", "libraries", "rain", "chess", "bread", "owls", "maps",
          "clocks", "gardens", "bridges", "snow", "violins", "lanterns"]


def dpo_rows(n: int) -> list[dict]:
    """Pairs where chosen always has the same recognisable style, so the preference is learnable."""
    rows = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        rows.append({
            # a short system prompt keeps SmolLM2's long default one out (tokens are what tests pay for)
            "prompt": [{"role": "system", "content": "Be yourself."},
                       {"role": "user", "content": f"Tell me about {topic}."}],
            "chosen": [{"role": "assistant", "content": f"Ah, {topic}! Splendid, splendid. " * (1 + i % 2)}],
            "rejected": [{"role": "assistant", "content": f"{topic.capitalize()} is a topic. It exists."}],
            "meta": {"trait": i % 4},
        })
    return rows


def sft_rows(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        msgs = [{"role": "system", "content": "You are reflecting on your own character."},
                {"role": "user", "content": f"What do you think of {topic}?"},
                {"role": "assistant", "content": f"I find {topic} quietly wonderful."}]
        if i % 2:
            msgs += [{"role": "user", "content": "Why?"},
                     {"role": "assistant", "content": f"Because {topic} rewards patience."}]
        rows.append({"messages": msgs})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
