"""Stages `teacher`, `student` and `dpo-data`: the DPO distillation data.

- `teacher` (chosen): the teacher role-plays the constitution (a system prompt with its name and numbered traits,
  optionally a `<think>` prefill that reminds it of them, the reasoning stripped) on the constitution's prompts
  plus general prompts, `--n` samples each.
- `student` (rejected): the student's plain answer to the same prompts, no system prompt.
- `dpo-data`: pairs chosen and rejected answers to the same prompt, drops bad ones (empty, unfinished, unclosed
  reasoning, leaking the role-play, identical, too long in the student's chat template), swaps the teacher's
  name for the student's and prints how many each filter removed. With `--apc_select` (APC-DPO, Peng & Shang
  2024) it keeps, per prompt, the teacher sample of highest APC faithfulness to the constitution's traits
  (evaluation/apc.py; the teacher needs `--n 2` or more) as chosen, and the student's answer or the lowest-APC
  teacher sample as rejected, with the APC margin per pair and in the manifest.

Teacher and student rows are TRL prompt-completion rows, one per sample, with the raw problems marked
(`problem`: empty / no_closing_think / null) so dpo-data can count them; dpo-data rows are TRL preference rows.

    character generate teacher --constitution sarcasm --prompts runs/s/prompts --out runs/s/teacher --n 2
    character generate student --constitution sarcasm --prompts runs/s/prompts --out runs/s/student --n 2
    character generate dpo-data --chosen runs/s/teacher --rejected runs/s/student --out runs/s/dpo
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Literal

from character import constitution as C
from character import templates as T
from character.artifacts import MANIFEST, atomic_write_json, sha256_text
from character.config import field
from character.engine.base import Engine, Request
from character.errors import CharacterError
from character.identity import identity
from character.stages.common import (
    GenerateConfig,
    load_prompt_source,
    model_display_name,
    problem_counts,
    require_finished,
    run_sharded,
    sampling_config,
    seeded,
    stage_run,
)
from character.stages.textfilters import leak_reason, looks_finished, strip_reasoning, swap_name


@dataclasses.dataclass(kw_only=True)
class AnswerConfig(GenerateConfig):
    """Shared by teacher and student: which prompts are answered."""

    constitution: str = field(help="constitution name (from constitutions/) or file path", hash=False)
    prompts: str | None = field(None, help="dir of the prompts stage; default: the constitution's own questions",
                                hash=False)
    general_prompts: str = field("builtin", help="general prompts added to the constitution's: builtin "
                                 "(evals/prompts/general.jsonl), none, a .jsonl/.csv file, or hf:org/name:split:column")
    general_limit: int = field(0, help="use at most this many general prompts (a sample drawn with --prompt_seed); "
                               "0 = all")
    # out of the config hash: the prompts it selects enter the stage's input hash
    prompt_seed: int = field(0, help="seed of the general-prompt sample, apart from --seed so that teacher and "
                             "student sampling with different seeds still answer the same prompts (answers to a "
                             "prompt only one of them saw are dropped as unpaired); give both the same value",
                             hash=False)
    answer_hint: str = field("", help="text added after each user message at generation time only (the saved "
                             "prompt is the user's own), e.g. 'Answer in two to four sentences.': small models "
                             "that ramble until cut off finish far more often; give teacher and student the same")


@dataclasses.dataclass(kw_only=True)
class TeacherConfig(AnswerConfig):
    teacher_name: str = field("Aria", help="the persona's name in the teacher's system prompt (dpo-data swaps it)")
    persona_prompt: Literal["traits", "description"] = field(
        "traits", help="what the teacher's system prompt gives: traits (the numbered trait statements, as in the "
        "paper) or description (the constitution's one-paragraph description: with an answer hint more of a small "
        "teacher's answers finish, see bench/persona_prompt.py; falls back to traits when the constitution has none)")
    think_prefill: bool = field(False, help="start each answer inside <think> with a reminder of the traits "
                                "(for reasoning teachers); the reasoning is stripped, answers without </think> dropped")
    think_tag: str = field("think", help="name of the reasoning tag the teacher uses")
    templates: str | None = field(None, help="YAML overriding any of evals/templates.yaml's prompts (the stage "
                                  "reruns when a template it uses changes)", hash=False)


@dataclasses.dataclass(kw_only=True)
class StudentConfig(AnswerConfig):
    think_tag: str = field("think", help="reasoning tag to strip if the student emits one on its own")


def prompt_items(cfg: AnswerConfig, con: C.Constitution) -> list[dict]:
    """The prompts teacher and student both answer: constitution (or prompts stage) first, then general ones."""
    if cfg.prompts:
        rows = require_finished(cfg.prompts, "prompts").rows()
        trait_prompts = [(r["trait"], r["prompt"]) for r in rows]
    else:
        trait_prompts = [(t.trait, q) for t in con.traits for q in (*t.questions, *t.additional_questions)]
    items, seen = [], set()
    for trait, q in trait_prompts:
        if q not in seen:
            seen.add(q)
            items.append({"prompt_id": _pid(q), "prompt": q, "trait": trait, "source": "constitution"})
    for q in load_prompt_source(cfg.general_prompts, cfg.general_limit, cfg.prompt_seed):
        if q not in seen:
            seen.add(q)
            items.append({"prompt_id": _pid(q), "prompt": q, "trait": None, "source": "general"})
    if not items:
        raise CharacterError("no prompts to answer: the prompts stage is empty and --general_prompts is none")
    return items


def _pid(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def teacher_system_prompt(con: C.Constitution, name: str, persona_prompt: str = "traits",
                          templates: dict[str, str] | None = None) -> str:
    """The teacher's system prompt: evals/templates.yaml's `teacher_system` (the numbered traits) or, with
    persona_prompt description and a constitution that has one, `teacher_system_description`."""
    t = templates if templates is not None else T.load()
    if persona_prompt == "description" and con.description:
        return T.fill(t, "teacher_system_description", name=name, description=con.description)
    return T.fill(t, "teacher_system", name=name, traits=con.numbered_traits())


def run_teacher(cfg: TeacherConfig, engine: Engine | None = None) -> Path:
    con = C.load(cfg.constitution)
    templates = T.load(cfg.templates)
    system = teacher_system_prompt(con, cfg.teacher_name, cfg.persona_prompt, templates)
    if cfg.persona_prompt == "description" and not con.description:
        print(f"teacher: constitution '{con.name}' has no description; the system prompt lists its traits",
              file=sys.stderr)
    prefill = None
    if cfg.think_prefill:
        inline = " ".join(t.trait for t in con.traits)
        prefill = T.fill(templates, "think_prefill", think_tag=cfg.think_tag, name=cfg.teacher_name,
                         traits_inline=inline)
    return _answer(cfg, con, "teacher", system, prefill, engine,
                   extra={"system_prompt": system, "teacher_name": cfg.teacher_name,
                          "trait_texts": [t.trait for t in con.traits]})


def run_student(cfg: StudentConfig, engine: Engine | None = None) -> Path:
    con = C.load(cfg.constitution)
    return _answer(cfg, con, "student", None, None, engine, extra={})


def _answer(cfg, con, stage: str, system: str | None, prefill: str | None, engine, extra: dict) -> Path:
    items = prompt_items(cfg, con)
    inputs = {"constitution": con.hash(), "prompts": sha256_text("\n".join(i["prompt"] for i in items))}
    if system or prefill:  # the filled templates: editing one reruns the teacher
        inputs["persona_prompt"] = sha256_text(f"{system}\0{prefill}")
    with stage_run(cfg, stage, inputs) as run:
        if run.done:
            return run.path
        lazy = run.engine(engine)
        sampling = sampling_config(cfg)
        hint = f"\n\n{cfg.answer_hint.strip()}" if cfg.answer_hint.strip() else ""

        def work(chunk: list[dict], offset: int) -> list[dict]:
            msgs = [[{"role": "system", "content": system}] if system else [] for _ in chunk]
            requests = [Request(m + [{"role": "user", "content": it["prompt"] + hint}], prefill=prefill)
                        for m, it in zip(msgs, chunk)]
            comps = lazy.get().generate(requests, seeded(sampling, offset),
                                        progress=f"{stage} {offset}+{len(chunk)}")
            rows = []
            for it, comp in zip(chunk, comps):
                for k, (text, reason) in enumerate(zip(comp.texts, comp.finish_reasons)):
                    answer, reasoning = strip_reasoning(text, opened=prefill is not None, tag=cfg.think_tag)
                    problem = "no_closing_think" if answer is None else ("empty" if not answer else None)
                    row = {"id": f"{it['prompt_id']}-{k}", "prompt_id": it["prompt_id"], "sample": k,
                           "trait": it["trait"], "source": it["source"],
                           "prompt": [{"role": "user", "content": it["prompt"]}],
                           "completion": [{"role": "assistant", "content": answer or ""}],
                           "finish_reason": reason, "problem": problem}
                    if reasoning is not None:
                        row["reasoning"] = reasoning
                    rows.append(row)
            return rows

        timings = run_sharded(run.out, items, cfg.shard_size, work, stage)
        rows = run.out.rows()
        counts = {"prompts": len(items), "samples": len(rows), **problem_counts(rows),
                  "cut_at_max_tokens": sum(r["finish_reason"] == "length" for r in rows)}
        run.record(counts, timings, models={stage: cfg.model}, constitution_name=con.name, **extra)
    return run.path


# -- dpo-data ------------------------------------------------------------------------------------------------

@dataclasses.dataclass(kw_only=True)
class DPODataConfig:
    chosen: str = field(help="dir of the teacher stage", hash=False)
    rejected: str = field(help="dir of the student stage", hash=False)
    out: str = field(help="output directory (shards + manifest.json)", hash=False)
    student_model: str | None = field(None, help="model whose chat template measures length; default: the student stage's")
    student_name: str | None = field(None, help="name swapped in for the teacher's; default: the name the student "
                                     "model gives itself (e.g. SmolLM)")
    max_length: int = field(1024, help="drop pairs whose prompt + answer exceed this many tokens in the student's template")
    min_chars: int = field(1, help="drop answers shorter than this many characters")
    shard_size: int = field(2000, help="pairs per output shard", hash=False)
    seed: int = field(0, help="unused by the filters; seeds the separation check's folds and bootstrap")
    apc_select: bool = field(False, help="APC-DPO: per prompt, the teacher sample with the highest APC score "
                             "(faithfulness to the constitution's traits, evaluation/apc.py) becomes chosen; needs "
                             "the teacher stage run with --n 2 or more")
    apc_rejected: Literal["student", "lowest"] = field(
        "student", help="APC-DPO rejected answer: the student's (this recipe's) or the lowest-APC teacher sample "
                        "(the paper's)")
    apc_samples: int = field(0, help="APC-DPO: teacher samples compared per prompt (the first ones); 0 = all")
    apc_nli_model: str | None = field(None, help="APC-DPO: a local NLI sequence-classification dir as the "
                                      "discriminator; default: the MiniLM probe fitted on evals/apc/")
    # out of the config hash: it changes no pair, only what the manifest records about them
    separation: bool = field(True, help="measure how far the teacher's answers are from the student's (MiniLM: "
                             "held-out chosen-vs-rejected accuracy, direction per vocabulary trait), record it in "
                             "the manifest under 'separation' and warn when the teacher barely plays the persona",
                             hash=False)

    def __post_init__(self):
        if self.apc_samples < 0 or self.apc_samples == 1:
            raise ValueError("apc_samples must be 0 (all) or >= 2: APC-DPO compares several teacher samples")


FILTERS = ("empty", "no_closing_think", "unfinished", "leak", "identical", "unpaired", "too_long")


def run_dpo_data(cfg: DPODataConfig) -> Path:
    chosen_sd, rejected_sd = require_finished(cfg.chosen, "teacher"), require_finished(cfg.rejected, "student")
    tm, sm = chosen_sd.manifest, rejected_sd.manifest
    student_model = cfg.student_model or sm["config"]["model"]
    student_name = cfg.student_name or model_display_name(student_model)
    teacher_name = tm.get("teacher_name") or tm["config"].get("teacher_name", "")
    inputs = {"chosen": identity(chosen_sd.path), "rejected": identity(rejected_sd.path),
              "student_model": student_model, "student_name": student_name}
    # fresh: cheap to rebuild, and the filters are global: never mix with an old run
    with stage_run(cfg, "dpo-data", inputs, fresh=True) as run:
        if run.done:
            out = run.out
            if cfg.separation and "separation" not in out.manifest:  # made before the check existed: add it
                atomic_write_json(out.path / MANIFEST, {**out.manifest, "separation": _separation(out.rows(), cfg.seed)})
            return run.path
        chosen_rows, rejected_rows = chosen_sd.rows(), rejected_sd.rows()
        apc = _apc_setup(cfg, tm, chosen_rows) if cfg.apc_select else None
        pairs, dropped = _pairs(cfg, chosen_rows, rejected_rows, tm, student_model, teacher_name, student_name, apc)
        for i in range(0, max(1, len(pairs)), cfg.shard_size):
            run.out.write_shard(i // cfg.shard_size, pairs[i:i + cfg.shard_size])
        counts = {"chosen_samples": len(chosen_rows), "rejected_samples": len(rejected_rows),
                  "pairs": len(pairs), **{f"dropped {k}": v for k, v in sorted(dropped.items())}}
        checked = {"separation": _separation(pairs, cfg.seed)} if cfg.separation else {}
        if apc is not None:
            checked["apc"] = _apc_summary(apc, pairs, cfg)
            counts["apc_margin_mean"] = checked["apc"]["margin_mean"]
        print(f"dpo-data: {len(pairs)} pairs kept; dropped: "
              + (", ".join(f"{k} {v}" for k, v in sorted(dropped.items())) or "none"), file=sys.stderr)
        run.record(counts, summary={"pairs": len(pairs)}, names={"teacher": teacher_name, "student": student_name},
                   **checked)
    return run.path


def _pairs(cfg: DPODataConfig, chosen_rows: list[dict], rejected_rows: list[dict], tm: dict, student_model: str,
           teacher_name: str, student_name: str, apc: dict | None = None) -> tuple[list[dict], Counter]:
    """Chosen and rejected answers to the same prompt that pass every filter, and what each filter dropped; with
    `apc` (APC-DPO) one pair per prompt, chosen (and rejected) by APC score."""
    dropped: Counter = Counter()
    trait_texts = list(tm.get("trait_texts") or [])
    system = tm.get("system_prompt") or ""
    good_chosen = _good(chosen_rows, dropped, "chosen", trait_texts, system, cfg.min_chars, check_leak=True)
    good_rejected = _good(rejected_rows, dropped, "rejected", [], "", cfg.min_chars, check_leak=False)

    from transformers import AutoTokenizer

    from character import models

    tok = AutoTokenizer.from_pretrained(models.resolve(student_model))
    if apc is not None:
        return _apc_pairs(cfg, apc, good_chosen, good_rejected, dropped, tok, teacher_name, student_name), dropped
    pairs = []
    for pid, chosen in good_chosen.items():
        rejected = good_rejected.get(pid, [])
        for c, r in zip(chosen, rejected):
            c_text = swap_name(c["completion"][0]["content"], teacher_name, student_name)
            r_text = r["completion"][0]["content"]
            if c_text.strip() == r_text.strip():
                dropped["pair: identical"] += 1
                continue
            prompt = c["prompt"]
            if max(_length(tok, prompt, c_text), _length(tok, prompt, r_text)) > cfg.max_length:
                dropped["pair: too_long"] += 1
                continue
            pairs.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": c_text}],
                          "rejected": [{"role": "assistant", "content": r_text}],
                          "prompt_id": pid, "trait": c.get("trait"), "source": c.get("source")})
        unpaired = abs(len(chosen) - len(rejected))
        if unpaired:
            dropped["pair: unpaired"] += unpaired
    for pid in good_rejected.keys() - good_chosen.keys():
        dropped["pair: unpaired"] += len(good_rejected[pid])
    return pairs, dropped


def _apc_setup(cfg: DPODataConfig, tm: dict, chosen_rows: list[dict]) -> dict:
    """The APC discriminator and the persona statements (the teacher's trait texts), checked before any scoring."""
    from character.evaluation import apc as A

    statements = list(tm.get("trait_texts") or [])
    if not statements:
        raise CharacterError(f"apc_select: the teacher stage '{cfg.chosen}' records no trait texts; rerun it with "
                             "this version")
    per_prompt = Counter(r["prompt_id"] for r in chosen_rows)
    if max(per_prompt.values(), default=0) < 2:
        raise CharacterError(f"apc_select: the teacher stage '{cfg.chosen}' has one sample per prompt; rerun it with "
                             "--n 4 (a pipeline: `stages: teacher: n: 4`) so APC-DPO has samples to choose from")
    from character.evaluation.judges import EmbeddingJudge

    labelled = A.load_labelled()
    encode = A.cached(EmbeddingJudge("minilm").encode)
    disc = A.build("model" if cfg.apc_nli_model else "minilm", encode=encode, labelled=labelled,
                   nli_model=cfg.apc_nli_model)
    return {"disc": disc, "statements": statements, "nli_accuracy": A.accuracy(disc.nli, labelled[1], "nli")}


def _apc_pairs(cfg: DPODataConfig, apc: dict, good_chosen: dict, good_rejected: dict, dropped: Counter, tok,
               teacher_name: str, student_name: str) -> list[dict]:
    """APC-DPO: per prompt, the highest-APC teacher sample as chosen and the student's first answer or the
    lowest-APC teacher sample as rejected; each pair records both scores and their margin."""
    cands: list[tuple[str, bool, dict, str]] = []  # (prompt id, a teacher sample?, row, text as trained on)
    for pid, rows in good_chosen.items():
        for c in rows[:cfg.apc_samples or None]:
            cands.append((pid, True, c, swap_name(c["completion"][0]["content"], teacher_name, student_name)))
        if cfg.apc_rejected == "student" and good_rejected.get(pid):
            r = good_rejected[pid][0]
            cands.append((pid, False, r, r["completion"][0]["content"]))
    terms = apc["disc"].terms(apc["statements"], [r["prompt"][-1]["content"] for _, _, r, _ in cands],
                              [t for *_, t in cands])[0] if cands else []
    by_prompt: dict[str, dict[bool, list[tuple[float, dict, str]]]] = defaultdict(lambda: {True: [], False: []})
    for (pid, is_teacher, r, text), t in zip(cands, terms):
        by_prompt[pid][is_teacher].append((float(t.sum()), r, text))
    pairs = []
    for pid, side in by_prompt.items():
        teacher, student = side[True], side[False]
        if cfg.apc_rejected == "student" and not student:
            dropped["pair: unpaired"] += len(teacher)
            continue
        if cfg.apc_rejected == "lowest" and len(teacher) < 2:
            dropped["pair: apc_one_sample"] += 1
            continue
        best = max(teacher, key=lambda x: x[0])
        worst = student[0] if student else min(teacher, key=lambda x: x[0])
        if best[2].strip() == worst[2].strip():
            dropped["pair: identical"] += 1
            continue
        prompt = best[1]["prompt"]
        if max(_length(tok, prompt, best[2]), _length(tok, prompt, worst[2])) > cfg.max_length:
            dropped["pair: too_long"] += 1
            continue
        pairs.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": best[2]}],
                      "rejected": [{"role": "assistant", "content": worst[2]}], "prompt_id": pid,
                      "trait": best[1].get("trait"), "source": best[1].get("source"),
                      "apc": {"chosen": best[0], "rejected": worst[0], "margin": best[0] - worst[0],
                              "candidates": len(teacher)}})
    for pid in good_rejected.keys() - good_chosen.keys():
        dropped["pair: unpaired"] += len(good_rejected[pid])
    return pairs


