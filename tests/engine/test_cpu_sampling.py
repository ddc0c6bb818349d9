"""engine/cpu_sampling.py keeps exactly the tokens vLLM's sort-based top-k/top-p keeps."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.vllm


def _logits(rows: int, vocab: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # peaked rows like a chat model's next-token logits, plus flat rows whose nucleus is wider than the candidates
    scale = torch.full((rows, 1), 4.0)
    scale[::7] = 0.02
    return torch.randn(rows, vocab, generator=g) * scale + torch.randn(rows, vocab, generator=g).pow(2) * 0.5


@pytest.mark.parametrize("with_k", [False, True])
def test_same_kept_tokens_as_vllm(with_k):
    from vllm.v1.sample.ops.topk_topp_sampler import apply_top_k_top_p_pytorch

    from character.engine import cpu_sampling

    assert cpu_sampling.install()
    rows, vocab = 48, 49152
    logits = _logits(rows, vocab, seed=1 + with_k)
    p = torch.tensor([0.95, 0.9, 0.5, 1.0] * (rows // 4))
    k = torch.tensor([vocab, 40, 300, vocab] * (rows // 4)) if with_k else None
    theirs = apply_top_k_top_p_pytorch(logits.clone(), k, p, allow_cpu_sync=True)
    ours = cpu_sampling.apply_top_k_top_p(logits.clone(), k, p)
    kept_theirs, kept_ours = theirs > float("-inf"), ours > float("-inf")
    assert torch.equal(kept_ours, kept_theirs)
    assert torch.equal(ours[kept_ours], logits[kept_ours])  # kept logits are left as they were
    sizes = kept_ours.sum(dim=1)
    assert sizes.min() >= 1 and (sizes < vocab).any() and (sizes > cpu_sampling.CANDIDATES).any()  # both paths ran


def test_installed_where_the_cpu_sampler_looks():
    from vllm.v1.sample.ops import topk_topp_sampler

    from character.engine import cpu_sampling

    assert cpu_sampling.install()
    assert topk_topp_sampler.apply_top_k_top_p is cpu_sampling.apply_top_k_top_p
    logits = _logits(4, 1000, seed=3)
    only_k = cpu_sampling.apply_top_k_top_p(logits.clone(), torch.tensor([5, 5, 5, 5]), None)
    assert ((only_k > float("-inf")).sum(dim=1) == 5).all()
