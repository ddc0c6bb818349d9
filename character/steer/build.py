"""`character steer build`: a persona vector per layer from contrastive activations, and its layer and strength.

    character steer build --constitution poeticism --model smollm2-135m --out runs/steer/poeticism
    character steer build --constitution poeticism --teacher runs/demo/poeticism/teacher \\
        --student runs/demo/poeticism/student --out runs/demo/poeticism/steer     # a pipeline's answers, no generation

1. Pairs: the same prompts answered with the persona's system prompt (positive; `character eval`'s persona prompt,
   evaluation/robustness.py `persona_prompt`) and without (negative). Given a pipeline's `teacher` and `student`
   directories their answers are the two sides (a seeded sample of `pairs` of them); otherwise the model answers
   the constitution's questions (topped up with general prompts) both ways.
2. Activations: the model reads each pair (the positive side under the persona's system prompt); every layer's
   output is averaged over the answer tokens (activations.py).
3. Vectors per layer, mean difference and PCA of the pair-centred activations, with held-out separation scores
   (vectors.py).
4. The sweep chooses layer and strength on held-out general prompts (sweep.py).
Everything runs on the `hf` engine (the hooks need the weights). The directory is a stage like every other:
manifest, skip when up to date, `.steer.next/` beside a finished result of other settings.
"""

from __future__ import annotations

import dataclasses
import random
import time
from pathlib import Path
from typing import Literal

from character.config import field
from character.engine.base import Sampling
from character.errors import CharacterError


@dataclasses.dataclass(kw_only=True)
class SteerConfig(Sampling):
    """Build a persona vector for one constitution on one model."""

    constitution: str = field(help="constitution name (from constitutions/) or file path", hash=False)
    model: str = field("smollm2-135m", help="the model the vectors are for: alias, local checkpoint dir or hub id")
    teacher: str | None = field(None, help="a teacher stage dir: its answers are the positive side (with --student)",
                                hash=False)
    student: str | None = field(None, help="a student stage dir: its answers are the negative side", hash=False)
    out: str = field("runs/steer", help="output directory", hash=False)
    persona_prompt: Literal["description", "traits"] = field(
        "description", help="the persona's system prompt, as `character eval --persona_prompt` plays it: the "
                            "constitution's description or its numbered traits")
    pairs: int = field(48, help="answer pairs the vectors are read from (a seeded sample of the pipeline's, or "
                                  "the constitution's questions topped up with general prompts)")
    method: Literal["mean_diff", "pca"] = field("mean_diff", help="the vector the sweep and `character eval --steer` "
                                                "use: mean_diff (persona vectors) or pca (repeng's pca_center); both "
                                                "are saved")
    layers: list[int] = field(factory=list, help="candidate layers for the sweep; empty: --sweep_layers evenly "
                                                 "spread over the middle 75% of the model")
    sweep_layers: int = field(3, help="candidate layers when --layers is empty")
    strengths: list[float] = field(factory=lambda: [1.0, 2.0, 4.0, 8.0], help="strengths tried at each layer, "
                                   "rising until coherence breaks (1 adds the mean persona difference once)")
    sweep_prompts: int = field(8, help="held-out general prompts the sweep answers per setting")
    coherent_share: float = field(0.75, help="a setting holds when at least this share of its answers is coherent")
    embedding_model: str = field("minilm", help="sentence-embedding model of the persona score")
    bootstrap: int = field(200, help="bootstrap resamples for the sweep's intervals")
    dtype: str = field("auto", help="weights dtype: auto (bfloat16 on GPUs and CPUs with native bf16, else "
                                    "float32), bfloat16, float16 or float32")
    batch_size: int = field(16, help="sequences per forward pass / generate() call", hash=False)
    max_model_len: int = field(2048, help="longest prompt + answer in tokens", hash=False)
    trust_remote_code: bool = field(False, help="run model code shipped with the checkpoint", hash=False)
    max_tokens: int = field(64, help="new tokens per answer (build answers and the sweep)")

    def __post_init__(self):
        super().__post_init__()
        problems = []
        if (self.teacher is None) != (self.student is None):
            problems.append("give both --teacher and --student (their answers are the two sides), or neither")
        if self.pairs < 4 or self.sweep_prompts < 2:
            problems.append("pairs must be >= 4 and sweep_prompts >= 2")
        if not self.strengths or any(s <= 0 for s in self.strengths):
            problems.append("strengths must be positive numbers")
        if not 0 < self.coherent_share <= 1:
            problems.append("coherent_share must be in (0, 1]")
        if self.seed is None:
            problems.append("seed must be set: vectors are reproducible by seed")
        if problems:
            raise ValueError("; ".join(problems))


