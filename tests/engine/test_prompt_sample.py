"""Teacher and student answer the same general prompts whatever their sampling seeds (issue 13, item 9).

The general-prompt sample (--general_limit) is drawn with --prompt_seed, not the stage's --seed: pipelines give
the teacher another seed than the student (pipelines/tiny.yaml), and a sample drawn with each stage's own seed
left every general answer without a partner in dpo-data.

    .venv/bin/pytest -q tests/engine/test_prompt_sample.py
"""

from __future__ import annotations

from character import constitution as C
from character.config import load
from character.engine.base import Completion, Engine
from character.stages import run_student, run_teacher
from character.stages.distill import StudentConfig, TeacherConfig, prompt_items

GENERAL = dict(general_prompts="builtin", general_limit=3)


def general_ids(cfg, constitution: str) -> list[str]:
    return [i["prompt_id"] for i in prompt_items(cfg, C.load(constitution)) if i["source"] == "general"]


def test_same_general_prompts_for_different_seeds(mini_constitution):
    common = dict(GENERAL, constitution=mini_constitution, out="unused")
    teacher = [general_ids(load(TeacherConfig, dict(common, seed=seed)), mini_constitution) for seed in (1, 2, 3)]
    student = general_ids(load(StudentConfig, dict(common, seed=0)), mini_constitution)
    assert len(student) == 3
    assert all(ids == student for ids in teacher)


def test_prompt_seed_draws_another_sample(mini_constitution):
    common = dict(GENERAL, constitution=mini_constitution, out="unused")
    samples = {tuple(general_ids(load(StudentConfig, dict(common, prompt_seed=s)), mini_constitution))
               for s in range(4)}
    assert len(samples) > 1  # the sample is still a seeded draw, just not the stage's sampling seed


class EchoEngine(Engine):
    """Answers every request with a finished sentence quoting its prompt: the prompts reached are what is tested."""

    def generate(self, requests, sampling, progress=None):
        return [Completion([f"About '{r.messages[-1]['content']}'."] * sampling.n, ["stop"] * sampling.n)
                for r in requests]


def test_stages_answer_the_same_prompt_ids(tmp_path, mini_constitution):
    common = dict(GENERAL, constitution=mini_constitution, prompts=None, backend="hf", n=2, shard_size=4)
    teacher = run_teacher(load(TeacherConfig, dict(common, out=str(tmp_path / "t"), seed=1)), EchoEngine())
    student = run_student(load(StudentConfig, dict(common, out=str(tmp_path / "s"), seed=0)), EchoEngine())

    def answered(path):
        from character.artifacts import StageDir

        return sorted(r["id"] for r in StageDir(path, "x").rows())

    t_ids, s_ids = answered(teacher), answered(student)
    assert len(t_ids) == 2 * (5 + 3)  # the mini constitution's 5 questions and 3 general prompts, 2 samples each
    assert t_ids == s_ids
