"""On a GPU (`pytest -m gpu`; skipped without CUDA): DPO then SFT through `accelerate launch` with each shipped
GPU launcher on one GPU, each writing a complete adapter that loads and changes the model's output. Under ZeRO-3 and
FSDP the LoRA weights are partitioned; an adapter saved from one process's shard would hold empty tensors.

    pytest -m gpu tests/train/test_gpu_launchers.py

A GPU machine may lack DeepSpeed: install it from a wheel with DS_BUILD_OPS=0; the zero2/zero3 cases skip without it.
"""

from __future__ import annotations

import importlib.util

import pytest
from trainhelpers import dpo_rows, sft_rows, write_jsonl

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu, pytest.mark.slow,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

FLAGS = ["--global_batch_size", "4", "--per_device_batch_size", "2", "--learning_rate", "5e-3", "--warmup_ratio",
         "0", "--max_length", "128", "--max_steps", "2", "--lora_rank", "8", "--lora_alpha", "16",
         "--num_processes", "1"]


def adapter_changes_output(base: str, adapter, ids) -> float:
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    assert tensors and all(t.numel() > 0 for t in tensors.values()), "an adapter tensor is empty (a shard?)"
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).cuda()
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        tuned = PeftModel.from_pretrained(model, str(adapter)).cuda()(input_ids=ids).logits
    return float((tuned - plain).abs().max())


@pytest.mark.parametrize("launcher", ["ddp", "zero2", "zero3", "fsdp"])
def test_dpo_and_sft_through_the_launcher_write_complete_adapters(launcher, tiny_llama_path, tmp_path, cli):
    if launcher.startswith("zero") and importlib.util.find_spec("deepspeed") is None:
        pytest.skip("deepspeed is not installed")
    from transformers import AutoTokenizer

    dpo_data = write_jsonl(tmp_path / "dpo.jsonl", dpo_rows(8))
    sft_data = write_jsonl(tmp_path / "sft.jsonl", sft_rows(8))
    dpo, sft = tmp_path / "dpo", tmp_path / "sft"
    r = cli("train", "dpo", "--model", tiny_llama_path, "--data", dpo_data, "--out", dpo, "--launcher", launcher,
            "--nll_weight", "0", *FLAGS, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    r = cli("train", "sft", "--model", tiny_llama_path, "--data", sft_data, "--adapter", dpo, "--out", sft,
            "--launcher", launcher, *FLAGS, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    ids = AutoTokenizer.from_pretrained(tiny_llama_path)("Hello there", return_tensors="pt")["input_ids"].cuda()
    for adapter in (dpo, sft):
        assert adapter_changes_output(tiny_llama_path, adapter, ids) > 0, adapter


def test_sft_starting_logits_equal_base_plus_dpo_in_bf16_on_gpu(tiny_llama_path, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from character.train import DPOTrainConfig, train_dpo
    from character.train.sft import SFTTrainConfig, start_model

    dpo = train_dpo(DPOTrainConfig(model=tiny_llama_path, data=str(write_jsonl(tmp_path / "d.jsonl", dpo_rows(8))),
                                   out=str(tmp_path / "dpo"), max_steps=2, global_batch_size=4,
                                   per_device_batch_size=2, lora_rank=8, lora_alpha=16, nll_weight=0.0))
    cfg = SFTTrainConfig(model=tiny_llama_path, data="unused", out=str(tmp_path / "sft"), adapter=str(dpo),
                         dtype="bfloat16", lora_rank=8, lora_alpha=16)
    model, _ = start_model(tiny_llama_path, cfg)
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(tiny_llama_path)("Hello there", return_tensors="pt")["input_ids"].cuda()
    reference = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_llama_path, dtype=torch.bfloat16), str(dpo)).cuda()
    with torch.no_grad():
        assert torch.equal(model.cuda()(input_ids=ids).logits, reference(input_ids=ids).logits)