@dataclasses.dataclass(kw_only=True)
class SteerStageConfig(SteerConfig):
    """The pipeline's `steer` stage: off unless its section says `enabled: true`."""

    enabled: bool = field(False, help="build the vector (the stage is off by default: it writes only a manifest "
                                      "saying so, and eval adds no steered system)")


def run_steer_stage(cfg: SteerStageConfig) -> Path:
    """The pipeline stage: `run_steer`, or, when off, a finished manifest that says so (later stages read it)."""
    if cfg.enabled:
        return run_steer(cfg)
    from character.stages.common import stage_run

    with stage_run(cfg, "steer", {"enabled": "false"}) as run:
        if not run.done:
            print("steer: off (set `stages: {steer: {enabled: true}}` in the pipeline to build a persona vector)")
            run.record({"enabled": False}, enabled=False)
    return run.path


def run_steer(cfg: SteerConfig) -> Path:
    from character import constitution as C
    from character import models
    from character.artifacts import sha256_text
    from character.evaluation.robustness import persona_prompt
    from character.identity import identity
    from character.stages.common import require_finished, stage_run

    con = C.load(cfg.constitution)
    model = models.resolve(cfg.model)
    system = persona_prompt(con, cfg.persona_prompt)
    dirs = (require_finished(cfg.teacher, "teacher"), require_finished(cfg.student, "student")) if cfg.teacher else None
    inputs = {"constitution": con.hash(), "model": identity(model), "persona_prompt": sha256_text(system)}
    if dirs:
        inputs.update(teacher=identity(dirs[0].path), student=identity(dirs[1].path))
    with stage_run(cfg, "steer", inputs) as run:
        if run.done:
            return run.path
        counts, timings, manifest = _build(cfg, con, model, system, dirs, run.path)
        run.record(counts, timings, summary={"pairs": counts["pairs"], **manifest["chosen"]},
                   constitution_name=con.name, enabled=True, models={"model": cfg.model}, **manifest)
    return run.path


def _build(cfg: SteerConfig, con, model: str, system: str, dirs, out: Path) -> tuple[dict, dict, dict]:
    from character.artifacts import atomic_write_json, write_jsonl
    from character.engine.base import EngineConfig, subset
    from character.engine.hf import HFEngine
    from character.engine.steering import decoder_layers
    from character.evaluation import data
    from character.evaluation.judges import EmbeddingJudge
    from character.evaluation.marked import choose_marked_traits
    from character.steer import activations, sweep, vectors

    t0 = time.time()
    engine = HFEngine(EngineConfig(model=model, backend="hf", dtype=cfg.dtype, batch_size=cfg.batch_size,
                                   max_model_len=cfg.max_model_len, trust_remote_code=cfg.trust_remote_code))
    timings: dict = {"load_s": round(time.time() - t0, 1)}
    try:
        sampling = subset(cfg, Sampling)
        t = time.time()
        pairs = _reused_pairs(cfg, dirs) if dirs else _generated_pairs(cfg, con, engine, system, sampling)
        timings["pairs_s"] = round(time.time() - t, 1)
        write_jsonl(out / "pairs.jsonl", pairs)
        t = time.time()
        n_layers = len(decoder_layers(engine.model))
        every = list(range(n_layers))
        pos = activations.read(engine, [(_msgs(system, p["prompt"]), p["positive"]) for p in pairs], every,
                               batch_size=cfg.batch_size)[0]
        neg = activations.read(engine, [(_msgs(None, p["prompt"]), p["negative"]) for p in pairs], every,
                               batch_size=cfg.batch_size)[0]
        tensors = vectors.compute(pos, neg)
        sep = vectors.separation(pos, neg, tensors, seed=cfg.seed)
        vectors.save(out / vectors.VECTORS, tensors, {"model": cfg.model, "constitution": con.name,
                                                      "layers": str(n_layers), "methods": ",".join(vectors.METHODS)})
        atomic_write_json(out / "separation.json", {"pairs": len(pairs), "layers": sep})
        timings["vectors_s"] = round(time.time() - t, 1)

        t = time.time()
        layers = list(cfg.layers) or vectors.middle_layers(n_layers, cfg.sweep_layers)
        bad = [x for x in layers if not 0 <= x < n_layers]
        if bad:
            raise CharacterError(f"--layers {bad[0]}: {cfg.model} has layers 0..{n_layers - 1}")
        judge = EmbeddingJudge(cfg.embedding_model)
        marked = choose_marked_traits(con, judge.encode, data.traits(), None)["traits"]
        held_out = _sweep_prompts(cfg, pairs, dirs)
        result = sweep.run(engine, vectors=tensors, method=cfg.method, layers=layers, strengths=cfg.strengths,
                           prompts=held_out, system=system, marked=marked, encode=judge.encode,
                           trait_text=judge.trait_text, sampling=sampling, coherent_share=cfg.coherent_share,
                           n_boot=cfg.bootstrap, seed=cfg.seed)
        atomic_write_json(out / "sweep.json", result)
        timings["sweep_s"] = round(time.time() - t, 1)
    finally:
        engine.close()
    chosen = result["chosen"]
    if not chosen["coherent"]:
        print(f"steer: no setting kept {cfg.coherent_share:.0%} of its answers coherent; chose the weakest "
              f"(layer {chosen['layer']}, strength {chosen['strength']:g}); try smaller --strengths")
    best = max(sep, key=lambda r: r[cfg.method]["accuracy"])
    counts = {"pairs": len(pairs), "layers": n_layers, "sweep_settings": len(result["settings"])}
    return counts, timings, {"chosen": chosen, "persona_system_prompt": system, "source": "pipeline" if dirs else
                             "generated", "best_separated_layer": best["layer"]}


