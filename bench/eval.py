"""Speed of evaluating several adapters: one vLLM engine serving them all (multi-LoRA) vs one engine start per
adapter (the original's way), same model, prompts, adapters and sampling.

    .venv/bin/python bench/eval.py                      # smollm2-135m, 4 adapters x 64 prompts x 128 new tokens
    .venv/bin/python bench/eval.py --prompts 16 --max-tokens 32     # quicker

The adapters are random LoRA adapters (r16 on the attention projections, small random lora_B so the model still
writes text) made once under --work. Each variant runs in its own process so memory and start-up are its own:
- multi_lora: one engine with LoRA enabled, all adapters' requests in one generate call (what `character eval`
  does);
- reload: for each adapter, start an engine, generate its prompts, shut it down;
- merged (with --merged): each adapter merged into a full checkpoint, one plain engine per checkpoint (what
  `character eval --lora_serving merged` does);
- base: one engine without LoRA answering the same requests with the base model, the floor multi-LoRA is held
  to: `lora_overhead` = multi-LoRA seconds / base seconds (`lora_overhead_per_token` the same per new token,
  as the adapters' answers can be longer or shorter than the base model's).
All go through character's engine interface with the same settings (enforce_eager on CPU). Timings include
engine start. The last line is one JSON object with `multi_lora_vs_reload` = reload seconds / multi-LoRA seconds.

Measured with the base variant (2 CPU cores with AVX512-BF16, same sizes, 2026-12-02): base alone 49.4 s, multi-LoRA
50.8 s, lora_overhead 1.03; reload 77.1 s, multi_lora_vs_reload 1.52.

Measured here (2 CPU cores, smollm2-135m, 4 adapters x 64 prompts x 128 tokens, 2026-11-28): multi-LoRA 68.5 s,
reload 95.9 s, merged 91.3 s: multi_lora_vs_reload 1.40. On this CPU an engine starts in about 6 s and generating
the 256 answers takes over 50 s, so generation dominates; on a GPU, where an 8B engine takes a minute or more to
start, the starts are the cost. The history of this figure: with vLLM's own CPU LoRA functions multi-LoRA took
twice as long as merged; with engine/cpu_lora.py's first version 132.7 s (reload 163.2 s); with
engine/cpu_sampling.py 91.6 s (reload 115.3 s); with the fused add_lora_linear 77.3 s (reload 108.3 s); with one
shrink GEMM for all slices 68.5 s (reload 95.9 s). The ratio stays near 1.4 because every LoRA speed-up helps
both variants: with LoRA free it would be 4 x (6 + 15) / (6 + 53) = 1.4, the base model's own time for 64 and for
256 answers.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_adapters(base: str, work: Path, n: int) -> list[str]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = []
    for i in range(n):
        path = work / f"adapter-{i}"
        if not (path / "adapter_config.json").is_file():
            torch.manual_seed(i)
            model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
            peft_model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, task_type="CAUSAL_LM",
                                                          target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
            with torch.no_grad():
                for name, p in peft_model.named_parameters():
                    if "lora_B" in name:
                        p.normal_(0.0, 0.01)
            peft_model.save_pretrained(path)
        out.append(str(path))
    return out


def run_variant(variant: str, base: str, adapters: list[str], n_prompts: int, max_tokens: int) -> dict:
    from character.engine.base import EngineConfig, Sampling
    from character.evaluation import data
    from character.evaluation.systems import Engines, System

    prompts = data.prompts("general")[:n_prompts]
    sampling = Sampling(temperature=0.7, max_tokens=max_tokens, seed=0)
    engine_cfg = EngineConfig(model=base, backend="vllm")
    systems = [System(f"a{i}", base, adapter=a) for i, a in enumerate(adapters)]
    t0 = time.time()
    texts, starts = [], 0
    if variant == "base":
        plain = [System(s.name, base) for s in systems]  # the same requests, no adapter
        engines = Engines(engine_cfg, [])
        texts = engines.generate([(s, s.request(p)) for s in plain for p in prompts], sampling, label="base")
        starts = engines.starts
        engines.close()
    elif variant == "merged":
        from character.evaluation.systems import merged_checkpoint

        for s in systems:
            merged = System(s.name, merged_checkpoint(base, s.adapter))
            engines = Engines(EngineConfig(model=merged.model, backend="vllm"), [])
            texts += engines.generate([(merged, merged.request(p)) for p in prompts], sampling, label=s.name)
            starts += engines.starts
            engines.close()
    elif variant == "multi_lora":
        engines = Engines(engine_cfg, adapters)
        texts = engines.generate([(s, s.request(p)) for s in systems for p in prompts], sampling, label="multi")
        starts = engines.starts
        engines.close()
    else:
        for s in systems:
            engines = Engines(engine_cfg, [s.adapter])
            texts += engines.generate([(s, s.request(p)) for p in prompts], sampling, label=s.name)
            starts += engines.starts
            engines.close()
    seconds = time.time() - t0
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    tokens = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)
    return {"variant": variant, "seconds": round(seconds, 1), "engine_starts": starts, "completions": len(texts),
            "new_tokens": tokens, "tokens_per_s": round(tokens / seconds, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--adapters", type=int, default=4)
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--work", default=str(Path.home() / ".cache" / "character" / "bench-eval"))
    ap.add_argument("--merged", action="store_true", help="also time merged checkpoints, one plain engine each")
    ap.add_argument("--variant", choices=["multi_lora", "reload", "merged", "base"],
                    help="(internal) run one variant and print JSON")
    args = ap.parse_args()

    from character.models import resolve

    base = resolve(args.model)
    work = Path(args.work) / Path(base).name
    work.mkdir(parents=True, exist_ok=True)
    adapters = make_adapters(base, work, args.adapters)
    if args.variant:
        print(json.dumps(run_variant(args.variant, base, adapters, args.prompts, args.max_tokens)))
        return

    results = {}
    for variant in ("base", "multi_lora", "reload") + (("merged",) if args.merged else ()):
        cmd = [sys.executable, __file__, "--variant", variant, "--model", args.model, "--adapters",
               str(args.adapters), "--prompts", str(args.prompts), "--max-tokens", str(args.max_tokens),
               "--work", args.work]
        r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        if r.returncode != 0:
            sys.stderr.write(r.stderr[-3000:])
            raise SystemExit(f"{variant} failed (exit {r.returncode})")
        results[variant] = json.loads(r.stdout.strip().splitlines()[-1])
        print(f"{variant}: {results[variant]}", flush=True)
    summary = {
        "model": args.model, "adapters": args.adapters, "prompts": args.prompts, "max_tokens": args.max_tokens,
        "multi_lora_s": results["multi_lora"]["seconds"], "reload_s": results["reload"]["seconds"],
        "multi_lora_vs_reload": round(results["reload"]["seconds"] / results["multi_lora"]["seconds"], 2),
        "base_s": results["base"]["seconds"],
        "lora_overhead": round(results["multi_lora"]["seconds"] / results["base"]["seconds"], 2),
        "lora_overhead_per_token": round(results["base"]["tokens_per_s"] / results["multi_lora"]["tokens_per_s"], 2),
        "engine_starts": {k: v["engine_starts"] for k, v in results.items()},
        "tokens_per_s": {k: v["tokens_per_s"] for k, v in results.items()},
    }
    if "merged" in results:
        summary["merged_s"] = results["merged"]["seconds"]
        summary["merged_vs_multi_lora"] = round(results["multi_lora"]["seconds"] / results["merged"]["seconds"], 2)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
