"""DPO distillation: train a LoRA adapter to prefer the teacher's in-character answers over the student's.

    character train dpo --data runs/x/dpo-data --out runs/x/train-dpo [--model smollm2-135m]
    character train dpo ... --launcher cpu --num_processes 2      # through accelerate (see launch.py)

TRL's DPOTrainer with the paper's settings: LoRA r64/alpha128 on all linear layers, beta 0.1 plus an NLL term of
weight 0.1 on the chosen answers, lr 5e-5 with 10% warm-up then cosine, global batch 32, one epoch, max length
1024, Adam betas (0.9, 0.98). The reference policy is the base with the adapter disabled (no second copy); its
log-probs are computed once before training by default (`precompute_ref`), which removes a forward pass per step.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

from character.config import command, field
from character.train.config import TrainConfig
from character.train.model import skip_lora_input_casts


@dataclasses.dataclass
class DPOTrainConfig(TrainConfig):
    """`character train dpo` settings."""

    beta: float = field(0.1, help="DPO beta: how far the policy may move from the reference")
    nll_weight: float = field(0.1, help="weight of the NLL loss on the chosen answers (0: plain DPO)")
    max_length: int = field(1024, help="longest prompt + answer in tokens (longer ones are cut at the end)")
    precompute_ref: bool = field(True, help="compute the reference log-probs once before training (faster)",
                                 hash=False)
    answer_logprobs: bool = field(True, help="on CPU, score only the answer tokens with a bf16 LM head instead of "
                                             "TRL's float32 fallback over every position (train/logprobs.py)",
                                  hash=False)


def _trainer_class():
    from trl import DPOTrainer

    class CharacterDPOTrainer(DPOTrainer):
        """Keeps a `length` column so the length-grouped sampler sees the pair lengths; on CPU, scores answers
        with train/logprobs.py unless `answer_logprobs=False`."""

        def __init__(self, *args, answer_logprobs: bool = True, **kwargs):
            self._answer_logprobs = answer_logprobs  # read by the precompute that DPOTrainer.__init__ runs
            with _fast_model_hash():
                super().__init__(*args, **kwargs)
            self._use_answer_logprobs()
            skip_lora_input_casts(self)

        def _use_answer_logprobs(self):
            if self._answer_logprobs:  # once: after TRL added its fused head, before the first forward
                from character.train import logprobs

                model = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
                logprobs.install(model)
                self._answer_logprobs = False

        def _precompute_ref_logps(self, *args, **kwargs):
            self._use_answer_logprobs()
            return super()._precompute_ref_logps(*args, **kwargs)

        def _set_signature_columns_if_needed(self):
            super()._set_signature_columns_if_needed()
            if "length" not in self._signature_columns:
                self._signature_columns = [*self._signature_columns, "length"]

    return CharacterDPOTrainer


@contextlib.contextmanager
def _fast_model_hash():
    """TRL keys its cache of precomputed reference log-probs on `hash_module(model)`, which copies every weight to
    the host as float32 and SHA-256s the bytes: 32 GB and over a minute for an 8B model on a GPU, longer than the
    precompute itself. Swap in `identity.weights_identity` while DPOTrainer.__init__ runs (the patch
    `fast-reference-hash`, character/patches.py)."""
    from character import patches

    restore = patches.apply("fast-reference-hash")
    try:
        yield
    finally:
        if restore:
            restore()


def check_reference_hash() -> str | None:
    """DPOTrainer must still hash the model with the `hash_module(module)` it imports into its own module."""
    import inspect

    from trl.trainer import dpo_trainer

    original = getattr(dpo_trainer, "hash_module", None)
    if original is None or list(inspect.signature(original).parameters) != ["module"]:
        return "trl.trainer.dpo_trainer.hash_module(module) is gone"
    if "hash_module(" not in inspect.getsource(dpo_trainer.DPOTrainer.__init__):
        return "DPOTrainer.__init__ no longer calls hash_module"
    return None


def swap_reference_hash():
    """Put `identity.weights_identity` in; returns the function that puts TRL's back."""
    from trl.trainer import dpo_trainer

    from character.identity import weights_identity

    original = dpo_trainer.hash_module
    dpo_trainer.hash_module = weights_identity

    def restore():
        dpo_trainer.hash_module = original

    return restore


def shared_dataset(rows: list[dict], where: Path):
    """A datasets.Dataset on disk under OUT, so all processes share its cache files (precomputed log-probs)."""
    import shutil

    import torch
    from accelerate import PartialState
    from datasets import Dataset, load_from_disk

    state = PartialState(cpu=not torch.cuda.is_available())  # the trainer's arguments made it already; same one
    if state.is_main_process:
        if where.exists():
            shutil.rmtree(where)
        Dataset.from_list(rows).save_to_disk(str(where))
    state.wait_for_everyone()
    return load_from_disk(str(where))


def add_lengths(dataset):
    def length(example):
        return {"length": len(example["prompt_ids"]) + max(len(example["chosen_ids"]), len(example["rejected_ids"]))}

    return dataset.map(length, desc="Measuring lengths")


def train_dpo(cfg: DPOTrainConfig) -> Path:
    from character.identity import identity
    from character.models import resolve
    from character.train.config import trainer_args
    from character.train.data import load_dpo
    from character.train.model import load_model, load_tokenizer, lora_config
    from character.train.run_dir import Run, summarize

    base = resolve(cfg.model)
    rows = load_dpo(cfg.data)
    run = Run(cfg, "train-dpo", {"model": identity(base), "data": identity(cfg.data)})
    if not run.start("dpo"):
        return run.final

    from trl import DPOConfig

    tokenizer = load_tokenizer(base)
    model = load_model(base, cfg)
    peft_config = lora_config(cfg, model)
    losses = ["sigmoid", "sft"] if cfg.nll_weight > 0 else ["sigmoid"]
    args = DPOConfig(
        **trainer_args(cfg, run.out), beta=cfg.beta, loss_type=losses,
        loss_weights=[1.0, cfg.nll_weight] if cfg.nll_weight > 0 else None, max_length=cfg.max_length,
        precompute_ref_log_probs=cfg.precompute_ref, precompute_ref_batch_size=cfg.per_device_batch_size * 2,
    )
    trainer = _trainer_class()(model=model, args=args, train_dataset=shared_dataset(rows, run.out / ".dataset"),
                               processing_class=tokenizer, peft_config=peft_config,
                               answer_logprobs=cfg.answer_logprobs)
    if cfg.group_by_length:
        trainer.train_dataset = add_lengths(trainer.train_dataset)
    trainer.train(resume_from_checkpoint=run.resume_from)

    run.save(trainer)  # every process: ZeRO-3 and FSDP gather the adapter's shards
    if trainer.accelerator.is_main_process:
        counts = {"pairs": len(rows), "steps": trainer.state.global_step}
        metrics = summarize(trainer, counts, ("rewards/margins", "rewards/accuracies", "rewards/chosen",
                                              "rewards/rejected", "logps/chosen", "logps/rejected"))
        import shutil

        shutil.rmtree(run.out / ".dataset", ignore_errors=True)  # before publish: not part of the output hash
        run.publish(metrics)
    trainer.accelerator.wait_for_everyone()
    return run.out


DPO_COMMAND = command(DPOTrainConfig, train_dpo, "DPO distillation: a LoRA adapter preferring the teacher's answers.")
