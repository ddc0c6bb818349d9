"""Fixtures for the training tests (data helpers live in trainhelpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from trainhelpers import dpo_rows, sft_rows, write_jsonl


@pytest.fixture
def dpo_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "dpo.jsonl", dpo_rows(16))


@pytest.fixture
def sft_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "sft.jsonl", sft_rows(16))


# Settings that make a few steps on the tiny random model move clearly: high learning rate, no NLL term (so the
# DPO loss starts at log 2 exactly and must fall below it), short sequences.
FAST = dict(global_batch_size=8, per_device_batch_size=4, learning_rate=5e-3, warmup_ratio=0.0, max_length=128)


@pytest.fixture(scope="session")
def trained(tiny_llama_path, tmp_path_factory):
    """DPO -> SFT (from the DPO adapter) -> merge on tiny-random-llama, once per session."""
    from character.train import DPOTrainConfig, SFTTrainConfig, train_dpo, train_sft
    from character.train.merge import MergeConfig, merge_adapters

    root = tmp_path_factory.mktemp("trained")
    dpo_data = write_jsonl(root / "dpo.jsonl", dpo_rows(8))
    sft_data = write_jsonl(root / "sft.jsonl", sft_rows(8))
    dpo_cfg = DPOTrainConfig(model=tiny_llama_path, data=str(dpo_data), out=str(root / "dpo"), nll_weight=0.0,
                             max_steps=3, **FAST)
    dpo = train_dpo(dpo_cfg)
    sft_cfg = SFTTrainConfig(model=tiny_llama_path, data=str(sft_data), adapter=str(dpo), out=str(root / "sft"),
                             max_steps=2, **FAST)
    sft = train_sft(sft_cfg)
    merged = merge_adapters(MergeConfig(model=tiny_llama_path, adapters=[str(dpo), str(sft)],
                                        out=str(root / "merged")))
    return {"root": root, "dpo": dpo, "sft": sft, "merged": merged, "dpo_cfg": dpo_cfg, "sft_cfg": sft_cfg,
            "sft_data": sft_data}
