"""The transformers backend on the tiny random Llama: generation, scoring, several PEFT adapters."""

import pytest

from character.engine import EngineConfig, Request, Sampling, make_engine

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def hf(tiny_llama_path):
    with make_engine(EngineConfig(model=tiny_llama_path, backend="hf", dtype="float32", batch_size=4)) as e:
        yield e


def ask(text, **kw):
    return Request([{"role": "user", "content": text}], **kw)


def test_generate_shapes_seeds_and_greedy(hf):
    reqs = [ask(f"question {i}") for i in range(6)]  # more than one batch, different lengths
    out = hf.generate(reqs, Sampling(max_tokens=5, n=3, temperature=1.0, seed=3))
    assert len(out) == 6 and all(len(c.texts) == 3 and c.finish_reasons == ["length"] * 3 for c in out)
    again = hf.generate(reqs, Sampling(max_tokens=5, n=3, temperature=1.0, seed=3))
    assert [c.texts for c in out] == [c.texts for c in again]
    greedy = hf.generate(reqs[:2], Sampling(max_tokens=5, n=2, temperature=0))
    assert greedy[0].texts[0] == greedy[0].texts[1]
    # batching (left padding) does not change greedy output
    assert hf.generate(reqs[1:2], Sampling(max_tokens=5, temperature=0))[0].texts == greedy[1].texts[:1]


def test_score_matches_manual_forward(hf, tiny_llama_path):
    import torch

    req = ask("Is the sky blue?", prefill="Well,")
    got = hf.score([req, req], [[" yes", " no thanks"], ["!"]])
    assert len(got) == 2 and len(got[0]) == 2 and len(got[1]) == 1
    tok = hf.tokenizer
    head = tok(tok.apply_chat_template(req.messages, tokenize=False, add_generation_prompt=True) + "Well,",
               add_special_tokens=False)["input_ids"]
    tail = tok(" no thanks", add_special_tokens=False)["input_ids"]
    ids = torch.tensor([head + tail])
    with torch.no_grad():
        logp = torch.log_softmax(hf.model(ids).logits.float()[0, :-1], -1)
    manual = sum(float(logp[len(head) - 1 + j, t]) for j, t in enumerate(tail))
    assert got[0][1] == pytest.approx(manual, abs=1e-4)


def test_adapters_switch_and_base_stays_base(tiny_llama_path, tiny_adapters):
    with make_engine(EngineConfig(model=tiny_llama_path, backend="hf", dtype="float32")) as e:
        g = Sampling(max_tokens=6, temperature=0)
        base = e.generate([ask("hello")], g)[0].texts[0]
        mixed = e.generate([ask("hello", adapter=tiny_adapters[0]), ask("hello"),
                            ask("hello", adapter=tiny_adapters[1])], g)
        assert mixed[1].texts[0] == base  # the base request ran with adapters disabled
        assert mixed[0].texts[0] != base and mixed[2].texts[0] != base and mixed[0].texts != mixed[2].texts
        s = e.score([ask("hi"), ask("hi", adapter=tiny_adapters[0])], [[" there"], [" there"]])
        assert s[0][0] != pytest.approx(s[1][0])
