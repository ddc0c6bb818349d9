"""Speed of DPO steps: TRL's defaults vs our configuration, same model, data, LoRA and batch.

    .venv/bin/python bench/training.py                       # smollm2-135m, 64 pairs, max length 512, CPU
    .venv/bin/python bench/training.py --pairs 32            # quicker
    python bench/training.py --model-shape llama-3.1-8b --pairs 512 --batch 8   # random 8B-shaped model, GPU: MFU

Each variant runs in its own process (so peak RSS is its own) over the same 64 preference pairs of varied lengths:
- trl_default: DPOConfig's defaults (gradient checkpointing on, bf16 autocast, the reference forward every step,
  random batches), LoRA r64 on all linear layers;
- ours: character's settings (no gradient checkpointing on CPU, reference log-probs precomputed once in larger
  batches, length-grouped batches so little padding, and on CPU the answer-token LM head of train/logprobs.py
  instead of TRL's float32 fallback over every position), same LoRA.
Tokens/s counts the real (non-padding) tokens of chosen and rejected sequences per second of trainer time,
reference pre-computation included; tokens per CPU-second (process time) is reported too, since wall time is
meaningless on a shared machine. The last line is one JSON object.

MFU (on CUDA, or wherever --peak-tflops is given) counts model FLOPs per real token, as PaLM's appendix does:
the policy's forward and backward through the frozen weights (2N + 2N, N the multiply-adds of every linear layer,
LM head included), the LoRA weights' forward and backward (6 N_lora), the reference forward (2N, precomputed or
not), and causal attention (forward once for each of policy and reference, backward twice). Recomputation under
gradient checkpointing is not counted: it is work the hardware does, not work the model needs.
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
    "llama-3.2-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192, rope_theta=500000.0),
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


PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "H800": 989.4, "A100": 312.0, "L40S": 362.1}  # dense


def peak_tflops(args) -> float | None:
    import torch

    if args.peak_tflops:
        return args.peak_tflops
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    return None


def train_flops(model, seq_lens: list[int]) -> float:
    """Model FLOPs of one DPO epoch with LoRA over sequences of these real lengths (see the module docstring)."""
    import torch

    base = lora = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            n = module.in_features * module.out_features
            if "lora_" in name:
                lora += n
            else:
                base += n
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    attn_width = cfg.num_attention_heads * head_dim
    tokens = sum(seq_lens)
    # causal attention, forward: QK^T and AV, 2 FLOPs per multiply-add, s(s+1)/2 query-key pairs per layer
    attn_fwd = sum(2 * 2 * attn_width * s * (s + 1) / 2 for s in seq_lens) * cfg.num_hidden_layers
    return tokens * (6 * base + 6 * lora) + 4 * attn_fwd


def build_model(args):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    from character.models import resolve

    if args.model_shape:
        cfg = LlamaConfig(**SHAPES[args.model_shape], tie_word_embeddings=False)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
        torch.set_default_dtype(dtype)  # build in bf16 on GPUs: no fp32 copy of 8B weights first
        try:
            with torch.device(device):
                return LlamaForCausalLM(cfg)
        finally:
            torch.set_default_dtype(torch.float32)
    return AutoModelForCausalLM.from_pretrained(resolve(args.model), dtype=torch.float32)


def run_variant(args) -> dict:
    import torch
    from datasets import Dataset
    from trl import DPOConfig

    from character.models import resolve
    from character.train.config import trainer_args
    from character.train.dpo import DPOTrainConfig, _trainer_class, add_lengths
    from character.train.model import lora_config

    torch.manual_seed(0)
    from character.train.model import load_tokenizer

    tokenizer_path = resolve(args.tokenizer if args.model_shape else args.model)
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
    init_seconds = time.perf_counter() - start  # tokenizing, and for ours the reference log-probs
    trainer.train()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    ds = trainer.train_dataset
    seq_lens = [min(len(p) + len(a), args.max_length)
                for p, c, r in zip(ds["prompt_ids"], ds["chosen_ids"], ds["rejected_ids"]) for a in (c, r)]
    tokens = sum(seq_lens)
    peak = peak_tflops(args)
    flops = train_flops(trainer.model, seq_lens)
    mfu = {"model_tflops": round(flops / 1e12, 1), "achieved_tflops_per_s": round(flops / seconds / 1e12, 2)}
    if peak:
        mfu.update(peak_tflops=peak, mfu=round(flops / seconds / 1e12 / peak, 4))
    if torch.cuda.is_available():
        mfu.update(device=torch.cuda.get_device_name(), peak_gpu_mem_gb=round(torch.cuda.max_memory_allocated() / 2**30, 1))
    return {"variant": args.variant, "seconds": round(seconds, 2), "init_seconds": round(init_seconds, 2),
            "tokens": tokens,
            "tokens_per_s": round(tokens / seconds, 1), "cpu_seconds": round(cpu_seconds, 2),
            "tokens_per_cpu_s": round(tokens / cpu_seconds, 2), "steps": trainer.state.global_step,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "bf16": dpo_args.bf16, "gradient_checkpointing": dpo_args.gradient_checkpointing, **mfu}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--model-shape", choices=sorted(SHAPES), default=None,
                   help="random-initialised model of this shape instead of --model (tokenizer: SmolLM2's)")
    p.add_argument("--tokenizer", default="smollm2-135m", help="tokenizer for --model-shape (alias or directory)")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="the device's dense bf16 peak, for MFU (default: known GPUs; none on CPU)")
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
               "--workdir", args.workdir, "--tokenizer", args.tokenizer]
        cmd += ["--model-shape", args.model_shape] if args.model_shape else []
        cmd += ["--peak-tflops", str(args.peak_tflops)] if args.peak_tflops else []
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
    if any("mfu" in v for v in results.values()):
        summary["mfu"] = {k: v.get("mfu") for k, v in results.items()}
    if base and ours:
        summary["speedup_vs_trl_default"] = round(ours["tokens_per_s"] / base["tokens_per_s"], 2)
        # CPU time is what the process itself used: a fairer ratio when other jobs share the cores
        summary["cpu_time_speedup_vs_trl_default"] = round(ours["tokens_per_cpu_s"] / base["tokens_per_cpu_s"], 2)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
