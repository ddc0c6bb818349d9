"""Monitoring with a persona vector (Chen et al. 2025): how far each system's activations lie along the persona's
direction, on the held-out evaluation prompts.

    character steer project --model smollm2-135m --adapter runs/demo/poeticism/merge --vector runs/steer/poeticism

Each system (the base, each adapter, and the base with the persona's system prompt for reference) answers the
same evaluation prompts; the model then reads each (prompt, own answer) and the vector's layer output is averaged
over the answer tokens and projected on the vector's unit direction. Reported per system, with percentile
bootstrap intervals over prompts: the mean projection, the same on the build's scale (`relative`: 0 = the build's
plain answers, 1 = its persona-prompted answers), and minus the base's (paired by prompt). The projection of the
last token before the answer (no answer read yet) is given too. A trained adapter should sit far along its
persona's direction and the base near 0. `character eval --steer` adds the same table to its report.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from character.config import field
from character.engine.base import Sampling
from character.errors import CharacterError


@dataclasses.dataclass(kw_only=True)
class ProjectConfig(Sampling):
    """Project systems' activations onto a persona vector."""

    model: str = field("smollm2-135m", help="the base model (the one the vector was built on)")
    adapter: list[str] = field(factory=list, help="PEFT adapter dirs on --model (repeat or comma-separate)")
    vector: str = field("", help="a `character steer build` directory")
    prompted: bool = field(True, help="also project the base playing the persona through its system prompt")
    prompt_set: str = field("eval", help="prompts: a name in evals/prompts/ (default: the held-out eval set)")
    prompts: int = field(32, help="prompts (a seeded sample of the set)")
    layer: int = field(-1, help="layer to read; -1: the one the vector's sweep chose")
    bootstrap: int = field(1000, help="bootstrap resamples for the intervals")
    dtype: str = field("auto", help="weights dtype: auto, bfloat16, float16 or float32")
    batch_size: int = field(16, help="sequences per forward pass / generate() call", hash=False)
    max_model_len: int = field(2048, help="longest prompt + answer in tokens", hash=False)
    max_tokens: int = field(64, help="new tokens per answer")
    out: str = field("", help="write projection.json here (a directory); empty: print only", hash=False)

    def __post_init__(self):
        super().__post_init__()
        if not self.vector:
            raise ValueError("--vector is required: a `character steer build` directory")
        if self.prompts < 2:
            raise ValueError("prompts must be >= 2")


def summarize(values: dict[str, list[float]], scale: tuple[float, float], reference: str, n_boot: int,
              seed: int) -> dict:
    """Per system: mean projection, relative position between the build's plain (0) and prompted (1) means, and
    the difference to `reference` (paired by prompt), each with a percentile bootstrap 95% interval."""
    import numpy as np

    from character.evaluation.scoring import bootstrap_mean_diff, interval

    neg, pos = scale
    span = pos - neg if abs(pos - neg) > 1e-9 else 1.0
    rng = np.random.default_rng(seed)
    out = {}
    for name, vals in values.items():
        v = np.asarray(vals, dtype=float)
        draws = v[rng.integers(0, len(v), (n_boot, len(v)))].mean(axis=1)
        lo, hi = interval(draws)
        row = {"n": len(v), "projection": round(float(v.mean()), 4), "ci95": [round(float(lo), 4), round(float(hi), 4)],
               "relative": round(float((v.mean() - neg) / span), 4),
               "relative_ci95": [round(float((lo - neg) / span), 4), round(float((hi - neg) / span), 4)]}
        if name != reference:
            d, dlo, dhi = bootstrap_mean_diff(values[reference], vals, n_boot=n_boot, seed=seed)
            row.update(minus_reference=round(d / span, 4), minus_reference_ci95=[round(dlo / span, 4),
                                                                                 round(dhi / span, 4)])
        out[name] = row
    return out


def projections(engine, systems, prompts: list[str], answers: dict[str, list[str]], steering, layer: int,
                batch_size: int = 16) -> tuple[dict, dict]:
    """({system: answer-token projections}, {system: last-prompt-token projections}) on the unit direction of
    `steering`'s vector at `layer`; a steered system is read with its own vector hooked in."""
    from character.steer import activations, vectors

    unit = vectors.unit_vector(vectors.load(steering.path)[steering.method][layer].double()).float()
    answer, prompt_end = {}, {}
    for s in systems:
        rows = [(s.messages(p), a) for p, a in zip(prompts, answers[s.name])]
        acts = activations.read(engine, rows, [layer], adapter=s.adapter, steering=s.steer, batch_size=batch_size)
        answer[s.name] = (acts[0, :, 0] @ unit).tolist()
        prompt_end[s.name] = (acts[1, :, 0] @ unit).tolist()
    return answer, prompt_end


