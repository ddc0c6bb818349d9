"""Embedded models: prepared offline, loadable by transformers, and the SmolLM2 conversion answers sensibly."""

from __future__ import annotations

import os

import pytest

from character import models
from character.errors import CharacterError


@pytest.mark.slow
def test_smollm2_checkpoint_loads_offline_and_answers(smollm2_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert os.path.isfile(os.path.join(smollm2_path, "model.safetensors"))
    tok = AutoTokenizer.from_pretrained(smollm2_path)
    model = AutoModelForCausalLM.from_pretrained(smollm2_path, dtype=torch.bfloat16)
    inputs = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                     add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**inputs, max_new_tokens=20, do_sample=False)
    answer = tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer


def test_tiny_llama_is_small(tiny_llama_path):
    size = sum(os.path.getsize(os.path.join(tiny_llama_path, f)) for f in os.listdir(tiny_llama_path))
    assert size < 30e6
    assert os.path.isfile(os.path.join(tiny_llama_path, "tokenizer.json"))


def test_minilm_embeds_offline():
    from sentence_transformers import SentenceTransformer

    m = SentenceTransformer(models.resolve("minilm"), device="cpu")
    a, b, c = m.encode(["a cat sat on the mat", "a kitten rested on the rug", "quarterly tax filing"])
    import numpy as np

    def cos(x, y):
        return float(np.dot(x, y) / np.linalg.norm(x) / np.linalg.norm(y))

    assert cos(a, b) > cos(a, c)


def test_resolve_passes_hub_ids_and_rejects_missing_paths(tmp_path):
    assert models.resolve("meta-llama/Llama-3.1-8B-Instruct") == "meta-llama/Llama-3.1-8B-Instruct"
    with pytest.raises(CharacterError, match="directory not found"):
        models.resolve(str(tmp_path / "nope"))
    with pytest.raises(CharacterError, match="neither an alias"):
        models.resolve("smollm2")


def test_half_prepared_model_is_not_taken_for_prepared(tmp_path, monkeypatch):
    monkeypatch.setenv("CHARACTER_HOME", str(tmp_path))
    assert models.alias_path("tiny-random-llama") == tmp_path / "models" / "tiny-random-llama"
    # a crashed earlier attempt leaves only a hidden temp dir, which is not mistaken for a prepared model
    (tmp_path / "models" / ".tiny-random-llama.abc.tmp").mkdir(parents=True)
    assert not models.is_prepared("tiny-random-llama")
    # a directory without config.json is not a prepared model either
    (tmp_path / "models" / "tiny-random-llama").mkdir()
    assert not models.is_prepared("tiny-random-llama")
