"""bfloat16 against float32 on this machine: a matmul and vLLM generation with smollm2-135m.

    .venv/bin/python bench/dtype.py            # JSON on the last line

On a CPU without native bf16 (AVX2 only) torch and oneDNN emulate bf16; this shows how much slower it is there,
which is why `dtype: auto` (character/hardware.py) picks float32 on such CPUs.
"""

from __future__ import annotations

import argparse
import json
import time


def matmul_ms(dtype, repeats: int = 50) -> float:
    import torch

    a, b = torch.randn(64, 576, dtype=dtype), torch.randn(576, 1536, dtype=dtype)  # SmolLM2-135M's MLP shape
    for _ in range(3):
        a @ b
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return (time.perf_counter() - t0) / repeats * 1e3


def generation_tok_s(dtype: str, prompts: int, max_tokens: int) -> float:
    from character.engine.base import EngineConfig, Request, Sampling, make_engine

    engine = make_engine(EngineConfig(model="smollm2-135m", backend="vllm", dtype=dtype, max_model_len=1024))
    try:
        reqs = [Request([{"role": "user", "content": f"Tell me a fact about the number {i}."}]) for i in range(prompts)]
        engine.generate(reqs[:2], Sampling(max_tokens=8))  # warm-up
        t0 = time.perf_counter()
        out = engine.generate(reqs, Sampling(max_tokens=max_tokens, temperature=0.7))
        tokens = sum(len(engine.tokenizer.encode(c.texts[0])) for c in out) if hasattr(engine, "tokenizer") else \
            sum(len(c.texts[0]) / 4 for c in out)
        return tokens / (time.perf_counter() - t0)
    finally:
        engine.close()


def main() -> None:
    import torch

    from character.hardware import cpu_has_bf16, resolve_dtype

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--no-vllm", action="store_true", help="the matmul only")
    args = ap.parse_args()
    torch.set_num_threads(1)
    res = {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_has_bf16": cpu_has_bf16(),
           "auto": resolve_dtype("auto"), "matmul_ms_float32": round(matmul_ms(torch.float32), 2),
           "matmul_ms_bfloat16": round(matmul_ms(torch.bfloat16), 2)}
    torch.set_num_threads(torch.get_num_interop_threads())
    if not args.no_vllm:
        for dt in ("float32", "bfloat16"):
            res[f"vllm_tok_s_{dt}"] = round(generation_tok_s(dt, args.prompts, args.max_tokens), 1)
    res["bf16_slowdown_matmul"] = round(res["matmul_ms_bfloat16"] / res["matmul_ms_float32"], 1)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