def scale_of(steering, layer: int) -> tuple[float, float]:
    """(plain, prompted) mean projections of the build's answers at `layer` (separation.json)."""
    sep = json.loads((Path(steering.path) / "separation.json").read_text(encoding="utf-8"))
    row = sep["layers"][layer][steering.method]
    return row["negative_projection"], row["positive_projection"]


def run_project(cfg: ProjectConfig) -> dict:
    import random

    from character import constitution as C
    from character import models
    from character.artifacts import atomic_write_json
    from character.engine.base import EngineConfig, subset
    from character.engine.hf import HFEngine
    from character.evaluation import data
    from character.evaluation.robustness import persona_prompt
    from character.evaluation.systems import System
    from character.steer.vectors import open_dir

    steering = open_dir(cfg.vector)
    if steering is None:
        raise CharacterError(f"--vector '{cfg.vector}': that steer stage was left off, so it holds no vector")
    base = models.resolve(cfg.model)
    _check_model(steering, base, cfg.vector)
    layer = steering.layer if cfg.layer < 0 else cfg.layer
    systems = [System("base", base)]
    for a in cfg.adapter:
        models.check_adapter(a, base)
        systems.append(System(Path(a).resolve().name, base, adapter=str(Path(a).expanduser().resolve())))
    if cfg.prompted:
        const = C.load(steering.constitution)
        systems.append(System("persona-prompted", base, system_prompt=persona_prompt(const)))
    pool = data.prompts(cfg.prompt_set)
    prompts = random.Random(cfg.seed).sample(pool, min(cfg.prompts, len(pool)))
    engine = HFEngine(EngineConfig(model=base, backend="hf", dtype=cfg.dtype, batch_size=cfg.batch_size,
                                   max_model_len=cfg.max_model_len))
    try:
        sampling = subset(cfg, Sampling)
        answers = {s.name: [c.texts[0] for c in engine.generate([s.request(p) for p in prompts], sampling,
                                                                progress=f"answers {s.name}")] for s in systems}
        answer, prompt_end = projections(engine, systems, prompts, answers, steering, layer, cfg.batch_size)
    finally:
        engine.close()
    scale = scale_of(steering, layer)
    result = {"vector": steering.path, "constitution": steering.constitution, "method": steering.method,
              "layer": layer, "prompts": len(prompts), "prompt_set": cfg.prompt_set,
              "scale": {"plain": scale[0], "prompted": scale[1]},
              "answer_tokens": summarize(answer, scale, "base", cfg.bootstrap, cfg.seed),
              "last_prompt_token": summarize(prompt_end, scale, "base", cfg.bootstrap, cfg.seed)}
    print("\n".join(table(result)))
    if cfg.out:
        atomic_write_json(Path(cfg.out) / "projection.json", result)
        print(f"steer project: wrote {Path(cfg.out) / 'projection.json'}")
    return result


def _check_model(steering, base: str, where: str) -> None:
    from character.identity import identity

    if steering.model and steering.model != identity(base):
        raise CharacterError(f"'{where}' was built on another model than {base}; give the --model it was built on")


def table(result: dict) -> list[str]:
    """Markdown lines: per system, relative projection with interval, minus the base."""
    L = [f"Projection on the `{result['constitution']}` vector ({result['method']}, layer {result['layer']}), "
         f"{result['prompts']} held-out prompts; relative scale: 0 = the build's plain answers, 1 = its "
         "persona-prompted answers; 95% bootstrap intervals over prompts.", "",
         "| system | answer tokens | 95% CI | minus base | 95% CI | last prompt token, minus base | 95% CI |",
         "|---|---:|---|---:|---|---:|---|"]
    for name, r in result["answer_tokens"].items():
        end = result["last_prompt_token"][name]
        L.append(f"| {name} | {r['relative']:+.2f} | {_ci(r['relative_ci95'])} | " + _minus(r) + " | " + _minus(end)
                 + " |")
    return L


def _ci(ci) -> str:
    return f"[{ci[0]:+.2f}, {ci[1]:+.2f}]"


def _minus(r: dict) -> str:
    return f"**{r['minus_reference']:+.2f}** | {_ci(r['minus_reference_ci95'])}" if "minus_reference" in r else \
        "(reference) |"
