"""The CPU answer-token LM head (train/logprobs.py) against TRL's fused head: same outputs, same gradients."""

from __future__ import annotations

import pytest
import torch


def _model_pair(path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    from character.train import logprobs

    models = []
    for ours in (False, True):
        torch.manual_seed(0)
        base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        add_fused_lm_head(base, outputs=("log_probs", "entropy", "mean_logits", "is_top1"))
        if ours:
            assert logprobs.install(base)
        model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"],
                                                init_lora_weights=False))
        models.append(model)
    return models


def _batch(vocab: int):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, vocab, (3, 24), generator=g)
    attention = torch.ones_like(ids)
    attention[1, 18:] = 0  # right padding
    labels = ids.clone()
    labels[:, :7] = -100  # the prompt
    labels[attention == 0] = -100
    labels[2, :] = -100  # a row with no answer token at all
    return ids, attention, labels


@pytest.mark.parametrize("autocast", [False, True])
def test_answer_logprobs_match_trl(tiny_llama_path, autocast):
    trl_model, our_model = _model_pair(tiny_llama_path)
    ids, attention, labels = _batch(trl_model.config.vocab_size)
    outs = []
    for model in (trl_model, our_model):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = model(input_ids=ids, attention_mask=attention, labels=labels, fused_lm_head=True)
        (out.log_probs.sum() * 0.5).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        outs.append((out, grads))
    (theirs, their_grads), (ours, our_grads) = outs
    mask = labels[:, 1:] != -100
    assert torch.equal(ours.label_mask, mask)
    tol = dict(rtol=2e-2, atol=2e-2) if autocast else dict(rtol=1e-4, atol=1e-4)
    for name in ("log_probs", "entropy", "mean_logits", "loss"):
        torch.testing.assert_close(getattr(ours, name), getattr(theirs, name), **tol, msg=name)
    assert (ours.log_probs[~mask] == 0).all() and (ours.log_probs[mask] < 0).all()
    agree = (ours.is_top1 == theirs.is_top1)[mask].float().mean().item()
    assert agree >= (0.9 if autocast else 1.0)
    layers = trl_model.config.num_hidden_layers
    assert set(our_grads) == set(their_grads) and len(our_grads) == 6 * layers  # 3 modules x (A, B) per layer
    for name, grad in their_grads.items():
        assert grad.abs().sum() > 0
        torch.testing.assert_close(our_grads[name], grad, rtol=5e-2 if autocast else 1e-3,
                                   atol=5e-3 if autocast else 1e-5, msg=name)


def test_answer_logprobs_leaves_other_calls_alone(tiny_llama_path):
    """Without fused_lm_head (generation, the plain forward) the model's own forward runs: logits, no log-probs."""
    _, model = _model_pair(tiny_llama_path)
    ids, attention, labels = _batch(model.config.vocab_size)
    out = model(input_ids=ids, attention_mask=attention, labels=labels)
    assert out.logits.shape == (*ids.shape, model.config.vocab_size) and torch.isfinite(out.loss)
