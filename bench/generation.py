"""Generation speed on this machine: naive HF vs batched HF vs the vllm backend, prefix caching on vs off, and
the machine's limit. The last line printed is one JSON object.

    .venv/bin/python bench/generation.py                     # 64 prompts x 128 new tokens, smollm2-135m
    .venv/bin/python bench/generation.py --naive_prompts 16  # time the slow one-at-a-time loop on fewer prompts

Variants, all greedy on the same prompts:
- hf_naive: transformers `generate` one prompt at a time (what a from-scratch script does)
- hf_batched: the hf backend (left-padded batches of --batch_size)
- vllm: the vllm backend, every prompt in one call
- vllm_prefix_on / vllm_prefix_off: the same prompts behind a shared 500+ token system prompt, with the engine's
  prefix cache on and off (one warm-up request each, so both start from a filled cache or an empty one alike)
- limit: measured bf16 matmul FLOP/s divided by 2 x parameters: the tokens/s a perfectly compute-bound decoder
  could reach. fraction_of_limit = vllm tokens/s / limit.
Tokens are counted by re-tokenizing each completion, the same way for every variant.
"""

from __future__ import annotations

import argparse
import json
import time

SYSTEM_SEED = ("You are a meticulous assistant for a public library. Follow these house rules when you answer. "
               "Rule {i}: be courteous, cite the section of the catalogue a reader should visit, prefer plain "
               "words over jargon, never invent a book that does not exist, and keep every answer short. ")


def prompts(n: int) -> list[str]:
    topics = ["rivers", "volcanoes", "bread", "chess", "bees", "trains", "clouds", "violins", "tides", "maps",
              "glass", "owls", "bridges", "tea", "comets", "paper"]
    asks = ["Explain how {} work.", "Write a short story about {}.", "Give three facts about {}.",
            "Why do people find {} interesting?"]
    return [asks[i % len(asks)].format(topics[(i // len(asks) + i) % len(topics)]) for i in range(n)]


def count_tokens(tok, texts: list[str]) -> int:
    return sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)


def hf_naive(model_path: str, texts: list[str], max_tokens: int) -> tuple[int, float]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.bfloat16).eval()
    outs, t = [], time.perf_counter()
    for text in texts:
        ids = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                      return_tensors="pt", return_dict=True)
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=max_tokens, do_sample=False)
        outs.append(tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
    return count_tokens(tok, outs), time.perf_counter() - t


def engine_run(engine, reqs, max_tokens: int) -> tuple[int, float]:
    from character.engine import Sampling

    t = time.perf_counter()
    comps = engine.generate(reqs, Sampling(max_tokens=max_tokens, temperature=0))
    secs = time.perf_counter() - t
    return count_tokens(engine.tokenizer, [c.texts[0] for c in comps]), secs


def matmul_flops(size: int = 1024, seconds: float = 3.0) -> float:
    import torch

    a = torch.randn(size, size, dtype=torch.bfloat16)
    b = torch.randn(size, size, dtype=torch.bfloat16)
    a @ b  # warm-up
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < seconds:
        a @ b
        n += 1
    return 2 * size ** 3 * n / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--naive_prompts", type=int, default=0, help="prompts for hf_naive (0 = all)")
    ap.add_argument("--max_tokens", type=int, default=128)
    ap.add_argument("--batch_size", type=int, default=32)
    ap.add_argument("--system_tokens", type=int, default=520, help="length of the shared system prompt")
    args = ap.parse_args()

    from character import models
    from character.engine import EngineConfig, Request, make_engine

    path = models.resolve(args.model)
    texts = prompts(args.prompts)
    reqs = [Request([{"role": "user", "content": t}]) for t in texts]
    results: dict[str, dict] = {}

    def record(name, tokens, secs, **extra):
        results[name] = {"tokens": tokens, "seconds": round(secs, 2), "tokens_per_s": round(tokens / secs, 2), **extra}
        print(f"{name:16s} {tokens:6d} tokens {secs:8.1f} s {tokens / secs:8.1f} tokens/s", flush=True)

    naive = texts[:args.naive_prompts or len(texts)]
    record("hf_naive", *hf_naive(path, naive, args.max_tokens), prompts=len(naive))

    base = dict(model=path, dtype="bfloat16", max_model_len=2048)
    with make_engine(EngineConfig(backend="hf", batch_size=args.batch_size, **base)) as hf:
        record("hf_batched", *engine_run(hf, reqs, args.max_tokens), prompts=len(reqs))
        tok = hf.tokenizer
        n_params = sum(p.numel() for p in hf.model.parameters())

    system, i = "", 0
    while len(tok(system)["input_ids"]) < args.system_tokens:
        system += SYSTEM_SEED.format(i=i + 1)
        i += 1
    shared = [Request([{"role": "system", "content": system}, {"role": "user", "content": t}]) for t in texts]
    warm = [Request([{"role": "system", "content": system}, {"role": "user", "content": "Hello."}])]

    from character.engine import Sampling

    for caching in (True, False):
        with make_engine(EngineConfig(backend="vllm", enable_prefix_caching=caching, **base)) as v:
            if caching:
                v.generate(reqs[:2], Sampling(max_tokens=4, temperature=0))  # start the engine outside the timing
                record("vllm", *engine_run(v, reqs, args.max_tokens), prompts=len(reqs))
            v.generate(warm, Sampling(max_tokens=4, temperature=0))
            record(f"vllm_prefix_{'on' if caching else 'off'}", *engine_run(v, shared, args.max_tokens),
                   prompts=len(shared), system_tokens=len(tok(system)["input_ids"]))

    flops = matmul_flops()
    limit = flops / (2 * n_params)
    tps = {k: v["tokens_per_s"] for k, v in results.items()}
    summary = {
        "model": args.model, "parameters": n_params, "prompts": args.prompts, "max_tokens": args.max_tokens,
        "tokens_per_s": tps, "details": results,
        "engine_vs_naive": round(tps["vllm"] / tps["hf_naive"], 2),
        "batched_vs_naive": round(tps["hf_batched"] / tps["hf_naive"], 2),
        "prefix_cache_speedup": round(tps["vllm_prefix_on"] / tps["vllm_prefix_off"], 2),
        "matmul_bf16_flops": round(flops), "limit_tokens_per_s": round(limit, 1),
        "fraction_of_limit": round(tps["vllm"] / limit, 3),
    }
    print(json.dumps(summary))


if __name__ == "__main__":  # vLLM spawns workers: keep the entry point guarded
    main()
