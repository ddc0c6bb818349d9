"""Fixtures for the evaluation tests: tiny LoRA adapters for tiny-random-llama (random lora_B, so an adapter
really changes the outputs), built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest


def make_adapter(base: str, out: Path, seed: int, r: int = 8, scale: float = 0.5) -> str:
    """A PEFT LoRA adapter on `base` with random (non-zero) lora_B: it changes what the model writes."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules=["q_proj", "v_proj"],
                                                  task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, scale)
    peft_model.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="session")
def adapter_factory():
    """make_adapter(base, out, seed, r=8, scale=0.5) for tests that need their own adapter."""
    return make_adapter


@pytest.fixture(scope="session")
def tiny_adapters(tiny_llama_path, tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("adapters")
    return [make_adapter(tiny_llama_path, root / name, seed) for seed, name in enumerate(["sarcasm-a", "humor-b"])]


@pytest.fixture(scope="session")
def embedding_judge():
    from character.evaluation.judges import EmbeddingJudge

    return EmbeddingJudge("minilm")
