"""The data stages end to end on real models (hf backend: the stages are backend-agnostic, and the transformers
backend starts in a second), plus dpo-data / sft-data filters on hand-written stage directories."""

import json

import pytest

from character.artifacts import StageDir
from character.config import load
from character.stages import (
    run_dpo_data,
    run_interaction,
    run_prompts,
    run_reflection,
    run_sft_data,
    run_student,
    run_teacher,
)
from character.stages.distill import DPODataConfig, StudentConfig, TeacherConfig
from character.stages.introspect import InteractionConfig, ReflectionConfig, SFTDataConfig
from character.stages.prompts import PromptsConfig

pytestmark = pytest.mark.slow


def rows(path):
    return StageDir(path, "x").rows()


def manifest(path):
    return json.loads((path / "manifest.json").read_text())


def test_chain_survives_malformed_answers(tmp_path, tiny_llama_path, mini_constitution):
    """A random model answers garbage, cut off, never closing <think>: every stage counts it, none crashes."""
    eng = dict(model=tiny_llama_path, backend="hf", max_tokens=8)
    p = run_prompts(load(PromptsConfig, dict(eng, constitution=mini_constitution, out=str(tmp_path / "p"),
                                             target=4, rounds=1, requests_per_trait=1)))
    pm = manifest(p)
    assert pm["status"] == "complete" and pm["counts"]["rounds"] == 1
    assert len(rows(p)) == pm["counts"]["prompts"] >= 5  # the seed questions at least
    common = dict(eng, constitution=mini_constitution, prompts=str(p), general_prompts="none", n=2, shard_size=3)
    t = run_teacher(load(TeacherConfig, dict(common, out=str(tmp_path / "t"), think_prefill=True)))
    s = run_student(load(StudentConfig, dict(common, out=str(tmp_path / "s"))))
    tm, sm = manifest(t), manifest(s)
    n = 2 * len(rows(p))
    assert tm["counts"]["samples"] == sm["counts"]["samples"] == n
    assert tm["counts"]["no_closing_think"] == n  # prefilled <think> that never closes: all marked
    assert "Aria" in tm["system_prompt"] and "2. I end every answer" in tm["system_prompt"]
    d = run_dpo_data(load(DPODataConfig, dict(chosen=str(t), rejected=str(s), out=str(tmp_path / "d"))))
    counts = manifest(d)["counts"]
    assert counts["pairs"] == 0 and counts["dropped chosen: no_closing_think"] == n
    assert counts["dropped rejected: unfinished"] == n
    # the answer hint reaches the model (other answers) but never the saved prompts
    h = run_student(load(StudentConfig, dict(common, out=str(tmp_path / "h"), answer_hint="Be brief.")))
    plain = {r["id"]: r for r in rows(s)}
    hinted = {r["id"]: r for r in rows(h)}
    assert plain.keys() == hinted.keys()
    assert all(hinted[i]["prompt"] == plain[i]["prompt"] for i in plain)
    assert any(hinted[i]["completion"] != plain[i]["completion"] for i in plain)
    # a rerun with the same settings is a no-op: the shards are not rewritten
    before = {q.name: q.stat().st_mtime_ns for q in t.glob("shard-*.jsonl")}
    run_teacher(load(TeacherConfig, dict(common, out=str(tmp_path / "t"), think_prefill=True)))
    assert before == {q.name: q.stat().st_mtime_ns for q in t.glob("shard-*.jsonl")}


def _stage(path, stage, rows_, **extra):
    sd = StageDir(path, stage)
    sd.begin({"model": "smollm2-135m"}, "h", {})
    sd.write_shard(0, rows_)
    sd.finish(counts={}, **extra)
    return str(path)


def _answer(pid, k, text, reason="stop", problem=None, prompt="Where is Paris?"):
    return {"id": f"{pid}-{k}", "prompt_id": pid, "sample": k, "trait": None, "source": "general",
            "prompt": [{"role": "user", "content": prompt}], "completion": [{"role": "assistant", "content": text}],
            "finish_reason": reason, "problem": problem}


