"""Settings shared by `character train dpo` and `character train sft`, and the trainer arguments they become.

`TrainConfig` holds the paper's defaults; `trainer_args` turns it into keyword arguments for TRL's DPOConfig and
SFTConfig (both TrainingArguments), choosing bf16 autocast where the hardware has it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from pathlib import Path
from typing import Literal

from character.config import field
from character.errors import CharacterError
from character.hardware import cpu_has_bf16, on_gpu

# The paper trains every linear layer of the transformer blocks (not the LM head).
LLAMA_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

@dataclasses.dataclass
class TrainConfig:
    """Settings shared by `character train dpo` and `character train sft` (defaults: the paper's)."""

    model: str = field("smollm2-135m", help="base model: alias, local checkpoint dir or hub id")
    data: str = field("", help="a JSONL file or a stage directory of shard-*.jsonl files")
    out: str = field("", help="output directory (adapter, tokenizer, metrics, checkpoints)", hash=False)
    resume: bool = field(True, help="continue from the last complete checkpoint of an interrupted run with the same "
                         "settings and data (false: start over; checkpoints of other settings are never used)",
                         hash=False)
    seed: int = field(0, help="random seed (LoRA init, data order)")
    lora_rank: int = field(64, help="LoRA rank r")
    lora_alpha: float = field(128.0, help="LoRA alpha (scale = alpha / r)")
    lora_dropout: float = field(0.0, help="dropout on the LoRA input")
    target_modules: list[str] = field(help="module names to adapt, or ['all-linear']; a name matching no module "
                                           "is reported", factory=lambda: list(LLAMA_LINEAR))
    learning_rate: float = field(5e-5, help="peak learning rate")
    warmup_ratio: float = field(0.1, help="share of the steps spent warming up")
    lr_scheduler: str = field("cosine", help="learning-rate schedule after warm-up (transformers name)")
    adam_beta1: float = field(0.9, help="Adam beta1")
    adam_beta2: float = field(0.98, help="Adam beta2")
    weight_decay: float = field(0.0, help="AdamW weight decay")
    global_batch_size: int = field(32, help="sequences (pairs for DPO) per optimizer step over all processes")
    per_device_batch_size: int = field(4, help="sequences per forward pass; the rest is gradient accumulation",
                                       hash=False)
    epochs: float = field(1.0, help="passes over the data")
    max_steps: int = field(0, help="stop after this many optimizer steps (0: run the epochs)")
    dtype: Literal["auto", "float32", "bfloat16"] = field(
        "auto", help="weights dtype; auto: bfloat16 weights on GPU, float32 weights on CPU, with bf16 autocast "
                     "wherever the hardware has bf16 (float32: no autocast)")
    gradient_checkpointing: bool = field(False, help="recompute activations in backward (less memory, slower)",
                                         hash=False)
    group_by_length: bool = field(True, help="batch sequences of similar length together (less padding)")
    save_steps: int = field(50, help="save a checkpoint every N optimizer steps", hash=False)
    keep_checkpoints: bool = field(False, help="keep OUT/checkpoints after a successful run", hash=False)
    logging_steps: int = field(1, help="log metrics every N steps", hash=False)
    report_to: Literal["none", "wandb", "tensorboard"] = field("none", help="experiment tracker", hash=False)
    launcher: str = field("none", help="none (this process), single, ddp, zero2, zero3, fsdp or cpu: "
                                       "run through `accelerate launch` with the shipped config", hash=False)
    num_processes: int = field(0, help="processes for the launcher (0: the config's default)", hash=False)
    launcher_args: str = field("", help="extra `accelerate launch` flags, e.g. multi-node rendezvous", hash=False)

    def __post_init__(self):
        problems = []
        if not self.data:
            problems.append("'data' is required (a JSONL file or stage directory)")
        if not self.out:
            problems.append("'out' is required (the output directory)")
        if self.lora_rank < 1:
            problems.append("lora_rank must be >= 1")
        if self.global_batch_size < 1 or self.per_device_batch_size < 1:
            problems.append("batch sizes must be >= 1")
        elif self.global_batch_size % self.per_device_batch_size:
            problems.append(f"global_batch_size {self.global_batch_size} is not a multiple of per_device_batch_size "
                            f"{self.per_device_batch_size}")
        if not 0 <= self.warmup_ratio < 1:
            problems.append("warmup_ratio must be in [0, 1)")
        from character.train.launch import LAUNCHERS

        if self.launcher not in LAUNCHERS:
            problems.append(f"launcher must be one of {', '.join(LAUNCHERS)}")
        if not self.target_modules:
            problems.append("target_modules is empty")
        if problems:
            raise ValueError("; ".join(problems))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def grad_accumulation(cfg: TrainConfig) -> int:
    per_step = cfg.per_device_batch_size * world_size()
    if cfg.global_batch_size % per_step:
        raise CharacterError(f"global_batch_size {cfg.global_batch_size} is not divisible by per_device_batch_size "
                             f"x processes = {per_step}; change one of them")
    return cfg.global_batch_size // per_step


def trainer_args(cfg: TrainConfig, out: Path) -> dict:
    """Keyword arguments for TRL's DPOConfig / SFTConfig (both are TrainingArguments)."""
    gpu = on_gpu()
    # bf16 autocast: on GPUs, and on CPUs with native bf16 (AVX512-BF16/AMX), where it is ~2x faster than fp32
    bf16 = cfg.dtype != "float32" and (gpu or cpu_has_bf16())
    tracker = {"wandb": "wandb", "tensorboard": "tensorboard"}.get(cfg.report_to)
    if tracker and importlib.util.find_spec(tracker) is None:
        raise CharacterError(f"report_to {tracker}: the '{tracker}' package is not installed; "
                             f"`pip install {tracker}` or use report_to none")
    if cfg.report_to == "tensorboard":  # transformers 5 takes the event directory from the environment
        os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(out / "logs"))
    return dict(
        output_dir=str(out / "checkpoints"), seed=cfg.seed, data_seed=cfg.seed,
        learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup_ratio,  # < 1: a ratio
        adam_beta1=cfg.adam_beta1, adam_beta2=cfg.adam_beta2, weight_decay=cfg.weight_decay,
        per_device_train_batch_size=cfg.per_device_batch_size, gradient_accumulation_steps=grad_accumulation(cfg),
        num_train_epochs=cfg.epochs, max_steps=cfg.max_steps if cfg.max_steps > 0 else -1,
        bf16=bf16, fp16=False, use_cpu=not gpu,
        gradient_checkpointing=cfg.gradient_checkpointing,
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        save_strategy="steps", save_steps=cfg.save_steps, save_only_model=False,
        logging_steps=cfg.logging_steps, report_to=cfg.report_to,
        disable_tqdm=False, dataloader_num_workers=0, ddp_find_unused_parameters=False,
    )
