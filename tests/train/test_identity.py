"""Identities of inputs: files, stage and model directories, names, and weights in memory (the fingerprint that
replaces TRL's hash_module for the precomputed reference log-probs' cache)."""

from __future__ import annotations

import torch

from character import identity as I
from character.identity import identity, weights_identity


def _model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 4, bias=False))


def test_fingerprint_is_stable_and_sees_every_change(monkeypatch):
    a, b = _model(), _model()
    assert weights_identity(a) == weights_identity(b) == weights_identity(a)
    assert weights_identity(_model(seed=1)) != weights_identity(a)
    with torch.no_grad():
        b[0].weight[3, 5] = torch.nextafter(b[0].weight[3, 5], torch.tensor(1.0))  # one ulp of one weight
    assert weights_identity(b) != weights_identity(a)
    c = _model()
    with torch.no_grad():  # the same values in another order: the plain sum is equal, the weighted one is not
        c[2].weight.copy_(c[2].weight.flip(1))
    assert weights_identity(c) != weights_identity(a)
    assert weights_identity(_model().to(torch.bfloat16)) != weights_identity(a)  # dtype is part of it
    whole = weights_identity(a)
    monkeypatch.setattr(I, "_CHUNK", 7)  # chunked sums add up to the unchunked ones
    assert weights_identity(a) == whole


def test_trainer_uses_it_only_while_it_is_built(tiny_llama_path, tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig
    from trl.trainer import dpo_trainer

    from character.train.dpo import DPOTrainConfig, _trainer_class
    from character.train.model import load_tokenizer, lora_config

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
    assert trainer._precompute_model_hash == weights_identity(trainer.model)
    assert "ref_chosen_logps" in trainer.train_dataset.column_names
    assert dpo_trainer.hash_module is original


def test_model_directories_files_and_names(tmp_path):
    import os
    import shutil

    from character.artifacts import StageDir

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"hidden_size": 8}')
    weights = model / "model.safetensors"
    weights.write_bytes(os.urandom(3 << 20))
    first = identity(model)
    assert len(first) == 16
    copy = tmp_path / "copy"
    shutil.copytree(model, copy)
    assert identity(copy) == first  # where a model lives is not part of what it is
    data = bytearray(weights.read_bytes())
    data[len(data) // 2:] = os.urandom(len(data) - len(data) // 2)  # a fine-tune rewrites most bytes
    (copy / "model.safetensors").write_bytes(bytes(data))
    assert identity(copy) != first
    (copy / "config.json").write_text('{"hidden_size": 16}')  # small files count byte for byte
    assert identity(copy) != identity(model)
    assert identity("org/some-hub-model") == "org/some-hub-model"  # a hub id names itself
    f = tmp_path / "x.jsonl"
    f.write_text("{}\n")
    assert identity(f) != identity(tmp_path / "y.jsonl")
    stage = StageDir(tmp_path / "stage", "teacher")  # a finished stage: its manifest's output hash
    stage.begin({}, "h", {})
    (stage.path / "shard-00000.jsonl").write_text("{}\n")
    stage.finish(counts={})
    assert identity(stage.path) == stage.manifest["output_hash"]
