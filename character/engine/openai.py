"""The OpenAI-compatible backend: a `vllm serve` or a hosted API, for teachers and judges too big to host here.

`--base_url` names the endpoint, `--model` the served model name, `--api_key_env` the NAME of the environment
variable that holds the key (the key itself never enters a config, a manifest or a log line). Requests run
`--concurrency` at a time; 429, 5xx and timeouts are retried `--max_retries` times with exponential backoff (and
`Retry-After` when the server sends one); any other error stops the run with one line.

Hosted APIs take the standard chat fields only and refuse (or silently ignore) the rest, so vLLM's extras are sent
only to a vLLM server (`--openai_extensions`: auto asks the server's model list once, whose entries vLLM marks
`owned_by: vllm`). Those extras are an assistant prefill (a final assistant message continued with
`continue_final_message`) and top_k, min_p and repetition_penalty (sent only when they differ from "off"). A request
that needs one of them from a standard endpoint is one clear error, before anything is sent; the prompts stage
falls back to plain chat (`supports_prefill`).

    OPENAI_API_KEY=... python -c "from character.engine import *; \\
        e = make_engine(EngineConfig(backend='openai', model='gpt-4o-mini', base_url='https://api.openai.com/v1')); \\
        print(e.generate([Request([{'role': 'user', 'content': 'Hi'}])], Sampling())[0].texts)"
"""

from __future__ import annotations

import os
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from character.engine.base import Completion, Engine, EngineConfig, Request, Sampling
from character.errors import CharacterError

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
# fields of vLLM's chat completions that the OpenAI API does not define
VLLM_FIELDS = ("continue_final_message", "add_generation_prompt", "top_k", "min_p", "repetition_penalty")


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
        self._vllm = {"vllm": True, "none": False}.get(config.openai_extensions)  # None: ask at first use
        self._tokens_field = "max_tokens"  # newer OpenAI models take only max_completion_tokens (switched on a 400)

    def __repr__(self) -> str:  # never show headers (the key) in a repr
        return f"OpenAIEngine(base_url={self.base_url!r}, model={self.config.model!r})"

    @property
    def supports_prefill(self) -> bool:
        """Whether the endpoint continues an assistant prefill (vLLM does; hosted APIs start a new reply)."""
        return self._takes_vllm_fields()

    def _takes_vllm_fields(self) -> bool:
        if self._vllm is None:
            self._vllm = self._probe()
        return self._vllm

    def _probe(self) -> bool:
        """auto: a vLLM server lists its models as owned_by "vllm" (GET /models is standard, costs no tokens)."""
        resp = self._send("GET", "/models")
        try:
            listing = resp.json() if resp.status_code == 200 else {}
        except ValueError:
            listing = {}
        models = listing.get("data") if isinstance(listing, dict) else None
        found = isinstance(models, list) and any(isinstance(m, dict) and m.get("owned_by") == "vllm" for m in models)
        seen = "lists its models as vLLM's" if found else (
            "lists no vLLM models" if resp.status_code == 200 else f"did not list its models (HTTP {resp.status_code})")
        sends = "sending vLLM's extra fields (prefill, top_k, ...)" if found else "sending standard chat fields only"
        print(f"openai: {self.base_url} {seen}: {sends} (--openai_extensions auto; vllm or none sets it)",
              file=sys.stderr)
        return found

    def _send(self, method: str, path: str, body: dict | None = None):
        """The response once it is not a retryable failure; retries with backoff in between."""
        import httpx

        url = f"{self.base_url}{path}"
        attempt = 0
        while True:
            try:
                resp = self._client.request(method, url, json=body)
            except (httpx.TimeoutException, httpx.TransportError) as e:
                problem, retry_after = f"{type(e).__name__}", None
            else:
                if resp.status_code not in RETRY_STATUS:
                    return resp
                problem, retry_after = f"HTTP {resp.status_code}", _retry_after(resp)
            if attempt >= self.config.max_retries:
                raise CharacterError(f"openai: {url} failed after {attempt + 1} tries (last: {problem}); "
                                     f"is the server up? raise --max_retries or --timeout")
            # exponential backoff with jitter, so concurrent workers do not retry in lockstep
            delay = retry_after if retry_after is not None else min(30.0, 0.5 * 2 ** attempt)
            time.sleep(delay * (0.75 + 0.5 * random.random()))
            attempt += 1

    def _post(self, path: str, body: dict) -> dict:
        resp = self._send("POST", path, body)
        if resp.status_code == 200:
            return resp.json()
        brief = _brief(resp)
        if resp.status_code == 400 and "max_tokens" in body and "max_completion_tokens" in brief:
            self._tokens_field = "max_completion_tokens"
            return self._post(path, {("max_completion_tokens" if k == "max_tokens" else k): v
                                     for k, v in body.items()})
        hint = f"check --base_url, --model and the key in ${self.config.api_key_env}"
        if resp.status_code == 400 and any(f in brief for f in VLLM_FIELDS if f in body):
            hint = "the endpoint refuses vLLM's extra fields: set --openai_extensions none (or auto)"
        raise CharacterError(f"openai: {self.base_url}{path} answered {resp.status_code} ({brief}); {hint}")

    def _check(self, requests: list[Request], s: Sampling) -> None:
        """One line, before any request, for what a standard endpoint cannot do."""
        if self._takes_vllm_fields():
            return
        where = f"{self.base_url} takes standard chat fields only (--openai_extensions {self.config.openai_extensions})"
        if any(r.prefill for r in requests):
            raise CharacterError(f"openai: {where} and cannot continue an assistant prefill, which this stage "
                                 f"asks for (teacher: --think_prefill); turn the prefill off, serve the model with "
                                 f"vllm serve, or set --openai_extensions vllm if the endpoint is one")
        used = {"top_k": s.top_k > 0, "min_p": s.min_p > 0, "repetition_penalty": s.repetition_penalty != 1.0}
        if any(used.values()):
            names = ", ".join(k for k, on in used.items() if on)
            raise CharacterError(f"openai: {where}, which have no {names}; turn them off (--top_k -1 --min_p 0 "
                                 f"--repetition_penalty 1) or serve the model with vllm serve")

    def _body(self, r: Request, s: Sampling, index: int) -> dict:
        messages = list(r.messages)
        body: dict = {"model": self.config.model, "temperature": s.temperature, "top_p": s.top_p,
                      self._tokens_field: s.max_tokens, "n": s.n}
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

        if not requests:
            return []
        self._check(requests, sampling)

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
