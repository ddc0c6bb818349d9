"""Acceptance: with smollm2-135m as teacher and student on the vllm backend, one constitution becomes a DPO data
set of at least 200 pairs in 10 minutes or less on a 2-core CPU machine.

    .venv/bin/python -m pytest tests/engine/test_acceptance_dpo200.py -m acceptance -s

The prompts, teacher and student stages share one engine (the same model plays both roles), as a pipeline does
when teacher and student are the same checkpoint; dpo-data then filters and pairs.
"""

import json
import time

import pytest

from character.config import load
from character.engine import EngineConfig, make_engine
from character.stages import run_dpo_data, run_prompts, run_student, run_teacher
from character.stages.distill import DPODataConfig, StudentConfig, TeacherConfig
from character.stages.prompts import PromptsConfig

pytestmark = [pytest.mark.slow, pytest.mark.vllm, pytest.mark.acceptance]

BUDGET_S = 600


def test_200_pairs_in_10_minutes(tmp_path, smollm2_path):
    t0 = time.time()
    eng = dict(model=smollm2_path, backend="vllm", max_model_len=2048)
    # SmolLM2-135M rambles until cut off (and dpo-data drops unfinished answers); asked for a few sentences, far more
    # of its answers finish within 256 tokens. `.venv/bin/python bench/persona_prompt.py` measures it: with the
    # numbered-traits prompt used here, 58% of role-played and 91% of plain answers stop with the hint, 25% and 39%
    # without (poeticism, 64 general prompts, float32). The 78% and 93% this comment gave before had no command.
    answer = dict(eng, constitution="sarcasm", max_tokens=256, temperature=0.7, repetition_penalty=1.1,
                  answer_hint="Answer in two to four sentences.",
                  general_prompts="builtin", general_limit=300, n=1, shard_size=128)
    with make_engine(EngineConfig(**eng)) as engine:
        p = run_prompts(load(PromptsConfig, dict(eng, constitution="sarcasm", out=str(tmp_path / "prompts"),
                                                 target=10, rounds=2, max_tokens=200)), engine=engine)
        t = run_teacher(load(TeacherConfig, dict(answer, prompts=str(p), out=str(tmp_path / "teacher"))),
                        engine=engine)
        s = run_student(load(StudentConfig, dict(answer, prompts=str(p), out=str(tmp_path / "student"))),
                        engine=engine)
    d = run_dpo_data(load(DPODataConfig, dict(chosen=str(t), rejected=str(s), out=str(tmp_path / "dpo"))))
    elapsed = time.time() - t0
    counts = json.loads((d / "manifest.json").read_text())["counts"]
    print(f"\nacceptance: {counts['pairs']} pairs in {elapsed:.0f} s; {counts}")
    assert counts["pairs"] >= 200, counts
    assert elapsed <= BUDGET_S, f"took {elapsed:.0f} s"
