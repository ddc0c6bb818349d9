"""The OpenAI-compatible backend: a `vllm serve` or a hosted API, for teachers and judges too big to host here.

`--base_url` names the endpoint, `--model` the served model name, `--api_key_env` the NAME of the environment
variable that holds the key (the key itself never enters a config, a manifest or a log line). Requests run
`--concurrency` at a time; 429, 5xx and timeouts are retried `--max_retries` times with exponential backoff (and
`Retry-After` when the server sends one); any other error stops the run with one line.

Parameters beyond the OpenAI set (top_k, min_p, repetition_penalty) are sent only when they differ from "off",
so hosted APIs that reject unknown fields still work. A prefill is sent as a final assistant message with vLLM's
`continue_final_message`; hosted APIs may not support that.

    OPENAI_API_KEY=... python -c "from character.engine import *; \\
        e = make_engine(EngineConfig(backend='openai', model='gpt-4o-mini', base_url='https://api.openai.com/v1')); \\
        print(e.generate([Request([{'role': 'user', 'content': 'Hi'}])], Sampling())[0].texts)"
"""

from __future__ import annotations

import os
import random
import time
from concurrent.futures import ThreadPoolExecutor

from character.engine.base import Completion, Engine, EngineConfig, Request, Sampling
from character.errors import CharacterError

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class OpenAIEngine(Engine):
    def __init__(self, config: EngineConfig):
        import httpx

        self.config = config
        self.base_url = config.base_url.rstrip("/")
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(config.api_key_env) if config.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.Client(headers=headers, timeout=config.timeout,
                                    limits=httpx.Limits(max_connections=max(1, config.concurrency)))

    def __repr__(self) -> str:  # never show headers (the key) in a repr
        return f"OpenAIEngine(base_url={self.base_url!r}, model={self.config.model!r})"

    def _post(self, path: str, body: dict) -> dict:
        import httpx

        url = f"{self.base_url}{path}"
        attempt = 0
        while True:
            try:
                resp = self._client.post(url, json=body)
            except (httpx.TimeoutException, httpx.TransportError) as e:
                problem, retry_after = f"{type(e).__name__}", None
            else:
                if resp.status_code == 200:
                    return resp.json()
                if resp.status_code not in RETRY_STATUS:
                    raise CharacterError(f"openai: {url} answered {resp.status_code} ({_brief(resp)}); check "
                                         f"--base_url, --model and the key in ${self.config.api_key_env}")
                problem, retry_after = f"HTTP {resp.status_code}", _retry_after(resp)
            if attempt >= self.config.max_retries:
                raise CharacterError(f"openai: {url} failed after {attempt + 1} tries (last: {problem}); "
                                     f"is the server up? raise --max_retries or --timeout")
            # exponential backoff with jitter, so concurrent workers do not retry in lockstep
            delay = retry_after if retry_after is not None else min(30.0, 0.5 * 2 ** attempt)
            time.sleep(delay * (0.75 + 0.5 * random.random()))
            attempt += 1

    def _body(self, r: Request, s: Sampling, index: int) -> dict:
        messages = list(r.messages)
        body: dict = {"model": self.config.model, "temperature": s.temperature, "top_p": s.top_p,
                      "max_tokens": s.max_tokens, "n": s.n}
        if s.seed is not None:
            body["seed"] = s.seed + index
        if s.top_k > 0:
            body["top_k"] = s.top_k
        if s.min_p > 0:
            body["min_p"] = s.min_p
        if s.repetition_penalty != 1.0:
            body["repetition_penalty"] = s.repetition_penalty
        if r.prefill:
            messages.append({"role": "assistant", "content": r.prefill})
            body.update(continue_final_message=True, add_generation_prompt=False)
        if r.adapter:
            # a `vllm serve --lora-modules NAME=PATH` serves an adapter under its own model name
            body["model"] = os.path.basename(os.path.normpath(r.adapter))
        body["messages"] = messages
        return body

    def generate(self, requests: list[Request], sampling: Sampling, progress: str | None = None) -> list[Completion]:
        from tqdm import tqdm

        def one(i: int) -> Completion:
            data = self._post("/chat/completions", self._body(requests[i], sampling, i))
            choices = sorted(data.get("choices", []), key=lambda c: c.get("index", 0))
            texts = [(c.get("message") or {}).get("content") or "" for c in choices]
            reasons = ["length" if c.get("finish_reason") == "length" else "stop" for c in choices]
            return Completion(texts, reasons)

        with ThreadPoolExecutor(max_workers=max(1, self.config.concurrency)) as pool:
            return list(tqdm(pool.map(one, range(len(requests))), total=len(requests), desc=progress,
                             disable=not progress))

    def score(self, requests: list[Request], continuations: list[list[str]]) -> list[list[float]]:
        raise CharacterError("openai backend: score (log-probabilities of given continuations) is not supported; "
                             "use --backend vllm or hf for log-prob scoring, or a generating judge mode")

    def close(self) -> None:
        self._client.close()


def _retry_after(resp) -> float | None:
    value = resp.headers.get("retry-after")
    try:
        return min(60.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _brief(resp) -> str:
    try:
        err = resp.json().get("error")
        msg = err.get("message") if isinstance(err, dict) else err
    except Exception:  # noqa: BLE001 - non-JSON error body
        msg = resp.text
    return " ".join(str(msg or "").split())[:200]
