"""The model a training run adapts: tokenizer, weights, LoRA targets and config, and the PEFT cast patch.

Loading errors become one line naming the model; a LoRA target that matches no module is reported instead of
silently staying untrained.
"""

from __future__ import annotations

import sys

from character.errors import CharacterError
from character.hardware import on_gpu
from character.train.config import TrainConfig


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise CharacterError(f"model '{path}': cannot load its tokenizer ({str(e).splitlines()[0]}); "
                             f"check the name or path") from None
    if tok.chat_template is None:
        raise CharacterError(f"model '{path}': the tokenizer has no chat template; use an instruct model or add "
                             f"one to its tokenizer_config.json")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(path: str, cfg: TrainConfig):
    import torch
    from transformers import AutoModelForCausalLM

    dtype = cfg.dtype if cfg.dtype != "auto" else ("bfloat16" if on_gpu() else "float32")
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
    except (OSError, ValueError) as e:
        raise CharacterError(f"model '{path}': cannot load it ({str(e).splitlines()[0]}); "
                             f"check the name or path") from None
    return model


def check_targets(model, targets: list[str]) -> list[str]:
    """Target names that match a module; warns for each that matches none (it would silently stay untrained)."""
    if targets == ["all-linear"]:
        return targets
    names = [n for n, _ in model.named_modules()]
    matched, unmatched = [], []
    for t in targets:
        (matched if any(n == t or n.endswith("." + t) for n in names) else unmatched).append(t)
    for t in unmatched:
        print(f"warning: LoRA target '{t}' matches no module of {type(model).__name__}; it is not trained "
              f"(module names look like {', '.join(sorted({n.rsplit('.', 1)[-1] for n in names if n})[:8])}, ...)",
              file=sys.stderr)
    if not matched:
        raise CharacterError(f"target_modules {targets}: none matches a module of {type(model).__name__}; "
                             f"use its linear layer names or ['all-linear']")
    return matched


def lora_config(cfg: TrainConfig, model):
    from peft import LoraConfig

    targets = check_targets(model, list(cfg.target_modules))
    return LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets[0] if targets == ["all-linear"] else targets,
                      bias="none", task_type="CAUSAL_LM")


def skip_lora_input_casts(trainer) -> int:
    """Under bf16 autocast, stop PEFT from casting each LoRA layer's input to the adapter's float32 dtype.

    Autocast runs the adapter's matmuls in bf16 anyway, so the cast is an exact round trip (bf16 -> float32 ->
    bf16, and the same for the gradient): three full copies of the layer input per LoRA layer and step. In a
    torch profile of an 8B DPO step on an H200 (r64 on all linear layers), copy kernels, mostly these, took 11%
    of the GPU time. Without torch autocast nothing changes: the input is cast as before. DeepSpeed and FSDP
    manage precision themselves, not through autocast, so they are left alone too. Returns the number of LoRA
    layers changed. The patch `lora-input-casts` (character/patches.py): a PEFT whose cast changed keeps it."""
    from character import patches

    if not trainer.args.bf16 or getattr(trainer, "is_deepspeed_enabled", False) or \
            getattr(trainer, "is_fsdp_enabled", False):
        return 0
    return patches.apply("lora-input-casts", trainer) or 0


def check_lora_input_casts() -> str | None:
    """PEFT's LoRA layers must cast their input in `_cast_input_dtype`, which reads `cast_input_dtype_enabled`."""
    import inspect

    from peft.tuners.lora.layer import Linear, LoraLayer
    from peft.tuners.tuners_utils import BaseTunerLayer

    if "cast_input_dtype_enabled" not in inspect.getsource(LoraLayer.__init__):
        return "LoraLayer has no cast_input_dtype_enabled flag"
    if "cast_input_dtype_enabled" not in inspect.getsource(BaseTunerLayer._cast_input_dtype):
        return "BaseTunerLayer._cast_input_dtype no longer reads cast_input_dtype_enabled"
    if "_cast_input_dtype(" not in inspect.getsource(Linear.forward):
        return "lora.Linear.forward no longer casts through _cast_input_dtype"
    return None


def disable_lora_input_casts(trainer) -> int:
    layers = [m for m in trainer.model.modules() if hasattr(m, "cast_input_dtype_enabled")]
    for m in layers:
        m.cast_input_dtype_enabled = False
    return len(layers)