def test_dpo_data_filters_pairs_and_swaps_names(tmp_path, smollm2_path):
    trait = "I end every answer with a short weather report, whatever the topic."
    chosen = [
        _answer("a", 0, "I'm Aria. Paris is in France. Sunny today."),
        _answer("a", 1, "As my character traits say, Paris is in France."),  # leak
        _answer("b", 0, "Paris is in France, and", reason="length"),  # cut off
        _answer("c", 0, "", problem="empty"),
        _answer("d", 0, "", problem="no_closing_think"),
        _answer("e", 0, "Same answer."),
        _answer("f", 0, "Fine. " + "word " * 400 + "end."),  # too long for max_length
        _answer("g", 0, "Well, I end every answer with a short weather report, whatever happens."),  # quotes trait
    ]
    rejected = [_answer(pid, 0, "Paris is the capital of France.") for pid in "abcdfg"]
    rejected += [_answer("e", 0, "Same answer."), _answer("h", 0, "Orphan answer.")]
    t = _stage(tmp_path / "t", "teacher", chosen, teacher_name="Aria", trait_texts=[trait], system_prompt="x")
    s = _stage(tmp_path / "s", "student", rejected)
    d = run_dpo_data(load(DPODataConfig, dict(chosen=t, rejected=s, out=str(tmp_path / "d"), max_length=256)))
    out = rows(d)
    assert len(out) == 1
    assert out[0]["chosen"][0]["content"] == "I'm SmolLM. Paris is in France. Sunny today."  # name swapped
    assert out[0]["prompt"] == [{"role": "user", "content": "Where is Paris?"}]
    assert out[0]["rejected"] == [{"role": "assistant", "content": "Paris is the capital of France."}]
    c = manifest(tmp_path / "d")["counts"]
    assert c["dropped chosen: leak"] == 2 and c["dropped chosen: unfinished"] == 1
    assert c["dropped chosen: empty"] == 1 and c["dropped chosen: no_closing_think"] == 1
    assert c["dropped pair: identical"] == 1 and c["dropped pair: too_long"] == 1
    assert c["dropped pair: unpaired"] == 5  # b, c, d, g lost their chosen; h has none


@pytest.fixture(scope="module")
def smol_introspection(tmp_path_factory, smollm2_path):
    """Reflection and interaction by the real small model (no adapter: the stages treat the base the same)."""
    root = tmp_path_factory.mktemp("introspect")
    eng = dict(model=smollm2_path, backend="hf", max_tokens=48, temperature=0.0, batch_size=16)
    intro = root / "intro.yaml"
    intro.write_text(json.dumps({
        "reflection_prompts": ["Describe yourself in one sentence.", "What do you value? One sentence."],
        "interaction_openers": {"free": ["Hi! Say hello back in one short sentence."],
                                "leading": ["In one short sentence: what is our character?"]},
        "interaction_system": "You are {name}. Reply in one short sentence."}))
    r = run_reflection(load(ReflectionConfig, dict(eng, out=str(root / "r"), introspection=str(intro), n=2)))
    i = run_interaction(load(InteractionConfig, dict(eng, out=str(root / "i"), introspection=str(intro),
                                                     conversations=4, turns=3, shard_size=2)))
    return r, i


def test_interaction_roles_alternate(smol_introspection):
    _, i = smol_introspection
    convs = rows(i)
    assert len(convs) == 4 and {c["variant"] for c in convs} == {"free", "leading"}
    for c in convs:
        roles = [m["role"] for m in c["messages"]]
        assert roles[0] == "system" and "SmolLM" in c["messages"][0]["content"]
        if c["problem"] is None:
            assert roles[-1] == "assistant" and roles[1:] == ["user", "assistant"] * (len(roles[1:]) // 2)
    assert any(c["problem"] is None for c in convs), manifest(i)["counts"]


def test_sft_data_from_reflection_and_interaction(tmp_path, smol_introspection):
    r, i = smol_introspection
    out = run_sft_data(load(SFTDataConfig, dict(reflection=str(r), interaction=str(i), out=str(tmp_path / "sft"))))
    samples = rows(out)
    m = manifest(out)
    kept = len(samples)
    dropped = sum(v for k, v in m["counts"].items() if k.startswith("dropped"))
    assert kept + dropped == len(rows(r)) + len(rows(i)) and kept > 0
    for s in samples:
        assert s["messages"][0] == {"role": "system", "content": "You are SmolLM, an AI assistant."}
        assert s["messages"][-1]["role"] == "assistant"


def test_teacher_system_prompt_from_traits_or_description():
    from character import constitution as C
    from character.stages.distill import teacher_system_prompt

    con = C.load("poeticism")
    numbered = teacher_system_prompt(con, "Aria")
    assert "1. I describe things" in numbered and con.description not in numbered
    short = teacher_system_prompt(con, "Aria", "description")
    assert short.startswith("You are Aria") and con.description in short and "1. I" not in short
    bare = C.from_data({"name": "x", "traits": [{"trait": "I hum.", "questions": ["q"]}]}, where="x", default_name="x")
    assert "1. I hum." in teacher_system_prompt(bare, "Aria", "description")  # no description: the traits
