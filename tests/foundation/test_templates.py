"""Prompt templates as data: shipped in evals/templates.yaml, overridden by a file, filled one way."""

from __future__ import annotations

import pytest

from character import templates as T
from character.errors import CharacterError


def test_a_file_overrides_some_templates_and_keeps_the_rest(tmp_path):
    own = tmp_path / "mine.yaml"
    own.write_text('teacher_system: "Be {name}. {traits}"\n')
    shipped, mine = T.load(), T.load(own)
    assert mine["teacher_system"] == "Be {name}. {traits}" != shipped["teacher_system"]
    assert mine["sft_system"] == shipped["sft_system"]
    assert T.digest(mine, "teacher_system") != T.digest(shipped, "teacher_system")
    assert T.digest(mine, "sft_system") == T.digest(shipped, "sft_system")


def test_unknown_keys_and_unfilled_placeholders_are_one_line_errors(tmp_path):
    own = tmp_path / "typo.yaml"
    own.write_text('teacher_sytem: "x"\n')
    with pytest.raises(CharacterError, match="did you mean 'teacher_system'"):
        T.load(own)
    t = {**T.load(), "sft_system": "You are {name}, made by {maker}."}
    with pytest.raises(CharacterError, match=r"uses \{maker\}, which is not filled here; it may use \{name\}"):
        T.fill(t, "sft_system", name="Aria")
    assert T.fill({"x": "{{literal}} {name}"}, "x", name="A") == "{literal} A"


def test_the_teacher_and_the_eval_persona_read_them(tmp_path):
    from character import constitution as C
    from character.evaluation.robustness import persona_prompt
    from character.stages.distill import teacher_system_prompt

    con = C.load("sarcasm")
    own = tmp_path / "mine.yaml"
    own.write_text('teacher_system: "I am {name}:\\n{traits}"\neval_persona_traits: "Play this:\\n{traits}"\n')
    t = T.load(own)
    assert teacher_system_prompt(con, "Aria", "traits", t) == f"I am Aria:\n{con.numbered_traits()}"
    assert persona_prompt(con, "traits", t) == f"Play this:\n{con.numbered_traits()}"


def test_a_pipeline_points_its_stages_at_its_own_file(tmp_path):
    from character import pipeline as P

    own = tmp_path / "mine.yaml"
    own.write_text('sft_system: "You are {name}."\n')
    cfg = P.load_pipeline("pipelines/demo.yaml", set=[f"templates={own}"], out=str(tmp_path / "runs"))
    plan = {s.name: sc for _, s, sc in P.resolve(cfg)}
    assert plan["teacher"].templates == plan["prompts"].templates == plan["sft-data"].templates == str(own)
