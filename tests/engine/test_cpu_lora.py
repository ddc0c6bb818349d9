"""The grouped CPU LoRA functions give vLLM's torch-ops results (same shapes, same numbers) on random batches with
several adapters, tokens without an adapter (index -1) and 3- and 4-dimensional weight stacks."""

import pytest
import torch

from character.engine import cpu_lora

lora_ops = pytest.importorskip("vllm.lora.ops.torch_ops.lora_ops")

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
