"""The weights fingerprint that replaces TRL's hash_module for the precomputed reference log-probs' cache."""

from __future__ import annotations

import torch

from character.train import dpo
from character.train.dpo import weights_fingerprint


def _model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 4, bias=False))


def test_fingerprint_is_stable_and_sees_every_change(monkeypatch):
    a, b = _model(), _model()
    assert weights_fingerprint(a) == weights_fingerprint(b) == weights_fingerprint(a)
    assert weights_fingerprint(_model(seed=1)) != weights_fingerprint(a)
    with torch.no_grad():
        b[0].weight[3, 5] = torch.nextafter(b[0].weight[3, 5], torch.tensor(1.0))  # one ulp of one weight
    assert weights_fingerprint(b) != weights_fingerprint(a)
    c = _model()
    with torch.no_grad():  # the same values in another order: the plain sum is equal, the weighted one is not
        c[2].weight.copy_(c[2].weight.flip(1))
    assert weights_fingerprint(c) != weights_fingerprint(a)
    assert weights_fingerprint(_model().to(torch.bfloat16)) != weights_fingerprint(a)  # dtype is part of it
    whole = weights_fingerprint(a)
    monkeypatch.setattr(dpo, "_CHUNK", 7)  # chunked sums add up to the unchunked ones
    assert weights_fingerprint(a) == whole


def test_trainer_uses_it_only_while_it_is_built(tiny_llama_path, tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig
    from trl.trainer import dpo_trainer

    from character.train.common import load_tokenizer, lora_config
    from character.train.dpo import DPOTrainConfig, _trainer_class

    original = dpo_trainer.hash_module
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_path, dtype=torch.float32)
    rows = [{"prompt": [{"role": "user", "content": f"question {i}"}],
             "chosen": [{"role": "assistant", "content": "a kind answer"}],
             "rejected": [{"role": "assistant", "content": "no"}]} for i in range(4)]
    args = DPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=2, max_length=64, report_to="none",
                     use_cpu=True, precompute_ref_log_probs=True, precompute_ref_batch_size=4)
    cfg = DPOTrainConfig(model=tiny_llama_path, data="-", out=str(tmp_path))
    trainer = _trainer_class()(model=model, args=args, train_dataset=Dataset.from_list(rows),
                               processing_class=load_tokenizer(tiny_llama_path), peft_config=lora_config(cfg, model))
    assert trainer._precompute_model_hash == weights_fingerprint(trainer.model)
    assert "ref_chosen_logps" in trainer.train_dataset.column_names
    assert dpo_trainer.hash_module is original
