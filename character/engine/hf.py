"""The transformers backend: batched `generate` with left padding and PEFT adapters, for machines without vLLM.

Requests are grouped by adapter (one `set_adapter` per group; the base runs with adapters disabled), sorted by
length so a batch pads little, and generated `batch_size` at a time. Sampling is seeded per batch, so results are
reproducible for the same batch size but not identical to the vllm backend's.

    python -c "from character.engine import *; e = make_engine(EngineConfig(backend='hf')); \\
               print(e.generate([Request([{'role': 'user', 'content': 'Hi'}])], Sampling())[0].texts)"
"""

from __future__ import annotations

import os
from contextlib import nullcontext

from character.engine.base import (
    Completion,
    Engine,
    EngineConfig,
    Request,
    Sampling,
    continuation_ids,
    render_prompt,
)
from character.engine.chat import stage_of
from character.errors import CharacterError
from character.hardware import resolve_dtype


class HFEngine(Engine):
    def __init__(self, config: EngineConfig):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from character import models

        self.config = config
        self.model_path = models.resolve(config.model)
        dtype = getattr(torch, resolve_dtype(config.dtype), None)
        if dtype is None:
            raise CharacterError(f"--dtype '{config.dtype}' is not a torch dtype; use bfloat16, float16 or float32")
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path, trust_remote_code=config.trust_remote_code)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = AutoModelForCausalLM.from_pretrained(
            self.model_path, dtype=dtype, trust_remote_code=config.trust_remote_code).to(self.device).eval()
        self._adapters: dict[str, str] = {}  # path -> adapter name inside the PeftModel

    # -- adapters ------------------------------------------------------------------------------------------
    def _activate(self, adapter: str | None):
        """A context in which the model runs with `adapter` (None: the base, adapters disabled)."""
        if not adapter:
            return self.model.disable_adapter() if self._adapters else nullcontext()
        path = os.path.realpath(os.path.expanduser(adapter))
        if path not in self._adapters:
            from peft import PeftModel

            from character import models

            models.check_adapter(path, self.model_path)
            name = f"a{len(self._adapters)}"
            if not self._adapters:
                self.model = PeftModel.from_pretrained(self.model, path, adapter_name=name).eval()
            else:
                self.model.load_adapter(path, adapter_name=name)
            self._adapters[path] = name
        self.model.set_adapter(self._adapters[path])
        return nullcontext()

    def using(self, adapter: str | None):
        """A context in which `self.model` runs with `adapter` (None: the base), for callers that run the model
        themselves: reading activations and steering (engine/steering.py, character/steer/)."""
        return self._activate(adapter)

    # -- work ----------------------------------------------------------------------------------------------
    def generate(self, requests: list[Request], sampling: Sampling, progress: str | None = None) -> list[Completion]:
        import torch
        from tqdm import tqdm

        results: list[Completion | None] = [None] * len(requests)
        stage = stage_of(progress)
        ids = [render_prompt(self.tokenizer, r, model=self.config.model, stage=stage) for r in requests]
        eos = _eos_ids(self.model, self.tokenizer)
        bs = max(1, self.config.batch_size)
        bar = tqdm(total=len(requests), desc=progress, disable=not progress)
        for adapter, idx in _groups(requests):
            idx.sort(key=lambda i: len(ids[i]))
            for start in range(0, len(idx), bs):
                chunk = idx[start:start + bs]
                batch = self._pad([ids[i] for i in chunk])
                if sampling.seed is not None:
                    torch.manual_seed(sampling.seed + chunk[0])
                room = self.config.max_model_len - batch["input_ids"].shape[1]
                if room < 1:
                    raise CharacterError(f"request {chunk[-1]}: prompt of {batch['input_ids'].shape[1]} tokens "
                                         f"exceeds --max_model_len {self.config.max_model_len}")
                with self._activate(adapter), torch.no_grad():
                    out = self.model.generate(**batch, **_gen_kwargs(sampling, min(room, sampling.max_tokens)),
                                              pad_token_id=self.tokenizer.pad_token_id, eos_token_id=eos)
                new = out[:, batch["input_ids"].shape[1]:].tolist()
                per = _returned(sampling)
                for j, i in enumerate(chunk):
                    texts, reasons = [], []
                    for seq in new[j * per:(j + 1) * per] * (sampling.n // per):
                        cut = next((k for k, t in enumerate(seq) if t in eos), None)
                        reasons.append("stop" if cut is not None else "length")
                        texts.append(self.tokenizer.decode(seq[:cut], skip_special_tokens=True))
                    results[i] = Completion(texts, reasons)
                bar.update(len(chunk))
        bar.close()
        return results  # type: ignore[return-value]

    def score(self, requests: list[Request], continuations: list[list[str]]) -> list[list[float]]:
        import torch

        if len(requests) != len(continuations):
            raise CharacterError(f"score: {len(requests)} requests but {len(continuations)} continuation lists")
        rows = []  # (request index, adapter, ids, start of the continuation)
        for i, (r, conts) in enumerate(zip(requests, continuations)):
            head = render_prompt(self.tokenizer, r, model=self.config.model, stage="scoring")
            for c in conts:
                tail = continuation_ids(self.tokenizer, c)
                if not tail:
                    raise CharacterError(f"score: request {i} has an empty continuation; give non-empty text")
                rows.append((i, r.adapter, head + tail, len(head)))
        # a one-token continuation is read off its head's last position, so all the one-token continuations of a
        # request (an LLM judge's "A" and "B") share one forward pass
        passes: dict[tuple, list[int]] = {}  # (adapter, input ids) -> the rows it scores
        for k, (_, adapter, ids, begin) in enumerate(rows):
            passes.setdefault((adapter, tuple(ids[:-1] if len(ids) - begin == 1 else ids)), []).append(k)
        scores = [0.0] * len(rows)
        bs = max(1, self.config.batch_size)
        by_adapter: dict[str | None, list[tuple]] = {}
        for key in sorted(passes, key=lambda p: len(p[1])):  # similar lengths batch together: less padding
            by_adapter.setdefault(key[0], []).append(key)
        for adapter, keys in by_adapter.items():
            for start in range(0, len(keys), bs):
                chunk = keys[start:start + bs]
                batch = self._pad([list(key[1]) for key in chunk])
                # left padding ends every input at the last position: only the last `keep` positions are read
                keep = max(len(key[1]) - rows[k][3] + 1 for key in chunk for k in passes[key])
                with self._activate(adapter), torch.no_grad():
                    logits = self._last_logits(batch, keep)
                for j, key in enumerate(chunk):
                    pad = keep - len(key[1])  # positions are counted from the first one kept
                    for k in passes[key]:
                        _, _, ids, begin = rows[k]
                        pos = torch.arange(pad + begin - 1, pad + len(ids) - 1, device=logits.device)
                        # log-softmax only where a continuation token is read: the whole (batch, length,
                        # vocabulary) tensor would be gigabytes
                        logp = torch.log_softmax(logits[j, pos].float(), dim=-1)
                        targets = torch.tensor(ids[begin:], device=logits.device)
                        scores[k] = float(logp[torch.arange(len(targets), device=logits.device), targets].sum())
        out, k = [], 0
        for conts in continuations:
            out.append(scores[k:k + len(conts)])
            k += len(conts)
        return out

    def _last_logits(self, batch, keep: int):
        """Logits of the last `keep` positions; the output projection runs only there where the model allows it."""
        try:
            return self.model(**batch, logits_to_keep=keep).logits
        except TypeError:  # a model whose forward() predates logits_to_keep
            return self.model(**batch).logits[:, -keep:]

    def _pad(self, seqs: list[list[int]]):
        import torch

        width = max(len(s) for s in seqs)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(s)) + s for s in seqs], device=self.device)
        mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], device=self.device)
        return {"input_ids": input_ids, "attention_mask": mask}

    def close(self) -> None:
        self.model = None


def _groups(requests: list[Request]) -> list[tuple[str | None, list[int]]]:
    groups: dict[str | None, list[int]] = {}
    for i, r in enumerate(requests):
        groups.setdefault(r.adapter or None, []).append(i)
    return list(groups.items())


def _returned(s: Sampling) -> int:
    """Sequences generate() returns per prompt: greedy decoding gives one, repeated n times afterwards."""
    return s.n if s.temperature > 0 else 1


def _gen_kwargs(s: Sampling, max_new_tokens: int) -> dict:
    kw = dict(max_new_tokens=max_new_tokens, num_return_sequences=_returned(s),
              repetition_penalty=s.repetition_penalty)
    if s.temperature > 0:
        kw.update(do_sample=True, temperature=s.temperature, top_p=s.top_p,
                  top_k=s.top_k if s.top_k > 0 else 0, min_p=s.min_p or None)
    else:
        kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    return kw


def _eos_ids(model, tokenizer) -> list[int]:
    """Every token that ends a turn: the generation config's EOS list plus the tokenizer's."""
    ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids

