"""Introspective SFT: train a LoRA adapter on self-reflection and self-interaction conversations.

    character train sft --data runs/x/sft-data --adapter runs/x/train-dpo --out runs/x/train-sft

Starts from the distilled model exactly: the DPO adapter (`--adapter`) sits frozen, unmerged, on the base and a
fresh LoRA is trained on top of both, so `character merge` can later add both adapters to the base with their
weights. (Merging the DPO adapter into bf16 weights first would round away every update smaller than bf16's step
at that weight, and SFT would learn from a model the final merge never makes.)
The loss covers every assistant turn of each (multi-turn) conversation and nothing else, end-of-turn token
included (so the model learns to stop even where the pad token equals EOS); see data.tokenize_sft.
Defaults are the paper's: LoRA r64/alpha128, lr 5e-5, 10% warm-up, cosine, global batch 32, max length 3072.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from character.config import command, field
from character.train.config import TrainConfig


@dataclasses.dataclass
class SFTTrainConfig(TrainConfig):
    """`character train sft` settings."""

    adapter: str | None = field(None, help="the DPO adapter to start from (kept frozen under the new one, not "
                                           "merged); none: train on the base")
    max_length: int = field(3072, help="longest conversation in tokens (longer ones are cut at the end)")
    padding_free: bool = field(False, help="flatten each batch into one sequence without padding "
                                           "(needs an attention kernel that honours position ids)")


def tokenized_dataset(tokenizer, rows: list[dict], max_length: int):
    from datasets import Dataset

    from character.errors import CharacterError
    from character.train.data import tokenize_sft

    out = []
    for i, row in enumerate(rows):
        enc = tokenize_sft(tokenizer, row["messages"], max_length)
        if all(label == -100 for label in enc["labels"]):
            raise CharacterError(f"sft data row {i + 1}: no assistant token left within max_length {max_length}; "
                                 f"raise max_length or shorten the conversation")
        out.append(enc)
    return Dataset.from_list(out)


FROZEN = "dpo"  # the started-from adapter's name; the trained one is PEFT's "default", saved at the top level


def start_model(base: str, cfg: SFTTrainConfig):
    """The model SFT trains and the LoRA config for the trainer to add (None when the model carries it already).

    With `--adapter`, the base carries the DPO adapter as it was trained, frozen, and a fresh trainable LoRA
    ("default") on top; both are active, so the starting model is base + DPO exactly, in any weights dtype."""
    from character.train.model import load_model, lora_config

    model = load_model(base, cfg)
    lora = lora_config(cfg, model)
    if not cfg.adapter:
        return model, lora
    from peft import PeftModel

    model = PeftModel.from_pretrained(model, str(Path(cfg.adapter).expanduser()), adapter_name=FROZEN,
                                      is_trainable=False)
    model.add_adapter("default", lora)
    model.base_model.set_adapter([FROZEN, "default"])
    for name, param in model.named_parameters():
        param.requires_grad = ".default." in name and "lora_" in name
    return model, None


def train_sft(cfg: SFTTrainConfig) -> Path:
    from character.identity import identity
    from character.models import check_adapter, resolve
    from character.train.config import trainer_args
    from character.train.data import load_sft
    from character.train.model import load_tokenizer, skip_lora_input_casts
    from character.train.run_dir import Run, summarize

    base = resolve(cfg.model)
    rows = load_sft(cfg.data)
    inputs = {"model": identity(base), "data": identity(cfg.data)}
    if cfg.adapter:
        check_adapter(cfg.adapter, base)
        inputs["adapter"] = identity(cfg.adapter)
    run = Run(cfg, "train-sft", inputs)
    if not run.start("sft"):
        return run.final

    from trl import SFTConfig, SFTTrainer

    tokenizer = load_tokenizer(base)
    model, peft_config = start_model(base, cfg)
    dataset = tokenized_dataset(tokenizer, rows, cfg.max_length)
    args = SFTConfig(**trainer_args(cfg, run.out), max_length=cfg.max_length, padding_free=cfg.padding_free,
                     packing=False, assistant_only_loss=False, completion_only_loss=False)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=peft_config)
    skip_lora_input_casts(trainer)
    trainer.train(resume_from_checkpoint=run.resume_from)

    run.save(trainer)  # every process: ZeRO-3 and FSDP gather the adapter's shards
    if trainer.accelerator.is_main_process:
        n_tokens = sum(len(r["input_ids"]) for r in dataset)
        n_trained = sum(sum(1 for x in r["labels"] if x != -100) for r in dataset)
        counts = {"conversations": len(rows), "tokens": n_tokens, "trained_tokens": n_trained,
                  "steps": trainer.state.global_step}
        metrics = summarize(trainer, counts, ("mean_token_accuracy", "entropy"))
        metrics["started_from_adapter"] = cfg.adapter
        run.publish(metrics)
    trainer.accelerator.wait_for_everyone()
    return run.out


SFT_COMMAND = command(SFTTrainConfig, train_sft, "Introspective SFT: a LoRA adapter trained on the assistant turns.")
