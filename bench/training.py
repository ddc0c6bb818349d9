"""Speed of DPO steps: TRL's defaults vs our configuration, same model, data, LoRA and batch.

    .venv/bin/python bench/training.py                       # smollm2-135m, 64 pairs, max length 512, CPU
    .venv/bin/python bench/training.py --pairs 32            # quicker
    python bench/training.py --model-shape llama-3.1-8b      # random-initialised 8B-shaped model (GPU runs)

Each variant runs in its own process (so peak RSS is its own) over the same 64 preference pairs of varied lengths:
- trl_default: DPOConfig's defaults (gradient checkpointing on, bf16 autocast, the reference forward every step,
  random batches), LoRA r64 on all linear layers;
- ours: character's settings (no gradient checkpointing on CPU, reference log-probs precomputed once in larger
  batches, length-grouped batches so little padding, and on CPU the answer-token LM head of train/logprobs.py
  instead of TRL's float32 fallback over every position), same LoRA.
Tokens/s counts the real (non-padding) tokens of chosen and rejected sequences per second of trainer time,
reference pre-computation included; tokens per CPU-second (process time) is reported too, since wall time is
meaningless on a shared machine. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

SHAPES = {
    # name: LlamaConfig keywords
    "llama-3.1-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192, rope_theta=500000.0),
}
WORDS = ("the quiet harbour kept its lights on through the storm while sailors argued about maps tea and the "
         "shape of distant islands that nobody had visited since the old lighthouse keeper retired").split()


def make_pairs(n: int, seed: int = 0) -> list[dict]:
    """Prompts and answers whose lengths vary from a few to a few hundred tokens."""
    rng = random.Random(seed)

    def text(lo, hi):
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))

    return [{"prompt": [{"role": "user", "content": text(5, 60)}],
             "chosen": [{"role": "assistant", "content": text(10, 300)}],
             "rejected": [{"role": "assistant", "content": text(10, 300)}]} for _ in range(n)]


def build_model(args):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    from character.models import resolve

    if args.model_shape:
        cfg = LlamaConfig(**SHAPES[args.model_shape], tie_word_embeddings=False)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        with torch.device(device):
            return LlamaForCausalLM(cfg).to(torch.bfloat16 if device == "cuda" else torch.float32)
    return AutoModelForCausalLM.from_pretrained(resolve(args.model), dtype=torch.float32)


def run_variant(args) -> dict:
    import torch
    from datasets import Dataset
    from trl import DPOConfig

    from character.models import resolve
    from character.train.common import lora_config, trainer_args
    from character.train.dpo import DPOTrainConfig, _trainer_class, add_lengths

    torch.manual_seed(0)
    tokenizer_path = resolve("smollm2-135m" if args.model_shape else args.model)
    from character.train.common import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_path)
    model = build_model(args)
    out = Path(args.workdir) / args.variant
    cfg = DPOTrainConfig(model=tokenizer_path, data="-", out=str(out), per_device_batch_size=args.batch,
                         global_batch_size=args.batch * args.accum, max_length=args.max_length, save_steps=10**6,
                         logging_steps=10**6)
    common = dict(output_dir=str(out), per_device_train_batch_size=args.batch, gradient_accumulation_steps=args.accum,
                  max_length=args.max_length, beta=0.1, loss_type=["sigmoid", "sft"], loss_weights=[1.0, 0.1],
                  learning_rate=5e-5, num_train_epochs=1, save_strategy="no", report_to="none", logging_steps=10**6,
                  use_cpu=not torch.cuda.is_available(), seed=0)
    if args.variant == "trl_default":
        dpo_args = DPOConfig(**common)  # everything else as TRL ships it
    else:
        ours = trainer_args(cfg, out)
        ours.update(common)
        dpo_args = DPOConfig(**ours, precompute_ref_log_probs=True, precompute_ref_batch_size=args.batch * 2)
    pairs = make_pairs(args.pairs)
    start, cpu_start = time.perf_counter(), time.process_time()
    if args.variant == "trl_default":
        from trl import DPOTrainer as trainer_class
    else:
        trainer_class = _trainer_class()  # character's: answer-token log-probs on CPU (train/logprobs.py)
    trainer = trainer_class(model=model, args=dpo_args, train_dataset=Dataset.from_list(pairs),
                            processing_class=tokenizer, peft_config=lora_config(cfg, model))
    if args.variant != "trl_default":
        trainer.train_dataset = add_lengths(trainer.train_dataset)
    trainer.train()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    ds = trainer.train_dataset
    tokens = sum(min(len(p) + len(c), args.max_length) + min(len(p) + len(r), args.max_length)
                 for p, c, r in zip(ds["prompt_ids"], ds["chosen_ids"], ds["rejected_ids"]))
    return {"variant": args.variant, "seconds": round(seconds, 2), "tokens": tokens,
            "tokens_per_s": round(tokens / seconds, 1), "cpu_seconds": round(cpu_seconds, 2),
            "tokens_per_cpu_s": round(tokens / cpu_seconds, 2), "steps": trainer.state.global_step,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "bf16": dpo_args.bf16, "gradient_checkpointing": dpo_args.gradient_checkpointing}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--model-shape", choices=sorted(SHAPES), default=None,
                   help="random-initialised model of this shape instead of --model (tokenizer: SmolLM2's)")
    p.add_argument("--pairs", type=int, default=64)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--batch", type=int, default=4, help="pairs per forward pass")
    p.add_argument("--accum", type=int, default=2, help="gradient accumulation steps")
    p.add_argument("--variants", default="trl_default,ours")
    p.add_argument("--variant", default=None, help=argparse.SUPPRESS)  # internal: run one variant here
    p.add_argument("--workdir", default="/tmp/character-bench-training")
    args = p.parse_args()
    if args.variant:
        print("RESULT " + json.dumps(run_variant(args)), flush=True)
        return
    results = {}
    for variant in args.variants.split(","):
        cmd = [sys.executable, __file__, "--variant", variant, "--model", args.model, "--pairs", str(args.pairs),
               "--max-length", str(args.max_length), "--batch", str(args.batch), "--accum", str(args.accum),
               "--workdir", args.workdir] + (["--model-shape", args.model_shape] if args.model_shape else [])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            sys.stderr.write(proc.stderr[-3000:])
            raise SystemExit(f"variant {variant} failed (exit {proc.returncode})")
        results[variant] = json.loads(lines[-1][len("RESULT "):])
        print(f"{variant:12s} {results[variant]}", flush=True)
    base, ours = results.get("trl_default"), results.get("ours")
    summary = {
        "model": args.model_shape or args.model, "pairs": args.pairs, "max_length": args.max_length,
        "tokens_per_s": {k: v["tokens_per_s"] for k, v in results.items()},
        "peak_rss_mb": {k: v["peak_rss_mb"] for k, v in results.items()},
        "seconds": {k: v["seconds"] for k, v in results.items()},
        "tokens_per_cpu_s": {k: v["tokens_per_cpu_s"] for k, v in results.items()},
    }
    if base and ours:
        summary["speedup_vs_trl_default"] = round(ours["tokens_per_s"] / base["tokens_per_s"], 2)
        # CPU time is what the process itself used: a fairer ratio when other jobs share the cores
        summary["cpu_time_speedup_vs_trl_default"] = round(ours["tokens_per_cpu_s"] / base["tokens_per_cpu_s"], 2)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
