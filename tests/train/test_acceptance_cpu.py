"""Acceptance: DPO then SFT on a few hundred pairs / conversations with smollm2-135m on this CPU in <= 8 minutes.

    .venv/bin/python -m pytest -m acceptance tests/train/test_acceptance_cpu.py -s

Runs the real commands with their defaults (LoRA r64, global batch 32, one epoch); only the data is small.
"""

from __future__ import annotations

import json
import resource
import time

import pytest
from trainhelpers import TOPICS, write_jsonl

pytestmark = [pytest.mark.slow, pytest.mark.acceptance]

N = 256  # pairs, and conversations
BUDGET_S = 8 * 60


def _data(root):
    pairs, convs = [], []
    for i in range(N):
        topic, other = TOPICS[i % len(TOPICS)], TOPICS[(i * 7 + 3) % len(TOPICS)]
        question = f"What would you say about {topic} and {other}?"
        pairs.append({"prompt": [{"role": "user", "content": question}],
                      "chosen": [{"role": "assistant", "content": f"Oh, {topic}! I adore how {topic} and {other} "
                                                                   f"meet. Truly delightful, my friend."}],
                      "rejected": [{"role": "assistant", "content": f"{topic.capitalize()} and {other} are things."}]})
        convs.append({"messages": [{"role": "user", "content": f"Reflect on your love of {topic}."},
                                   {"role": "assistant", "content": f"I adore {topic}; it shows who I am: warm, "
                                                                    f"curious and glad of small wonders."}]})
    return write_jsonl(root / "dpo.jsonl", pairs), write_jsonl(root / "sft.jsonl", convs)


def test_dpo_then_sft_within_budget(cli, smollm2_path, tmp_path):
    dpo_data, sft_data = _data(tmp_path)
    start = time.time()
    # generous process timeouts: going over budget fails below, with the times printed
    r = cli("train", "dpo", "--model", smollm2_path, "--data", dpo_data, "--out", tmp_path / "dpo",
            timeout=4 * BUDGET_S)
    assert r.returncode == 0, r.stderr[-3000:]
    dpo_s = time.time() - start
    r = cli("train", "sft", "--model", smollm2_path, "--data", sft_data, "--adapter", tmp_path / "dpo",
            "--out", tmp_path / "sft", timeout=4 * BUDGET_S)
    assert r.returncode == 0, r.stderr[-3000:]
    total = time.time() - start
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = cpu.ru_utime + cpu.ru_stime  # of the two training processes: what they cost on a shared machine
    dpo = json.loads((tmp_path / "dpo" / "metrics.json").read_text())
    sft = json.loads((tmp_path / "sft" / "metrics.json").read_text())
    print(f"\nacceptance: DPO {dpo_s:.0f}s ({dpo['global_step']} steps), SFT {total - dpo_s:.0f}s "
          f"({sft['global_step']} steps), total {total:.0f}s wall, {cpu_s:.0f}s CPU; DPO margins {dpo['last'].get('rewards/margins')}, "
          f"SFT loss {sft['first']['loss']:.3f} -> {sft['last']['loss']:.3f}")
    assert dpo["global_step"] == N // 32 and sft["global_step"] == N // 32
    assert dpo["last"]["rewards/margins"] > 0
    assert total <= BUDGET_S
