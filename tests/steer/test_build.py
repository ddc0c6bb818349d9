"""`character steer build` on the tiny random Llama: from a pipeline's teacher and student answers (no generation
of pairs), deterministic for a seed, skipped when up to date; its own pairs when none are given; the pipeline's
`steer` stage, off unless enabled, wired into eval."""

import json

import pytest

from character import pipeline as P
from character.artifacts import StageDir, read_jsonl, read_manifest
from character.resources import data_path
from character.steer.build import SteerConfig, SteerStageConfig, run_steer, run_steer_stage
from character.steer.vectors import load, open_dir

PROMPTS = ["How does rain form?", "Describe an old library.", "What is a sonnet?", "How do bees make honey?",
           "Tell me about the night sky.", "Why do leaves fall?"]


def answers_dir(path, stage: str, texts: list[str]) -> str:
    """A finished teacher or student stage directory answering PROMPTS with `texts`."""
    out = StageDir(path, stage)
    out.begin({}, stage, {})
    out.write_shard(0, [{"id": f"p{i}-0", "prompt_id": f"p{i}", "sample": 0, "trait": None, "source": "general",
                         "prompt": [{"role": "user", "content": p}],
                         "completion": [{"role": "assistant", "content": t}], "finish_reason": "stop",
                         "problem": None} for i, (p, t) in enumerate(zip(PROMPTS, texts))])
    out.finish(counts={})
    return str(out.final)


def small(**kw):
    values = dict(constitution="poeticism", pairs=6, sweep_prompts=2, strengths=[2.0, 64.0], layers=[0, 1],
                  max_tokens=4, bootstrap=20, dtype="float32")
    values.update(kw)
    return values


@pytest.fixture(scope="module")
def pipeline_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    teacher = answers_dir(root / "teacher", "teacher", [f"Like silver threads, {p.lower()} sings softly." for p in PROMPTS])
    student = answers_dir(root / "student", "student", [f"Here is a plain answer about {p.lower()}" for p in PROMPTS])
    return teacher, student


@pytest.mark.slow
def test_build_from_pipeline_answers_is_deterministic_and_skips_when_done(tmp_path, tiny_llama_path,
                                                                           pipeline_dirs, capsys):
    import torch

    teacher, student = pipeline_dirs
    cfg = SteerConfig(model=tiny_llama_path, teacher=teacher, student=student, out=str(tmp_path / "a"), **small())
    out = run_steer(cfg)
    m = read_manifest(out)
    assert m["source"] == "pipeline" and m["enabled"] is True and m["counts"]["pairs"] == 6
    pairs = read_jsonl(out / "pairs.jsonl")
    assert all(p["positive"].startswith("Like silver threads") and p["negative"].startswith("Here is") for p in pairs)
    tensors = load(out)
    assert set(tensors) == {"mean_diff", "pca", "positive_mean", "negative_mean"}
    assert tensors["mean_diff"].shape == (2, 64)
    sep = json.loads((out / "separation.json").read_text())["layers"]
    assert [r["layer"] for r in sep] == [0, 1] and 0 <= sep[1]["pca"]["accuracy"] <= 1
    sweep = json.loads((out / "sweep.json").read_text())
    assert sweep["chosen"] == m["chosen"] and sweep["chosen"]["layer"] in (0, 1)
    assert not set(sweep["prompts"]) & set(PROMPTS)  # held out from the pairs
    st = open_dir(str(out))
    assert (st.layer, st.strength) == (m["chosen"]["layer"], m["chosen"]["strength"])

    # the same settings and seed elsewhere: the same vectors and the same sweep
    again = run_steer(SteerConfig(model=tiny_llama_path, teacher=teacher, student=student, out=str(tmp_path / "b"),
                                  **small()))
    assert all(torch.equal(tensors[k], load(again)[k]) for k in tensors)
    assert json.loads((again / "sweep.json").read_text())["settings"] == sweep["settings"]
    # the same command again does nothing
    capsys.readouterr()
    run_steer(cfg)
    assert "nothing to do" in capsys.readouterr().err
    assert read_manifest(out)["finished_at"] == m["finished_at"]


@pytest.mark.slow
def test_build_answers_its_own_pairs_without_a_pipeline(tmp_path, tiny_llama_path):
    out = run_steer(SteerConfig(model=tiny_llama_path, out=str(tmp_path / "own"), **small(strengths=[2.0])))
    pairs = read_jsonl(out / "pairs.jsonl")
    assert read_manifest(out)["source"] == "generated" and len(pairs) >= 4
    assert all(p["source"] == "generated" for p in pairs)
    from character import constitution as C

    questions = {q for t in C.load("poeticism").traits for q in t.questions}
    assert {p["prompt"] for p in pairs} <= questions  # the constitution's questions first


def test_the_pipeline_stage_is_off_unless_enabled_and_eval_reads_it(tmp_path, tiny_llama_path):
    cfg = P.load_pipeline(data_path("pipelines", "tiny.yaml"), out=str(tmp_path))
    by = {s.name: sc for _, s, sc in P.resolve(cfg)}
    d = tmp_path / "sarcasm"
    assert isinstance(by["steer"], SteerStageConfig) and by["steer"].enabled is False
    assert (by["steer"].teacher, by["steer"].student) == (str(d / "teacher"), str(d / "student"))
    assert by["steer"].model == cfg.student and by["eval"].steer == [str(d / "steer")]
    assert list(P.STAGE_NAMES).index("steer") == list(P.STAGE_NAMES).index("student") + 1
    on = P.load_pipeline(data_path("pipelines", "tiny.yaml"), out=str(tmp_path), set=["steer.enabled=true"])
    assert {s.name: sc for _, s, sc in P.resolve(on)}["steer"].enabled is True

    # off: a finished manifest that says so, which eval reads as "no vector"
    off = run_steer_stage(SteerStageConfig(constitution="sarcasm", model=tiny_llama_path, out=str(tmp_path / "s")))
    assert read_manifest(off)["enabled"] is False and read_manifest(off)["status"] == "complete"
    assert open_dir(str(off)) is None


def test_config_errors_are_collected():
    with pytest.raises(ValueError, match="both --teacher and --student"):
        SteerConfig(constitution="poeticism", teacher="x")
    with pytest.raises(ValueError, match="strengths must be positive"):
        SteerConfig(constitution="poeticism", strengths=[0.0])