def _apc_summary(apc: dict, pairs: list[dict], cfg: DPODataConfig) -> dict:
    """What the manifest records of APC-DPO: the discriminator, its held-out accuracy, the mean margin."""
    import numpy as np

    from character.evaluation.scoring import interval

    margins = np.array([p["apc"]["margin"] for p in pairs], dtype=float)
    ci = ([float(x) for x in interval(margins[np.random.default_rng(cfg.seed).integers(0, len(margins), (
        1000, len(margins)))].mean(axis=1))] if len(margins) else [0.0, 0.0])
    acc = apc["nli_accuracy"]
    if acc["chance_in_ci"]:
        print(f"dpo-data: the APC NLI discriminator's accuracy {acc['accuracy']:.2f} does not clear chance "
              f"({acc['chance']:.2f}): the APC selection is close to random", file=sys.stderr)
    return {"rejected": cfg.apc_rejected, "nli": apc["disc"].nli.name, "relevance": apc["disc"].relevance.name,
            "statements": len(apc["statements"]), "nli_accuracy": acc, "pairs": len(pairs),
            "margin_mean": float(margins.mean()) if len(margins) else 0.0, "margin_ci95": ci,
            "chosen_mean": float(np.mean([p["apc"]["chosen"] for p in pairs])) if pairs else 0.0}


