"""Answer-token log-probabilities for DPO on CPU: the LM head applied to the answer tokens only, in bf16.

TRL's DPOTrainer asks the model for per-token log-probs through a fused LM head (`add_fused_lm_head`). On CUDA that
is a Triton kernel over the answer tokens. Elsewhere it falls back to torch code that scores every position, prompt
and padding included, folds the vocabulary in 32k-column tiles with several float32 passes, and runs its backward
GEMMs in float32. On a CPU that head is half of a DPO step (measured on smollm2-135m: 36 of 67 s).

`install(model)` replaces that path on CPU. The answer positions are gathered first. The logits are one bf16 GEMM
per block of tokens, as the model's own autocast forward computes them, and the softmax statistics are taken in
float32. Only the log-sum-exp is kept; the backward recomputes the block's logits. The outputs are the same fields
TRL reads (log-probs, entropy, mean logit, top-1). Anything unusual falls back to TRL's head: a GPU, a trainable or
biased LM head, soft-capped or scaled logits, pre-shifted labels, router logits, a multimodal model. It is the patch
`answer-logprobs` (character/patches.py): a TRL whose fused head changed keeps its own, with a warning.
"""

from __future__ import annotations

import dataclasses
import inspect
import types

import torch

from character import patches

# Elements of one float32 logits block (tokens x vocabulary): 32M = 128 MB, e.g. 682 tokens of a 49k vocabulary
BLOCK_ELEMENTS = 1 << 25


def _blocks(n: int, vocab: int):
    step = max(1, BLOCK_ELEMENTS // vocab)
    return ((s, min(s + step, n)) for s in range(0, n, step))


def _logits(hidden: torch.Tensor, weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return (hidden.to(dtype) @ weight.to(dtype).t()).float()


class AnswerLogProbs(torch.autograd.Function):
    """log p(target) for N hidden states [N, H] under the LM head [V, H]; entropy, mean logit and top-1 (no grad)."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, dtype):
        n, vocab = hidden.shape[0], weight.shape[0]
        log_probs, log_z, entropy, mean_logits, is_top1 = (hidden.new_empty(n, dtype=torch.float32) for _ in range(5))
        for s, e in _blocks(n, vocab):
            z = _logits(hidden[s:e], weight, dtype)
            lz = torch.logsumexp(z, dim=-1)
            log_z[s:e] = lz
            log_probs[s:e] = z.gather(1, targets[s:e, None]).squeeze(1) - lz
            mean_logits[s:e] = z.mean(dim=-1)
            is_top1[s:e] = (z.argmax(dim=-1) == targets[s:e]).float()
            p = (z - lz[:, None]).exp_()
            entropy[s:e] = lz - (p * z).sum(dim=-1)
        ctx.save_for_backward(hidden, weight, targets, log_z)
        ctx.dtype = dtype
        ctx.mark_non_differentiable(entropy, mean_logits, is_top1)
        return log_probs, entropy, mean_logits, is_top1.bool()

    @staticmethod
    def backward(ctx, grad_log_probs, *_):
        hidden, weight, targets, log_z = ctx.saved_tensors
        grad_hidden = torch.empty_like(hidden)
        g_out = grad_log_probs.float()
        for s, e in _blocks(hidden.shape[0], weight.shape[0]):
            # d log p(t) / d z = onehot(t) - softmax(z)
            g = (_logits(hidden[s:e], weight, ctx.dtype) - log_z[s:e, None]).exp_().neg_()
            g.scatter_add_(1, targets[s:e, None], torch.ones_like(g[:, :1]))
            g.mul_(g_out[s:e, None])
            grad_hidden[s:e] = (g.to(ctx.dtype) @ weight.to(ctx.dtype)).to(hidden.dtype)
        return grad_hidden, None, None, None


def _unsupported(model, hidden_device: torch.device) -> bool:
    text = model.config.get_text_config()
    head = model.get_output_embeddings()
    return (hidden_device.type != "cpu" or text is not model.config or head is None or head.bias is not None or head.weight.requires_grad
            or getattr(text, "final_logit_softcapping", None) is not None
            or any(getattr(text, k, None) not in (None, 1.0) for k in ("logit_scale", "output_multiplier",
                                                                      "lm_head_multiplier", "logits_scaling"))
            or getattr(text, "output_router_logits", False))


def install(model) -> bool:
    """Route `model(..., labels=..., fused_lm_head=True)` through AnswerLogProbs on CPU (call after TRL patched
    the model with `add_fused_lm_head`). Returns False, changing nothing, when this TRL's fused head changed."""
    return bool(patches.apply("answer-logprobs", model))


_FIELDS = {"loss", "log_probs", "entropy", "mean_logits", "is_top1", "label_mask"}


def check_fused_head() -> str | None:
    """TRL must still add its fused head with `add_fused_lm_head`, call it as `fused_lm_head=True` in DPO, and
    return the fields we fill."""
    from trl.trainer import dpo_trainer
    from trl.trainer.utils import FusedCausalLMOutput, add_fused_lm_head

    missing = _FIELDS - {f.name for f in dataclasses.fields(FusedCausalLMOutput)}
    if missing:
        return f"FusedCausalLMOutput has no {sorted(missing)}"
    if "outputs" not in inspect.signature(add_fused_lm_head).parameters:
        return "add_fused_lm_head takes no `outputs`"
    if "fused_lm_head=True" not in inspect.getsource(dpo_trainer.DPOTrainer):
        return "DPOTrainer no longer calls the model with fused_lm_head=True"
    return None


def route_forward(model) -> bool:
    from trl.trainer.utils import FusedCausalLMOutput

    fused_forward = model.forward  # TRL's, which falls back to the original forward without fused_lm_head

    def forward(self, *args, fused_lm_head=False, labels=None, shift_labels=None, num_items_in_batch=None,
                **kwargs):
        device = self.get_output_embeddings().weight.device
        if (not fused_lm_head or shift_labels is not None or args or kwargs.get("output_router_logits")
                or _unsupported(self, device)):
            return fused_forward(*args, fused_lm_head=fused_lm_head, labels=labels, shift_labels=shift_labels,
                                 num_items_in_batch=num_items_in_batch, **kwargs)
        kwargs["use_cache"] = False
        hidden = self.base_model(**kwargs).last_hidden_state[:, :-1]
        labels = labels[:, 1:]
        mask = labels != -100
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else hidden.dtype
        log_probs, entropy, mean_logits, is_top1 = AnswerLogProbs.apply(
            hidden[mask], self.get_output_embeddings().weight, labels[mask], dtype)

        def spread(x):  # masked_scatter keeps an all-prompt batch connected to the graph
            return x.new_zeros(mask.shape).masked_scatter(mask, x)

        log_probs = spread(log_probs)
        loss = -log_probs.sum() / (mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch)
        return FusedCausalLMOutput(loss=loss, log_probs=log_probs, entropy=spread(entropy),
                                   mean_logits=spread(mean_logits), is_top1=spread(is_top1), label_mask=mask)

    model.forward = types.MethodType(forward, model)
    return True
