"""Fixtures of the engine and data-stage tests: a small constitution, random LoRA adapters on the tiny model.

    .venv/bin/python -m pytest tests/engine -m "not acceptance"
"""

from __future__ import annotations

from pathlib import Path

import pytest

MINI_CONSTITUTION = """\
name: terse
description: A tiny test persona.
traits:
  - trait: "I answer in as few words as possible while staying correct."
    questions:
      - "What is the capital of France?"
      - "How do I boil an egg?"
      - "Why is the sky blue?"
  - trait: "I end every answer with a short weather report, whatever the topic."
    questions:
      - "Can you recommend a book?"
      - "What is two plus two?"
"""


@pytest.fixture(scope="session")
def mini_constitution(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("constitution") / "terse.yaml"
    path.write_text(MINI_CONSTITUTION, encoding="utf-8")
    return str(path)


def make_adapter(base: str, out: Path, seed: int, rank: int = 8) -> str:
    """A PEFT LoRA adapter with random (non-zero) weights on `base`, saved as TRL would save it."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    cfg = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                     init_lora_weights=False, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, cfg)
    with torch.no_grad():  # large enough to change greedy choices of the random model
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    peft_model.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="session")
def tiny_adapters(tiny_llama_path, tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("adapters")
    return [make_adapter(tiny_llama_path, root / f"adapter{i}", seed=i) for i in range(2)]
