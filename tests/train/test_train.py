"""DPO and SFT training on the tiny random Llama: the loss falls, the output dir is complete, reruns skip,
SFT trains on the assistant tokens only, a killed run resumes, and 2-process CPU DDP works."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from trainhelpers import dpo_rows, write_jsonl

pytestmark = pytest.mark.slow

FAST_FLAGS = ["--global_batch_size", "8", "--per_device_batch_size", "4", "--learning_rate", "5e-3",
              "--warmup_ratio", "0", "--max_length", "128", "--nll_weight", "0"]


def _lora_b_norm(adapter: Path) -> float:
    from safetensors.torch import load_file

    return sum(float(v.abs().sum()) for k, v in load_file(str(adapter / "adapter_model.safetensors")).items()
               if "lora_B" in k)


def test_dpo_loss_falls_and_output_dir_is_complete(trained):
    out = trained["dpo"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["global_step"] == 3
    assert metrics["first"]["loss"] == pytest.approx(math.log(2), abs=1e-3)  # adapter starts at zero: policy == ref
    assert metrics["last"]["loss"] < math.log(2) - 0.05
    assert metrics["last"]["rewards/margins"] > 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["stage"] == "train-dpo"
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["r"] == 64 and cfg["lora_alpha"] == 128
    assert set(cfg["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert _lora_b_norm(out) > 0  # B starts at zero: non-zero means it trained
    for name in ("tokenizer.json", "tokenizer_config.json", "config.resolved.json"):
        assert (out / name).is_file(), name
    assert not (out / "checkpoints").exists()


def test_rerun_with_same_settings_skips(trained, capsys):
    from character.train import train_dpo

    stamp = (trained["dpo"] / "adapter_model.safetensors").stat().st_mtime_ns
    train_dpo(trained["dpo_cfg"])
    assert "skipping" in capsys.readouterr().out
    assert (trained["dpo"] / "adapter_model.safetensors").stat().st_mtime_ns == stamp


def test_sft_trains_assistant_tokens_from_the_dpo_model(trained):
    from transformers import AutoTokenizer

    from character.train.data import load_sft, tokenize_sft

    out = trained["sft"]
    metrics = json.loads((out / "metrics.json").read_text())
    tok = AutoTokenizer.from_pretrained(out)
    rows = load_sft(trained["sft_data"])
    expected = sum(sum(x != -100 for x in tokenize_sft(tok, r["messages"], 128)["labels"]) for r in rows)
    assert metrics["counts"]["trained_tokens"] == expected
    assert metrics["started_from_adapter"] == str(trained["dpo"])
    assert metrics["last"]["loss"] < metrics["first"]["loss"]
    assert json.loads((out / "manifest.json").read_text())["inputs"]["adapter"]


def test_unmatched_lora_target_is_reported(tiny_llama_path, capsys):
    import torch
    from transformers import AutoModelForCausalLM

    from character.errors import CharacterError
    from character.train.model import check_targets

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_path, dtype=torch.float32)
    assert check_targets(model, ["q_proj", "query_key_value"]) == ["q_proj"]
    assert "'query_key_value' matches no module" in capsys.readouterr().err
    with pytest.raises(CharacterError, match="none matches"):
        check_targets(model, ["wqkv"])


def _popen(args, log):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen([sys.executable, "-m", "character", *map(str, args)], stdout=log,
                            stderr=subprocess.STDOUT, env=env, start_new_session=True)


def test_kill_after_checkpoint_then_rerun_resumes_beside_the_finished_adapter(tiny_llama_path, tmp_path):
    """A run of new settings over a finished adapter is killed after a checkpoint: the finished adapter stays in
    place and complete; a plain rerun (no flag) continues from the checkpoint and swaps the new adapter in."""
    data = write_jsonl(tmp_path / "dpo.jsonl", dpo_rows(8))
    out = tmp_path / "run"
    common = ["train", "dpo", "--model", tiny_llama_path, "--data", data, "--out", out, "--save_steps", "1",
              *FAST_FLAGS]
    with open(tmp_path / "old.log", "w") as log:
        assert _popen([*common, "--max_steps", "1"], log).wait(timeout=300) == 0, (tmp_path / "old.log").read_text()
    old = {name: (out / name).read_bytes() for name in ("adapter_model.safetensors", "manifest.json")}

    args = [*common, "--max_steps", "4"]
    work = tmp_path / ".run.next"
    with open(tmp_path / "first.log", "w") as log:
        proc = _popen(args, log)
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            if (work / "checkpoints" / "checkpoint-2" / "trainer_state.json").is_file():
                break
            time.sleep(0.2)
        assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        os.killpg(proc.pid, signal.SIGKILL)  # a preemption: no chance to clean up
        proc.wait()
    # the finished adapter of the old settings is untouched; the killed run does not look finished
    assert {name: (out / name).read_bytes() for name in old} == old
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"
    assert json.loads((work / "manifest.json").read_text())["status"] == "running"
    assert not (work / "adapter_config.json").exists()

    with open(tmp_path / "second.log", "w") as log:  # the same command again: no --resume needed
        assert _popen(args, log).wait(timeout=300) == 0, (tmp_path / "second.log").read_text()[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["global_step"] == 4
    assert metrics["resumed_from"] and int(metrics["resumed_from"].rsplit("-", 1)[1]) >= 2
    steps = [e["step"] for e in metrics["log_history"] if "loss" in e]
    assert steps == [1, 2, 3, 4]  # the history of the killed run was restored with the checkpoint
    # ... and the resumed run itself trained only the steps after its checkpoint
    done_after = 4 - int(metrics["resumed_from"].rsplit("-", 1)[1])
    assert (tmp_path / "second.log").read_text().count("{'loss'") == done_after
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["config"]["max_steps"] == 4
    assert not work.exists() and not (tmp_path / ".run.old").exists()


def test_two_process_cpu_ddp(tiny_llama_path, tmp_path, cli):
    data = write_jsonl(tmp_path / "dpo.jsonl", dpo_rows(8))
    out = tmp_path / "ddp"
    # global batch 8 = 2 processes x 2 pairs x 2 accumulation steps
    flags = [f if f != "4" else "2" for f in FAST_FLAGS]
    r = cli("train", "dpo", "--model", tiny_llama_path, "--data", data, "--out", out, "--max_steps", "3",
            *flags, "--launcher", "cpu", "--num_processes", "2", timeout=400)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert r.stdout.count("saved adapter to") == 1  # rank 0 only
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["global_step"] == 3 and metrics["distributed"] == "MULTI_CPU"
    assert metrics["first"]["loss"] == pytest.approx(math.log(2), abs=1e-3)
    assert metrics["last"]["loss"] < math.log(2) - 0.05
    assert (out / "adapter_model.safetensors").is_file() and _lora_b_norm(out) > 0