def _msgs(system: str | None, prompt: str) -> list[dict]:
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]


def _reused_pairs(cfg: SteerConfig, dirs) -> list[dict]:
    """Teacher (positive) and student (negative) answers to the same prompts: first sample of each, both usable."""
    def usable(sd) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for r in sd.rows():
            text = (r.get("completion") or [{}])[0].get("content", "")
            if r.get("problem") is None and text.strip():
                out.setdefault(r["prompt_id"], {"prompt": r["prompt"][0]["content"], "text": text})
        return out

    pos, neg = usable(dirs[0]), usable(dirs[1])
    shared = sorted(set(pos) & set(neg))
    if len(shared) < 4:
        raise CharacterError(f"steer: only {len(shared)} prompts have usable answers in both {dirs[0].path} and "
                             f"{dirs[1].path}; need at least 4 (rerun the teacher and student stages)")
    keep = random.Random(cfg.seed).sample(shared, min(cfg.pairs, len(shared)))
    return [{"prompt": pos[k]["prompt"], "positive": pos[k]["text"], "negative": neg[k]["text"], "source": "pipeline"}
            for k in keep]


def _generated_pairs(cfg: SteerConfig, con, engine, system: str, sampling) -> list[dict]:
    """The model answers the constitution's questions (then general prompts) with and without the persona."""
    from character.engine.base import Request
    from character.evaluation import data

    questions = list(dict.fromkeys(q for t in con.traits for q in (*t.questions, *t.additional_questions)))
    rng = random.Random(cfg.seed)
    prompts = rng.sample(questions, min(cfg.pairs, len(questions)))
    extra = [p for p in data.prompts("general") if p not in set(prompts)]
    prompts += rng.sample(extra, min(cfg.pairs - len(prompts), len(extra)))
    pos = engine.generate([Request(_msgs(system, p)) for p in prompts], sampling, progress="steer positive")
    neg = engine.generate([Request(_msgs(None, p)) for p in prompts], sampling, progress="steer negative")
    pairs = [{"prompt": p, "positive": a.texts[0], "negative": b.texts[0], "source": "generated"}
             for p, a, b in zip(prompts, pos, neg) if a.texts[0].strip() and b.texts[0].strip()]
    if len(pairs) < 4:
        raise CharacterError(f"steer: only {len(pairs)} of {len(prompts)} prompts got two non-empty answers from "
                             f"{cfg.model}; raise --max_tokens or --pairs")
    return pairs


def _sweep_prompts(cfg: SteerConfig, pairs: list[dict], dirs) -> list[str]:
    """General prompts that no vector was read from (nor, with a pipeline, trained on): the sweep's held-out set."""
    from character.evaluation import data

    used = {p["prompt"] for p in pairs}
    if dirs:
        used |= {r["prompt"][0]["content"] for sd in dirs for r in sd.rows()}
    rest = [p for p in dict.fromkeys(data.prompts("general")) if p not in used]
    if len(rest) < cfg.sweep_prompts:
        raise CharacterError(f"steer: {len(rest)} general prompts are left for the sweep, fewer than --sweep_prompts "
                             f"{cfg.sweep_prompts}; lower it")
    return random.Random(cfg.seed + 1).sample(rest, cfg.sweep_prompts)
