"""SFT starts from base + DPO exactly, in any weights dtype (issue 13, item 4).

The DPO adapter stays frozen and unmerged under the trainable SFT LoRA, whose B starts at zero: the starting
logits are base + DPO's bit for bit. Merging the DPO adapter into bf16 weights first (the old way) rounds away the
updates smaller than bf16's step at each weight, so the model SFT started from differed from the one the final merge
(base + both adapters, in float32) assumes.

    pytest tests/train/test_sft_start.py
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def small_update(adapter: Path, out: Path, scale: float) -> Path:
    """A copy of an adapter with its B matrices scaled: a DPO update of the size a real learning rate makes."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(adapter, out)
    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    save_file({k: v * scale if "lora_B" in k else v for k, v in tensors.items()},
              str(out / "adapter_model.safetensors"))
    return out


def logits(model, ids):
    import torch

    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def test_sft_starting_logits_equal_base_plus_dpo_in_bf16(trained, tiny_llama_path, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from character.train.sft import FROZEN, SFTTrainConfig, start_model

    dpo = small_update(trained["dpo"], tmp_path / "dpo", 0.02)
    cfg = SFTTrainConfig(model=tiny_llama_path, data="unused", out=str(tmp_path / "sft"), adapter=str(dpo),
                         dtype="bfloat16", lora_rank=8, lora_alpha=16)
    ids = AutoTokenizer.from_pretrained(tiny_llama_path)("Tell me about the sea at night, please.",
                                                         return_tensors="pt")["input_ids"]

    model, peft_config = start_model(tiny_llama_path, cfg)
    assert peft_config is None  # the model carries both adapters already
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".default." in n and "lora_" in n for n in trainable)
    assert not any(FROZEN in n for n in trainable)
    start = logits(model, ids)

    def base(dtype):
        return AutoModelForCausalLM.from_pretrained(tiny_llama_path, dtype=dtype)

    reference = logits(PeftModel.from_pretrained(base(torch.bfloat16), str(dpo)), ids)
    assert torch.equal(start, reference)  # base + DPO, bit for bit

    # what the old start (DPO merged into bf16 weights) lost: the part of each weight update below bf16's step
    merged = PeftModel.from_pretrained(base(torch.bfloat16), str(dpo)).merge_and_unload().state_dict()
    exact = PeftModel.from_pretrained(base(torch.float32), str(dpo)).merge_and_unload().state_dict()
    plain = base(torch.float32).state_dict()
    lost = total = 0.0
    for name, w in plain.items():
        if name.endswith("proj.weight"):
            update = exact[name] - w
            lost += float((merged[name].float() - w.to(torch.bfloat16).float() - update).abs().sum())
            total += float(update.abs().sum())
    print(f"merging this DPO update into bf16 weights loses {lost / total:.0%} of it (L1); the frozen adapter 0%")
    assert lost / total > 0.1


def test_the_sft_adapter_holds_only_its_own_weights(trained):
    from safetensors.torch import load_file

    out = trained["sft"]
    keys = load_file(str(out / "adapter_model.safetensors")).keys()
    assert keys and all("lora_" in k for k in keys)
    assert not any(".dpo." in k for k in keys)
    assert not [p for p in out.iterdir() if p.is_dir() and p.name != "checkpoints"]  # no frozen adapter copied
    assert not (out / "training_args.bin").exists()  # no pickle
