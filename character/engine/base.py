"""The engine interface: a batch of conversations + sampling settings (+ an optional LoRA adapter per request)
in, completions out.

Backends implement `generate` and `score`. `make_engine` picks the backend: `vllm` when importable (offline
`vllm.LLM`, tensor parallel, prefix caching, multi-LoRA), `hf` (transformers batched generation with PEFT),
`openai` (any OpenAI-compatible endpoint; the key comes from an environment variable and is never logged).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Literal

from character.config import field

Backend = Literal["auto", "vllm", "hf", "openai"]
OpenAIExtensions = Literal["auto", "vllm", "none"]


@dataclass
class Sampling:
    """Sampling settings, shared by all backends."""

    temperature: float = field(0.7, help="sampling temperature; 0 is greedy")
    top_p: float = field(0.95, help="nucleus sampling mass")
    top_k: int = field(-1, help="top-k cut-off; -1 disables")
    min_p: float = field(0.0, help="min-p cut-off relative to the top token; 0 disables")
    repetition_penalty: float = field(1.0, help="repetition penalty; 1 disables")
    max_tokens: int = field(256, help="new tokens per completion")
    seed: int | None = field(0, help="random seed (per request: seed + request index)")
    n: int = field(1, help="completions per request")

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.max_tokens < 1 or self.n < 1:
            raise ValueError("max_tokens and n must be >= 1")


@dataclass
class Request:
    """One conversation to continue.

    `messages` are chat messages ({"role", "content"}). `prefill` is text the assistant's reply starts with
    (it is part of the returned text's prompt, not of the completion). `adapter` is a PEFT adapter directory
    served on top of the base model for this request only.
    """

    messages: list[dict]
    prefill: str | None = None
    adapter: str | None = None


@dataclass
class Completion:
    """The n samples for one request; finish_reason is "stop" (ended by EOS/stop) or "length" (cut off)."""

    texts: list[str]
    finish_reasons: list[str] = dc_field(default_factory=list)


@dataclass
class EngineConfig:
    """Which model and backend generate, and how."""

    model: str = field("smollm2-135m", help="alias, local checkpoint dir or hub id (openai: the served model name)")
    backend: Backend = field("auto", help="auto (vllm if importable, else hf), vllm, hf or openai")
    dtype: str = field("auto", help="weights dtype for vllm/hf: auto (bfloat16 on GPUs and on CPUs with native bf16, "
                                    "float32 on other CPUs, where bf16 is emulated and many times slower), "
                                    "bfloat16, float16 or float32")
    max_model_len: int = field(4096, help="longest prompt + completion in tokens", hash=False)
    tensor_parallel_size: int = field(0, help="vllm: GPUs per model; 0 = the largest size that divides the "
                                      "model's attention and KV heads and fits the visible GPUs (1 on CPU); a size "
                                      "vLLM would refuse is an error before the engine starts", hash=False)
    gpu_memory_utilization: float = field(0.0, help="vllm: memory share for weights + KV cache (on CPU: share of RAM); 0 = auto (0.9 GPU, 0.3 CPU)", hash=False)
    enforce_eager: bool | None = field(None, help="vllm: skip graph capture (faster start); default: on for CPU", hash=False)
    enable_prefix_caching: bool = field(True, help="vllm: reuse the KV cache of shared prefixes (system prompts)",
                                        hash=False)
    max_lora_rank: int = field(0, help="vllm: largest LoRA rank served; 0 = the largest rank among the adapters "
                               "of the first call (LoRA cost grows with it, so it is not set higher than needed)",
                               hash=False)
    max_loras: int = field(4, help="vllm: adapters resident at once", hash=False)
    batch_size: int = field(32, help="hf: prompts per generate() call", hash=False)
    trust_remote_code: bool = field(False, help="run model code shipped with the checkpoint (off unless you trust it)",
                                    hash=False)
    base_url: str = field("http://127.0.0.1:8000/v1", help="openai: endpoint base URL", hash=False)
    api_key_env: str = field("OPENAI_API_KEY", help="openai: NAME of the environment variable holding the key", hash=False)
    concurrency: int = field(8, help="openai: requests in flight", hash=False)
    timeout: float = field(120.0, help="openai: seconds per request", hash=False)
    max_retries: int = field(5, help="openai: retries on 429/5xx/timeouts, with exponential backoff", hash=False)
    openai_extensions: OpenAIExtensions = field(
        "auto", help="openai: whether the endpoint takes vLLM's extra request fields (an assistant prefill via "
        "continue_final_message, top_k, min_p, repetition_penalty): vllm = yes; none = a hosted API, standard chat "
        "fields only (a stage that needs a prefill then uses its plain-chat fallback or stops with one line); auto = "
        "yes when the endpoint's GET /models lists models owned_by vllm", hash=False)
    kv_cache_gib: float = field(0.0, help="vllm: GiB reserved for the KV cache; 0 = auto (on CPU: 2 GiB, which "
                                "a shared machine can spare; on GPU: from --gpu_memory_utilization)", hash=False)
    enable_lora: bool | None = field(None, help="vllm: serve LoRA adapters; default: on when a request names one", hash=False)


class Engine:
    """A loaded model. Use as a context manager or call close()."""

    config: EngineConfig

    def generate(self, requests: list[Request], sampling: Sampling, progress: str | None = None) -> list[Completion]:
        """One Completion per request, in order."""
        raise NotImplementedError

    def score(self, requests: list[Request], continuations: list[list[str]]) -> list[list[float]]:
        """Sum of log-probabilities of each candidate continuation of each request's assistant turn.

        The continuation follows the chat-templated prompt (plus prefill). Used for multiple-choice capability
        scoring and for reading an LLM judge's choice from its log-probabilities.
        """
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def render_prompt(tokenizer, request: Request, *, model: str | None = None, stage: str | None = None) -> list[int]:
    """Token ids of a request: the chat template with the assistant turn opened, then the prefill.

    The messages are fitted to the template first (`chat.render_chat`: e.g. Gemma-3 needs user and assistant
    turns to alternate from a user turn); `model` and `stage` are named when the template refuses them anyway.
    Ids, not text: a rendered template often already holds BOS, and tokenizing it again would add a second one.
    """
    from character.engine.chat import render_chat

    _, text = render_chat(tokenizer, request.messages, add_generation_prompt=True, stage=stage, model=model)
    text += request.prefill or ""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def continuation_ids(tokenizer, text: str) -> list[int]:
    """Token ids of a scored continuation, tokenized alone (what follows the prompt in `Engine.score`)."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def adapter_rank(adapter: str) -> int:
    """The LoRA rank in a PEFT adapter's config; 0 when unreadable (reported where the adapter is used)."""
    import json
    import os
    from pathlib import Path

    cfg_path = Path(os.path.expanduser(adapter)) / "adapter_config.json"
    if not cfg_path.is_file():
        return 0
    return int(json.loads(cfg_path.read_text()).get("r") or 0)


def lora_rank_limit(adapters) -> int:
    """The smallest max_lora_rank vLLM accepts that fits every adapter (16 when there are none)."""
    need = max((adapter_rank(a) for a in adapters), default=16)
    return next((r for r in (8, 16, 32, 64, 128, 256, 320, 512) if r >= need), need)


def subset(cfg, cls):
    """The `cls` part of a flat stage config (stage configs inherit EngineConfig and Sampling fields)."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in dataclasses.asdict(cfg).items() if k in names})


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def make_engine(config: EngineConfig) -> Engine:
    backend = config.backend
    if backend == "auto":
        backend = "vllm" if vllm_available() else "hf"
    if backend == "vllm":
        from character.engine.vllm import VLLMEngine

        return VLLMEngine(config)
    if backend == "hf":
        from character.engine.hf import HFEngine

        return HFEngine(config)
    from character.engine.openai import OpenAIEngine

    return OpenAIEngine(config)
