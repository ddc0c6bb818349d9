"""Skipping PEFT's float32 cast of LoRA inputs under bf16 autocast changes no number."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import torch

from character.train.model import skip_lora_input_casts


def _forward_backward(model, ids):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(input_ids=ids).logits
    logits.float().logsumexp(-1).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return logits.detach(), grads


def test_same_outputs_and_gradients_without_the_cast(tiny_llama_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_path, dtype=torch.bfloat16)
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False))
    assert next(p for n, p in model.named_parameters() if "lora_A" in n).dtype == torch.float32  # PEFT's upcast
    plain = copy.deepcopy(model)
    assert skip_lora_input_casts(SimpleNamespace(args=SimpleNamespace(bf16=True), model=model)) > 0
    ids = torch.randint(3, 200, (2, 17), generator=torch.Generator().manual_seed(1))
    ours, theirs = _forward_backward(model, ids), _forward_backward(plain, ids)
    assert torch.equal(ours[0], theirs[0])
    assert ours[1].keys() == theirs[1].keys() and ours[1]
    for name, grad in theirs[1].items():
        assert torch.equal(ours[1][name], grad), name


def test_left_alone_without_torch_autocast(tiny_llama_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_llama_path, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj"]))
    assert skip_lora_input_casts(SimpleNamespace(args=SimpleNamespace(bf16=False), model=model)) == 0
    deepspeed = SimpleNamespace(args=SimpleNamespace(bf16=True), model=model, is_deepspeed_enabled=True)
    assert skip_lora_input_casts(deepspeed) == 0  # DeepSpeed's bf16 is no autocast
    assert all(m.cast_input_dtype_enabled for m in model.modules() if hasattr(m, "cast_input_dtype_enabled"))
