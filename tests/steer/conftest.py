"""Fixtures of the steering tests: an hf engine on the tiny random Llama, a LoRA adapter for it, and steer
directories written directly (random vectors, no build), so that eval and projection tests take seconds.

    .venv/bin/python -m pytest tests/steer
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def tiny_engine(tiny_llama_path):
    from character.engine import EngineConfig, make_engine

    with make_engine(EngineConfig(model=tiny_llama_path, backend="hf", dtype="float32", batch_size=8)) as e:
        yield e


@pytest.fixture(scope="session")
def tiny_adapter(tiny_llama_path, tmp_path_factory) -> str:
    """A PEFT LoRA adapter with random, non-zero lora_B: it changes what the tiny model writes."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_path, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                                  task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.5)
    out = tmp_path_factory.mktemp("adapter") / "poetic-adapter"
    peft_model.save_pretrained(out)
    return str(out)


def make_steer_dir(path: Path, model: str, *, layer: int = 1, strength: float = 8.0, scale: float = 1.0,
                   seed: int = 0, constitution: str = "poeticism", enabled: bool = True) -> str:
    """A finished steer directory with random vectors for `model` (what `character steer build` writes)."""
    import torch

    from character.artifacts import StageDir, atomic_write_json
    from character.identity import identity
    from character.steer import vectors

    out = StageDir(path, "steer")
    out.begin({}, f"test-{seed}-{enabled}", {"model": identity(model)})
    if enabled:
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(model)
        g = torch.Generator().manual_seed(seed)
        v = torch.randn(cfg.num_hidden_layers, cfg.hidden_size, generator=g) * scale
        vectors.save(out.path / vectors.VECTORS, {"mean_diff": v, "pca": v.clone(), "positive_mean": v.clone(),
                                                  "negative_mean": torch.zeros_like(v)}, {"model": model})
        rows = [{"layer": i, **{m: {"positive_projection": float(v[i].norm()), "negative_projection": 0.0}
                                for m in vectors.METHODS}} for i in range(cfg.num_hidden_layers)]
        atomic_write_json(out.path / "separation.json", {"pairs": 0, "layers": rows})
    chosen = {"method": "mean_diff", "layer": layer, "strength": strength, "coherent": True}
    out.finish(counts={}, enabled=enabled, constitution_name=constitution, **({"chosen": chosen} if enabled else {}))
    return str(out.final)


@pytest.fixture
def steer_dir_factory():
    return make_steer_dir
