"""What DPO and SFT training share: settings, model + LoRA setup, trainer arguments, output directory.

The output directory of a training run is a PEFT adapter directory (loadable by vLLM's LoRARequest and by
PeftModel) plus tokenizer files, `config.resolved.json`, `metrics.json` and `manifest.json`. Checkpoints go to
`OUT/checkpoints/`; a rerun of the same settings and data continues from the last complete one (`--resume false`
starts over). The adapter files appear only when training has finished (moved in, `adapter_config.json` last), and
`manifest.json` says `complete` only after that. A finished adapter is replaced only by a finished one: a run with
other settings or data trains in `.OUT.next/` beside it and the two are swapped when it publishes.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Literal

from character.artifacts import StageDir, atomic_write_json, matches, read_manifest, sha256_file
from character.config import config_hash, field, to_dict
from character.errors import CharacterError
from character.hardware import cpu_has_bf16, on_gpu
from character.train.launch import is_main_process

# The paper trains every linear layer of the transformer blocks (not the LM head).
LLAMA_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PUBLISHED = ("adapter_config.json", "adapter_model.safetensors", "metrics.json", "config.resolved.json")


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


def model_fingerprint(path: str) -> str:
    """Identity of a base model for the manifest: config.json's hash plus weight file names and sizes."""
    p = Path(path)
    if not p.is_dir():
        return path  # a hub id
    import hashlib

    h = hashlib.sha256()
    for f in sorted(p.iterdir()):
        if f.is_file():
            h.update(f"{f.name}:{f.stat().st_size}".encode())
    if (p / "config.json").is_file():
        h.update(sha256_file(p / "config.json").encode())
    return h.hexdigest()[:16]


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise CharacterError(f"model '{path}': cannot load its tokenizer ({str(e).splitlines()[0]}); "
                             f"check the name or path") from None
    if tok.chat_template is None:
        raise CharacterError(f"model '{path}': the tokenizer has no chat template; use an instruct model or add "
                             f"one to its tokenizer_config.json")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(path: str, cfg: TrainConfig):
    import torch
    from transformers import AutoModelForCausalLM

    dtype = cfg.dtype if cfg.dtype != "auto" else ("bfloat16" if on_gpu() else "float32")
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
    except (OSError, ValueError) as e:
        raise CharacterError(f"model '{path}': cannot load it ({str(e).splitlines()[0]}); "
                             f"check the name or path") from None
    return model


def check_targets(model, targets: list[str]) -> list[str]:
    """Target names that match a module; warns for each that matches none (it would silently stay untrained)."""
    if targets == ["all-linear"]:
        return targets
    names = [n for n, _ in model.named_modules()]
    matched, unmatched = [], []
    for t in targets:
        (matched if any(n == t or n.endswith("." + t) for n in names) else unmatched).append(t)
    for t in unmatched:
        print(f"warning: LoRA target '{t}' matches no module of {type(model).__name__}; it is not trained "
              f"(module names look like {', '.join(sorted({n.rsplit('.', 1)[-1] for n in names if n})[:8])}, ...)",
              file=sys.stderr)
    if not matched:
        raise CharacterError(f"target_modules {targets}: none matches a module of {type(model).__name__}; "
                             f"use its linear layer names or ['all-linear']")
    return matched


def lora_config(cfg: TrainConfig, model):
    from peft import LoraConfig

    targets = check_targets(model, list(cfg.target_modules))
    return LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets[0] if targets == ["all-linear"] else targets,
                      bias="none", task_type="CAUSAL_LM")


def skip_lora_input_casts(trainer) -> int:
    """Under bf16 autocast, stop PEFT from casting each LoRA layer's input to the adapter's float32 dtype.

    Autocast runs the adapter's matmuls in bf16 anyway, so the cast is an exact round trip (bf16 -> float32 ->
    bf16, and the same for the gradient): three full copies of the layer input per LoRA layer and step. In a
    torch profile of an 8B DPO step on an H200 (r64 on all linear layers), copy kernels, mostly these, took 11%
    of the GPU time. Without torch autocast nothing changes: the input is cast as before. DeepSpeed and FSDP
    manage precision themselves, not through autocast, so they are left alone too. Returns the number of LoRA
    layers changed. The patch `lora-input-casts` (character/patches.py): a PEFT whose cast changed keeps it."""
    from character import patches

    if not trainer.args.bf16 or getattr(trainer, "is_deepspeed_enabled", False) or \
            getattr(trainer, "is_fsdp_enabled", False):
        return 0
    return patches.apply("lora-input-casts", trainer) or 0


def check_lora_input_casts() -> str | None:
    """PEFT's LoRA layers must cast their input in `_cast_input_dtype`, which reads `cast_input_dtype_enabled`."""
    import inspect

    from peft.tuners.lora.layer import Linear, LoraLayer
    from peft.tuners.tuners_utils import BaseTunerLayer

    if "cast_input_dtype_enabled" not in inspect.getsource(LoraLayer.__init__):
        return "LoraLayer has no cast_input_dtype_enabled flag"
    if "cast_input_dtype_enabled" not in inspect.getsource(BaseTunerLayer._cast_input_dtype):
        return "BaseTunerLayer._cast_input_dtype no longer reads cast_input_dtype_enabled"
    if "_cast_input_dtype(" not in inspect.getsource(Linear.forward):
        return "lora.Linear.forward no longer casts through _cast_input_dtype"
    return None


def disable_lora_input_casts(trainer) -> int:
    layers = [m for m in trainer.model.modules() if hasattr(m, "cast_input_dtype_enabled")]
    for m in layers:
        m.cast_input_dtype_enabled = False
    return len(layers)


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