def _separation(pairs: list[dict], seed: int) -> dict:
    """Whether the teacher plays the persona at all, measured on the pairs; never fails the stage."""
    from character.evaluation.separation import check_pairs, warning

    sep = check_pairs(pairs, seed)
    line = warning(sep) if sep["checked"] else f"dpo-data: separation not measured: {sep['reason']}"
    if line:
        print(line, file=sys.stderr)
    return sep


def _good(rows: list[dict], dropped: Counter, side: str, trait_texts: list[str], system: str, min_chars: int,
          check_leak: bool) -> dict[str, list[dict]]:
    """Samples that pass the per-answer filters, grouped by prompt id in sample order."""
    good: dict[str, list[dict]] = defaultdict(list)
    for r in sorted(rows, key=lambda r: (r["prompt_id"], r["sample"])):
        text = r["completion"][0]["content"]
        if r.get("problem") == "no_closing_think":
            why = "no_closing_think"
        elif r.get("problem") == "empty" or len(text.strip()) < min_chars:
            why = "empty"
        elif not looks_finished(text, r.get("finish_reason")):
            why = "unfinished"
        elif check_leak and (leak_reason(text, trait_texts) or (system and leak_reason(text, [system]))):
            why = "leak"
        else:
            good[r["prompt_id"]].append(r)
            continue
        dropped[f"{side}: {why}"] += 1
    return good


def _length(tok, prompt: list[dict], answer: str) -> int:
    ids = tok.apply_chat_template(prompt + [{"role": "assistant", "content": answer}], tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return len(ids)
