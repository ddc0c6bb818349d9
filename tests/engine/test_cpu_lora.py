"""The grouped CPU LoRA functions give vLLM's torch-ops results (same shapes, same numbers) on random batches with
several adapters, tokens without an adapter (index -1) and 3- and 4-dimensional weight stacks."""

import pytest
import torch

from character.engine import cpu_lora

lora_ops = pytest.importorskip("vllm.lora.ops.torch_ops.lora_ops")  # at import time, before the marker is read
pytestmark = pytest.mark.vllm

# vLLM's own functions, captured before install() can replace them in this process
ORIGINAL = {name: getattr(lora_ops, name) for name in ("bgmv_shrink", "bgmv_expand", "bgmv_expand_slice")}


def _case(seed, tokens=37, loras=4, d_in=48, d_out=24, four_dim=False, with_none=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, d_in, generator=g)
    w = torch.randn(loras, 1, d_out, d_in, generator=g) if four_dim else torch.randn(loras, d_out, d_in, generator=g)
    idx = torch.randint(-1 if with_none else 0, loras, (tokens,), generator=g)
    return x, w, idx


@pytest.mark.parametrize("four_dim", [False, True])
@pytest.mark.parametrize("with_none", [False, True])
def test_shrink_and_expand_match_vllm(four_dim, with_none):
    x, w, idx = _case(0, four_dim=four_dim, with_none=with_none)
    if with_none:
        # vLLM's gather reads slot -1 (the last one) for "no adapter", which holds zeros when that slot is free
        w[-1] = 0
        idx[idx == w.shape[0] - 1] = -1
    d_out = w.shape[-2]
    for add in (False, True):
        base = torch.randn(x.shape[0], d_out + 3)
        ours, theirs = base.clone(), base.clone()
        cpu_lora.bgmv_expand(x, w, ours, idx, add_inputs=add)
        ORIGINAL["bgmv_expand"](x, w, theirs, idx, add_inputs=add)
        torch.testing.assert_close(ours, theirs)
        ours, theirs = base.clone(), base.clone()
        cpu_lora.bgmv_expand_slice(x, w, ours, idx, 2, d_out, add_inputs=add)
        ORIGINAL["bgmv_expand_slice"](x, w, theirs, idx, 2, d_out, add_inputs=add)
        torch.testing.assert_close(ours, theirs)
    ours, theirs = torch.zeros(x.shape[0], d_out), torch.zeros(x.shape[0], d_out)
    cpu_lora.bgmv_shrink(x, w, ours, idx, 0.5)
    ORIGINAL["bgmv_shrink"](x, w, theirs, idx, 0.5)
    torch.testing.assert_close(ours, theirs)


def test_single_adapter_batch_and_none_rows():
    x, w, _ = _case(1)
    one = torch.full((x.shape[0],), 2)
    out = torch.zeros(x.shape[0], w.shape[1])
    cpu_lora.bgmv_shrink(x, w, out, one)
    torch.testing.assert_close(out, x @ w[2].T)
    none = torch.full((x.shape[0],), -1)
    cpu_lora.bgmv_shrink(x, w, out, none)
    assert not out.any()


def test_install_swaps_the_functions_vllm_calls():
    from vllm.lora.punica_wrapper import punica_cpu

    assert cpu_lora.install() and cpu_lora.install()  # idempotent
    assert lora_ops.bgmv_expand is cpu_lora.bgmv_expand and punica_cpu.bgmv_shrink is cpu_lora.bgmv_shrink


def test_caches_follow_in_place_updates():
    """vLLM refills its index tensor every step and loads adapters into zeroed slots in place: the per-step grouping
    and the skipping of all-zero layers must see both changes."""
    x, w, _ = _case(2, loras=3)
    idx = torch.zeros(x.shape[0], dtype=torch.long)
    w.zero_()  # no adapter loaded: the layer adds nothing, with or without add_inputs
    out = torch.ones(x.shape[0], w.shape[1])
    cpu_lora.bgmv_expand(x, w, out, idx, add_inputs=True)
    assert (out == 1).all()
    cpu_lora.bgmv_expand(x, w, out, idx, add_inputs=False)
    assert not out.any()
    g = torch.Generator().manual_seed(3)
    w[1].copy_(torch.randn(w.shape[1:], generator=g))  # an adapter loaded into slot 1
    for fill in ([1] * x.shape[0], [1, -1, 0] * (x.shape[0] // 3) + [1] * (x.shape[0] % 3)):
        idx.copy_(torch.tensor(fill))  # the next step's indices, written into the same tensor
        ours, theirs = torch.zeros(x.shape[0], w.shape[1]), torch.zeros(x.shape[0], w.shape[1])
        cpu_lora.bgmv_shrink(x, w, ours, idx)
        ORIGINAL["bgmv_shrink"](x, w, theirs, idx.masked_fill(idx < 0, 0))  # slot 0 is zero: same as no adapter
        torch.testing.assert_close(ours, theirs)
        assert ours.any()


@pytest.mark.parametrize("rows,fill,scale", [(1, "random", 0.5), (29, "random", 0.5), (29, "random", 0.3),
                                             (29, "one adapter", 2.0), (29, "no adapter", 2.0)])
def test_add_lora_linear_matches_vllm(rows, fill, scale):
    """The fused add_lora_linear (one shrink GEMM through all slots and slices, masked; only the slot's matrices
    when the whole batch has one adapter) against vLLM's own, on a real CPU Punica wrapper in its decode state:
    three slices like a fused qkv projection, one of them with no adapter loaded."""
    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

    original = PunicaWrapperCPU.add_lora_linear
    if original is cpu_lora.add_lora_linear:
        original = cpu_lora._vllm_add_lora_linear
    assert cpu_lora.install() and PunicaWrapperCPU.add_lora_linear is cpu_lora.add_lora_linear
    g = torch.Generator().manual_seed(rows)
    slots, rank, d_in, slices = 4, 8, 32, (16, 8, 8)
    wrapper = PunicaWrapperCPU(64, 8, "cpu")
    idx = torch.randint(-1, slots, (rows,), generator=g)
    if fill != "random":
        idx.fill_(2 if fill == "one adapter" else -1)
    wrapper._token_lora_indices[:rows].copy_(idx)
    wrapper.indices_len = [rows] * 6
    wrapper.is_prefill = False
    a = tuple(torch.randn(slots, 1, rank, d_in, generator=g).to(torch.bfloat16) for _ in slices)
    b = tuple(torch.randn(slots, 1, size, rank, generator=g).to(torch.bfloat16) for size in slices)
    b[2].zero_()
    x = torch.randn(rows, d_in, generator=g).to(torch.bfloat16)
    base = torch.randn(rows, sum(slices), generator=g).to(torch.bfloat16)
    ours, theirs = base.clone(), base.clone()
    wrapper.add_lora_linear(ours, x, a, b, scale, slices)
    original(wrapper, theirs, x, a, b, scale, slices)
    torch.testing.assert_close(ours.float(), theirs.float(), rtol=2e-2, atol=5e-2)
    assert torch.equal(ours[:, 24:], base[:, 24:])  # the slice with no adapter is left alone
    assert torch.equal(ours, base) == bool((idx < 0).all())