def last_checkpoint(out: Path) -> str | None:
    """The newest checkpoint that was written completely (a kill can interrupt a save)."""
    ckpts = []
    for d in (out / "checkpoints").glob("checkpoint-*"):
        if (d / "trainer_state.json").is_file() and (d / "adapter_model.safetensors").is_file():
            try:
                ckpts.append((int(d.name.split("-")[1]), d))
            except ValueError:
                continue
    return str(max(ckpts)[1]) if ckpts else None


class Run:
    """One training run's output directory: skip if done, resume, publish beside a finished adapter, manifest.

    `final` is where the adapter lives; `out` is where this run works: the same directory, or `.NAME.next/` beside
    a finished adapter of other settings or data, which stays in place until this run publishes."""

    def __init__(self, cfg: TrainConfig, stage: str, inputs: dict[str, str]):
        self.cfg = cfg
        self.final = Path(cfg.out).expanduser()
        self.out = self.final
        self.dir = StageDir(self.final, stage)
        self.hash = config_hash(cfg)
        self.inputs = inputs
        self.started = time.time()

    def done(self) -> bool:
        return self.dir.is_complete(self.hash, self.inputs) and (self.final / "adapter_config.json").is_file()

    def begin(self) -> str | None:
        """Prepare the directory; returns the checkpoint to resume from (None: start fresh).

        Every process of a launch decides the same way: `StageDir.work_dir` reads only the final manifest, and
        the working directory's manifest is written by the main process only, after deciding."""
        work = self.dir.work_dir(self.hash, self.inputs)
        replacing = work != self.final
        same = matches(read_manifest(work), self.hash, self.inputs)
        resume_from = last_checkpoint(work) if self.cfg.resume and same else None
        if resume_from:
            print(f"{work}: resuming from {Path(resume_from).name} (same settings and data)", file=sys.stderr)
        elif not same and last_checkpoint(work):
            print(f"{work}: its checkpoints come from a run with other settings or data; starting from step 0",
                  file=sys.stderr)
        if is_main_process():
            work.mkdir(parents=True, exist_ok=True)
            if not replacing:  # an unfinished run's adapter files must not make this run look done
                for name in PUBLISHED:
                    (work / name).unlink(missing_ok=True)
            if resume_from is None and (work / "checkpoints").exists():
                shutil.rmtree(work / "checkpoints")
            self.dir.begin(to_dict(self.cfg), self.hash, self.inputs)
            assert self.dir.path == work, (self.dir.path, work)
        self.out = work
        return resume_from

    @property
    def staging(self) -> Path:
        return self.out / ".publish.tmp"

    def save(self, trainer) -> None:
        """Write the trained adapter and tokenizer to the staging directory. Call on every process: through the
        trainer, DeepSpeed ZeRO-3 and FSDP gather the adapter's partitioned weights before the main process
        writes them (a plain `model.save_pretrained` there would write its own shard only). Adapters the model
        carries frozen (SFT's started-from one) are not part of the result."""
        if is_main_process() and self.staging.exists():
            shutil.rmtree(self.staging)
        trainer.accelerator.wait_for_everyone()
        trainer.save_model(str(self.staging))
        if is_main_process():
            for sub in self.staging.iterdir():  # PEFT writes each non-default adapter in a subdirectory
                if sub.is_dir() and (sub / "adapter_config.json").is_file():
                    shutil.rmtree(sub)
            (self.staging / "training_args.bin").unlink(missing_ok=True)  # a pickle; the config is in JSON
            if not (self.staging / "adapter_model.safetensors").is_file():
                raise CharacterError(f"{self.out}: the trainer saved no adapter_model.safetensors; the training "
                                     f"finished but its adapter was not written")

    def publish(self, metrics: dict) -> None:
        """Main process, after `save`: metrics and config join the adapter; the adapter config is moved in last,
        the manifest after it, and a run working beside a finished adapter is swapped in for it."""
        staging = self.staging
        atomic_write_json(staging / "metrics.json", metrics)
        atomic_write_json(staging / "config.resolved.json", to_dict(self.cfg))
        names = sorted(p.name for p in staging.iterdir())
        for name in [n for n in names if n != "adapter_config.json"] + ["adapter_config.json"]:
            os.replace(staging / name, self.out / name)
        staging.rmdir()
        if not self.cfg.keep_checkpoints:
            shutil.rmtree(self.out / "checkpoints", ignore_errors=True)
        (self.out / ".launch-config.yaml").unlink(missing_ok=True)
        self.dir.finish(counts=metrics.get("counts", {}), timings={"train_s": round(time.time() - self.started, 1)})
        self.out = self.final
        print(f"saved adapter to {self.out}", flush=True)


def summarize(trainer, counts: dict, keys: tuple[str, ...]) -> dict:
    """metrics.json: first/last values of the logged series plus the full log history."""
    history = trainer.state.log_history
    series: dict[str, list[float]] = {}
    for entry in history:
        for k, v in entry.items():
            if isinstance(v, (int, float)) and (k in keys or k == "loss"):
                series.setdefault(k, []).append(float(v))
    final = next((e for e in reversed(history) if "train_runtime" in e), {})
    return {
        "global_step": trainer.state.global_step,
        "world_size": world_size(),
        "distributed": str(trainer.accelerator.distributed_type).rsplit(".", 1)[-1],  # e.g. FSDP, DEEPSPEED
        "counts": counts,
        "first": {k: v[0] for k, v in series.items()},
        "last": {k: v[-1] for k, v in series.items()},
        "mean": {k: sum(v) / len(v) for k, v in series.items()},
        "train_runtime_s": final.get("train_runtime"),
        "train_loss": final.get("train_loss"),
        "log_history": history,
    }

