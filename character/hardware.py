"""What this machine computes fast, which decides the default dtypes of generation and training.

bf16 is fast on GPUs and on CPUs with native bf16 (AVX512-BF16, AMX). Elsewhere (AVX2-only CPUs: many laptops and
AMD EPYC cloud machines) torch and oneDNN emulate it: on a 2-core AVX2 EPYC, `bench/dtype.py` gave a 64x576 by
576x1536 matmul 27x slower in bf16 (97 ms against 3.6 ms, one thread) and vLLM about 6.5 tokens/s in bf16
against 81 in float32, so `auto` means float32 there.
"""

from __future__ import annotations

from functools import cache


def on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


@cache
def cpu_has_bf16() -> bool:
    """True when the CPU computes bf16 natively (oneDNN's own test: AVX512-BF16 or AMX)."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_dtype(dtype: str) -> str:
    """`auto`: bfloat16 on a GPU or a CPU with native bf16, else float32; any other name is returned as given."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if on_gpu() or cpu_has_bf16() else "float32"
