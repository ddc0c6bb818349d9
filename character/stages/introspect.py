"""Stages `reflection`, `interaction` and `sft-data`: the introspective SFT data.

- `reflection`: the distilled student (base + DPO adapter) answers introspective prompts, `--n` samples each.
- `interaction`: two copies of the distilled student talk for `--turns` turns, half the conversations opened
  freely, half with a leading opener about their shared character. Each saved conversation is seen from the side
  that spoke second: system, user, assistant, ..., ending on an assistant turn. A turn that comes back empty or
  cut at max tokens ends its conversation early (counted).
- `sft-data`: reflection + interaction under a simplified system prompt, checked, shuffled with a seed and
  length-filtered, as TRL `messages` rows.

The prompts come from evals/introspection.yaml (`reflection_prompts`, `interaction_openers`, `interaction_system`),
or from `--introspection FILE.yaml` with the same keys.

    character generate reflection --adapter runs/s/dpo-adapter --out runs/s/reflection --n 4
    character generate interaction --adapter runs/s/dpo-adapter --out runs/s/interaction --conversations 20
    character generate sft-data --reflection runs/s/reflection --interaction runs/s/interaction --out runs/s/sft
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from pathlib import Path

from character import templates as T
from character.artifacts import sha256_text
from character.config import field
from character.engine.base import Engine, Request
from character.engine.chat import render_chat
from character.errors import CharacterError
from character.identity import identity
from character.resources import data_path
from character.stages.common import (
    GenerateConfig,
    LazyEngine,
    model_display_name,
    problem_counts,
    require_finished,
    run_sharded,
    sampling_config,
    seeded,
    stage_run,
)
from character.stages.textfilters import looks_finished, strip_reasoning


def load_introspection(path: str | None) -> dict:
    import yaml

    shipped = data_path("evals", "introspection.yaml")
    p = Path(path).expanduser() if path else shipped
    if not p.is_file():
        raise CharacterError(f"introspection '{p}': file not found; give a YAML file with any of "
                             f"reflection_prompts, interaction_openers and interaction_system")
    data = yaml.safe_load(shipped.read_text(encoding="utf-8")) or {}  # the keys a file leaves out: shipped ones
    data.update((yaml.safe_load(p.read_text(encoding="utf-8")) if p != shipped else None) or {})
    openers = data["interaction_openers"]
    if not isinstance(openers, dict) or not openers.get("free") or not openers.get("leading"):
        raise CharacterError(f"{p}: interaction_openers needs non-empty 'free' and 'leading' lists")
    return data


@dataclasses.dataclass(kw_only=True)
class IntrospectConfig(GenerateConfig):
    adapter: str | None = field(None, help="PEFT adapter dir of the DPO stage (the distilled student); none = the base",
                                hash=False)
    name: str | None = field(None, help="the assistant's name in system prompts; default: the name the model gives itself")
    introspection: str | None = field(None, help="YAML with reflection_prompts / interaction_openers / "
                                      "interaction_system; default: evals/introspection.yaml", hash=False)
    constitution: str | None = field(None, help="recorded in the manifest only (the persona this adapter was "
                                     "trained for)", hash=False)


@dataclasses.dataclass(kw_only=True)
class ReflectionConfig(IntrospectConfig):
    pass


@dataclasses.dataclass(kw_only=True)
class InteractionConfig(IntrospectConfig):
    conversations: int = field(20, help="conversations to hold (half free, half leading)")
    turns: int = field(6, help="generated turns per conversation (the saved sample ends on an assistant turn)")
    shard_size: int = field(16, help="conversations per shard: the unit of resume after a crash (a rerun "
                            "keeps the size its shards on disk were cut at)", hash=False)

    def __post_init__(self):
        super().__post_init__()
        if self.conversations < 1 or self.turns < 1:
            raise ValueError("conversations and turns must be >= 1")


def _inputs(cfg: IntrospectConfig, data: dict, keys: tuple[str, ...]) -> dict:
    import json

    inputs = {"introspection": sha256_text(json.dumps({k: data[k] for k in keys}, sort_keys=True))}
    if cfg.adapter:
        from character import models

        models.check_adapter(cfg.adapter, models.resolve(cfg.model))
        inputs["adapter"] = identity(Path(cfg.adapter).expanduser())
    return inputs


def run_reflection(cfg: ReflectionConfig, engine: Engine | None = None) -> Path:
    data = load_introspection(cfg.introspection)
    prompts = [str(p) for p in data["reflection_prompts"]]
    inputs = _inputs(cfg, data, ("reflection_prompts",))
    with stage_run(cfg, "reflection", inputs) as run:
        if run.done:
            return run.path
        lazy = run.engine(engine)
        sampling = sampling_config(cfg)
        adapter = str(Path(cfg.adapter).expanduser()) if cfg.adapter else None

        def work(chunk: list[str], offset: int) -> list[dict]:
            reqs = [Request([{"role": "user", "content": p}], adapter=adapter) for p in chunk]
            comps = lazy.get().generate(reqs, seeded(sampling, offset), progress=f"reflection {offset}+{len(chunk)}")
            rows = []
            for j, (p, comp) in enumerate(zip(chunk, comps)):
                for k, (text, reason) in enumerate(zip(comp.texts, comp.finish_reasons)):
                    answer, _ = strip_reasoning(text, opened=False)
                    problem = ("no_closing_think" if answer is None else "empty" if not answer
                               else "unfinished" if not looks_finished(answer, reason) else None)
                    rows.append({"messages": [{"role": "user", "content": p},
                                              {"role": "assistant", "content": answer or ""}],
                                 "kind": "reflection", "prompt_index": offset + j, "sample": k,
                                 "finish_reason": reason, "problem": problem})
            return rows

        timings = run_sharded(run.out, prompts, cfg.shard_size, work, "reflection")
        rows = run.out.rows()
        counts = {"prompts": len(prompts), "samples": len(rows), **problem_counts(rows)}
        run.record(counts, timings, models={"student": cfg.model, "adapter": cfg.adapter},
                   name=cfg.name or model_display_name(cfg.model))
    return run.path


def run_interaction(cfg: InteractionConfig, engine: Engine | None = None) -> Path:
    data = load_introspection(cfg.introspection)
    name = cfg.name or model_display_name(cfg.model)
    system = T.fill({"interaction_system": str(data["interaction_system"])}, "interaction_system", name=name)
    inputs = _inputs(cfg, data, ("interaction_openers", "interaction_system"))
    with stage_run(cfg, "interaction", inputs) as run:
        if run.done:
            return run.path
        rng = random.Random(cfg.seed)
        openers = data["interaction_openers"]
        plans = []
        for i in range(cfg.conversations):
            variant = "free" if i % 2 == 0 else "leading"
            plans.append({"variant": variant, "opener": rng.choice(openers[variant])})
        lazy = run.engine(engine)
        adapter = str(Path(cfg.adapter).expanduser()) if cfg.adapter else None

        def work(chunk: list[dict], offset: int) -> list[dict]:
            return _converse(chunk, offset, cfg, system, adapter, lazy)

        timings = run_sharded(run.out, plans, cfg.shard_size, work, "interaction")
        rows = run.out.rows()
        counts = {"conversations": len(rows), "assistant_turns": sum(_n_assistant(r) for r in rows),
                  **problem_counts(rows), **dict(Counter(r["variant"] for r in rows)),
                  "ended_early": sum(bool(r.get("ended_early")) for r in rows)}
        run.record(counts, timings, models={"student": cfg.model, "adapter": cfg.adapter}, name=name)
    return run.path


def _converse(plans: list[dict], offset: int, cfg: InteractionConfig, system: str, adapter: str | None,
              lazy: LazyEngine) -> list[dict]:
    """Hold the conversations of one shard, one batched generate per turn."""
    talks = [[p["opener"]] for p in plans]  # utterances; even indices by speaker A (the opener), odd by B
    ended = [None] * len(plans)
    for turn in range(cfg.turns):
        active = [i for i in range(len(plans)) if ended[i] is None]
        if not active:
            break
        # the next speaker is B (odd utterances) after an odd number of utterances, else A
        reqs = [Request(_view(system, talks[i], len(talks[i]) % 2), adapter=adapter) for i in active]
        sampling = seeded(sampling_config(cfg, n=1), offset * 1000 + turn * 100_003)
        comps = lazy.get().generate(reqs, sampling, progress=f"interaction {offset}+{len(plans)} turn {turn + 1}")
        for i, comp in zip(active, comps):
            answer, _ = strip_reasoning(comp.texts[0], opened=False)
            if not answer:
                ended[i] = "empty"
            elif not looks_finished(answer, comp.finish_reasons[0]):
                ended[i] = "unfinished"
            else:
                talks[i].append(answer)
    rows = []
    for i, p in enumerate(plans):
        talk = talks[i] if len(talks[i]) % 2 == 0 else talks[i][:-1]  # end on the second speaker's turn
        messages = _view(system, talk, 1)
        problem = None if len(talk) >= 2 else (ended[i] or "empty")
        rows.append({"messages": messages, "kind": "interaction", "variant": p["variant"],
                     "conversation": offset + i, "ended_early": ended[i], "problem": problem})
    return rows


def _view(system: str, talk: list[str], speaker: int) -> list[dict]:
    """The conversation as one speaker sees it (0: A, who opened; 1: B): its own utterances are `assistant`."""
    msgs = [{"role": "system", "content": system}]
    for j, text in enumerate(talk):
        msgs.append({"role": "assistant" if j % 2 == speaker else "user", "content": text})
    return msgs


def _n_assistant(row: dict) -> int:
    return sum(m["role"] == "assistant" for m in row["messages"])


# -- sft-data ------------------------------------------------------------------------------------------------

@dataclasses.dataclass(kw_only=True)
class SFTDataConfig:
    reflection: str = field(help="dir of the reflection stage", hash=False)
    interaction: str = field(help="dir of the interaction stage", hash=False)
    out: str = field(help="output directory (shards + manifest.json)", hash=False)
    system_prompt: str | None = field(None, help="simplified system prompt put on every sample ({name} is filled "
                                      "in); default: evals/templates.yaml's sft_system")
    templates: str | None = field(None, help="YAML overriding any of evals/templates.yaml's prompts", hash=False)
    name: str | None = field(None, help="the assistant's name; default: the one the reflection stage used")
    student_model: str | None = field(None, help="model whose chat template measures length; default: the reflection stage's")
    max_length: int = field(2048, help="drop samples longer than this many tokens in the student's chat template")
    seed: int = field(0, help="shuffle seed")
    shard_size: int = field(2000, help="samples per output shard", hash=False)


def run_sft_data(cfg: SFTDataConfig) -> Path:
    refl, inter = require_finished(cfg.reflection, "reflection"), require_finished(cfg.interaction, "interaction")
    rm = refl.manifest
    student_model = cfg.student_model or rm["config"]["model"]
    name = cfg.name or rm.get("name") or model_display_name(student_model)
    templates = T.load(cfg.templates)
    if cfg.system_prompt is not None:
        templates = {**templates, "sft_system": cfg.system_prompt}
    system = T.fill(templates, "sft_system", name=name)
    inputs = {"reflection": identity(refl.path), "interaction": identity(inter.path),
              "student_model": student_model, "name": name, "system": sha256_text(system)}
    with stage_run(cfg, "sft-data", inputs, fresh=True) as run:
        if run.done:
            return run.path
        samples, dropped = _samples(refl.rows() + inter.rows(), system, student_model, cfg.max_length)
        random.Random(cfg.seed).shuffle(samples)
        for i in range(0, max(1, len(samples)), cfg.shard_size):
            run.out.write_shard(i // cfg.shard_size, samples[i:i + cfg.shard_size])
        kinds = Counter(s["kind"] for s in samples)
        counts = {"samples": len(samples), **{f"kept {k}": v for k, v in sorted(kinds.items())},
                  **{f"dropped {k}": v for k, v in sorted(dropped.items())}}
        run.record(counts, name=name)
    return run.path


def _samples(rows: list[dict], system: str, student_model: str, max_length: int) -> tuple[list[dict], Counter]:
    """The rows that pass every check, rendered in the student's chat template, and what each check dropped."""
    from transformers import AutoTokenizer

    from character import models

    tok = AutoTokenizer.from_pretrained(models.resolve(student_model))
    dropped: Counter = Counter()
    samples = []
    for row in rows:
        kind = row.get("kind", "?")
        if row.get("problem"):
            dropped[f"{kind}: {row['problem']}"] += 1
            continue
        messages = sft_messages(row, system)
        if not _alternates(messages):
            dropped[f"{kind}: bad_roles"] += 1
            continue
        # saved as the student's template takes them (e.g. the system prompt in the first user turn for a
        # template without a system role), so training renders exactly what was measured here
        messages, text = render_chat(tok, messages, add_generation_prompt=False, stage="sft-data", model=student_model)
        if len(tok(text, add_special_tokens=False)["input_ids"]) > max_length:
            dropped[f"{kind}: too_long"] += 1
            continue
        samples.append({"messages": messages, "kind": kind})
    return samples, dropped


def sft_messages(row: dict, system: str) -> list[dict]:
    """A reflection or interaction row's conversation under the simplified system prompt (its own one dropped)."""
    turns = [m for m in row["messages"] if m["role"] != "system"]
    return [{"role": "system", "content": system}] + [{"role": m["role"], "content": m["content"]} for m in turns]


def _alternates(messages: list[dict]) -> bool:
    """system, then user/assistant strictly alternating, starting with user and ending with assistant."""
    roles = [m["role"] for m in messages]
    if roles[:1] != ["system"] or len(roles) < 3:
        return False
    body = roles[1:]
    return body[-1] == "assistant" and all(r == ("user" if j % 2 == 0 else "assistant") for j, r in enumerate(body))
