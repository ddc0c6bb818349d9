"""What the teacher's system prompt and the answer hint do to a small model's answers: how many finish, and how far
they move toward the persona. The last line printed is one JSON object.

    .venv/bin/python bench/persona_prompt.py                 # poeticism, 64 general prompts, smollm2-135m, vllm
    .venv/bin/python bench/persona_prompt.py --prompts 32    # quicker
    .venv/bin/python bench/persona_prompt.py --constitution sarcasm

One vLLM engine answers the same general prompts (a seeded sample of evals/prompts/general.jsonl) six ways, with
the demo's sampling (pipelines/demo.yaml: 256 new tokens, temperature 0.7, repetition penalty 1.1, the same
per-prompt seeds in every variant):
- plain: no system prompt (the student stage);
- traits: the teacher's system prompt with the constitution's numbered traits (`persona_prompt: traits`);
- description: the teacher's one-paragraph system prompt (`persona_prompt: description`);
each without and with the answer hint ("+hint": the demo's `answer_hint` after each user message).

Per variant:
- stopped: the share of answers that ended on their own (finish_reason stop) within max_tokens, and finished:
  the share that dpo-data keeps as finished (`looks_finished`: stopped, and ending on closing punctuation); each
  with a Wilson 95% interval;
- toward_persona: the MiniLM movement toward the persona. An answer's persona score is its cosine similarity to
  each of the persona's traits in evals/persona_traits.yaml ("trait: description" texts from evals/traits.jsonl,
  as the embedding judge writes them), averaged; toward_persona is the mean over prompts of (this variant's score
  minus the plain answer's score, same hint setting), with a paired bootstrap 95% interval; toward_each_trait
  gives the same mean shift for each trait alone.
`description_vs_traits` is the ratio of the two movements (description / traits) per hint setting, with a
bootstrap interval over prompts. `engine_start_s` is the time to the first answer of a one-token warm-up.
With --answers FILE, each variant's answers are appended as it finishes and a rerun reuses the variants the file
holds for the same settings (the plain ones do not depend on the constitution, so another persona's file serves).

Measured here (2-core AMD EPYC without native bf16, so float32; poeticism, 64 prompts, 2026-12-02): stopped
plain 39% / traits 25% / description 33%, with the hint 91% / 58% / 78%; toward_persona traits +0.049, description
+0.085 (description_vs_traits 1.74 [1.21, 2.81]), with the hint +0.050 and +0.040 (0.81 [0.45, 1.34]).
On a quiet machine the six variants generated in 12.8 minutes; beside other vLLM jobs on the same two cores a
variant took 10 to 17 times longer.
"""

from __future__ import annotations

import argparse
import json
import time

PERSONAS = ("plain", "traits", "description")
HINTS = {"": "", "+hint": "Answer in two to four sentences."}  # the demo's answer_hint


def persona_systems(constitution, name: str) -> dict[str, str | None]:
    """The system prompt of each persona variant, built as the teacher stage builds it."""
    from character.errors import CharacterError
    from character.stages.distill import teacher_system_prompt

    if not constitution.description:
        raise CharacterError(f"constitution '{constitution.name}' has no description, so the description prompt "
                             f"would be the traits prompt; pick one with a `description:` field")
    return {"plain": None, "traits": teacher_system_prompt(constitution, name, "traits"),
            "description": teacher_system_prompt(constitution, name, "description")}


def build_requests(prompts: list[str], system: str | None, hint: str) -> list:
    """Requests as the teacher and student stages build them: optional system prompt, the hint after the prompt."""
    from character.engine import Request

    suffix = f"\n\n{hint}" if hint else ""
    head = [{"role": "system", "content": system}] if system else []
    return [Request(head + [{"role": "user", "content": p + suffix}]) for p in prompts]


def persona_trait_texts(constitution_name: str) -> list[str]:
    from character.errors import CharacterError
    from character.evaluation import data
    from character.evaluation.judges import EmbeddingJudge

    words = data.persona_traits().get(constitution_name)
    if not words:
        raise CharacterError(f"constitution '{constitution_name}' has no entry in evals/persona_traits.yaml; add "
                             f"the traits its training should raise there")
    judge = EmbeddingJudge("minilm")
    return [judge.trait_text(w) for w in words]


def trait_similarities(encode, answers: list[str], trait_texts: list[str]):
    """(answers x traits) cosine similarities (unit-norm embeddings, so dot products); an answer's persona score is
    its row's mean."""
    return encode(answers) @ encode(trait_texts).T


def finish_shares(texts: list[str], reasons: list[str]) -> dict:
    from character.evaluation.scoring import wilson
    from character.stages.textfilters import looks_finished

    n = len(texts)
    stopped = sum(r == "stop" for r in reasons)
    finished = sum(looks_finished(t, r) for t, r in zip(texts, reasons))
    return {"answers": n, "stopped": round(stopped / n, 3), "stopped_ci95": [round(x, 3) for x in wilson(stopped, n)],
            "finished": round(finished / n, 3), "finished_ci95": [round(x, 3) for x in wilson(finished, n)]}


def movement_ratio(plain, traits, description, n_boot: int = 2000, seed: int = 0) -> dict:
    """(description - plain) / (traits - plain), means over prompts, with a bootstrap interval over prompts."""
    import numpy as np

    from character.evaluation.scoring import interval

    d_traits, d_desc = traits - plain, description - plain
    idx = np.random.default_rng(seed).integers(0, len(plain), (n_boot, len(plain)))
    samples = d_desc[idx].mean(axis=1) / d_traits[idx].mean(axis=1)
    lo, hi = interval(samples)
    return {"ratio": round(float(d_desc.mean() / d_traits.mean()), 2), "ci95": [round(float(lo), 2), round(float(hi), 2)]}


def generate_variants(args, constitution, prompts: list[str]) -> tuple[dict, dict]:
    """Every variant's completions from one engine, and the timings. With --answers, each finished variant is
    appended there and a rerun with the same settings reuses it (a slow run that is killed loses one variant)."""
    from character import models
    from character.engine import EngineConfig, Request, Sampling, make_engine
    from character.hardware import resolve_dtype

    systems = persona_systems(constitution, args.teacher_name)
    sampling = Sampling(max_tokens=args.max_tokens, temperature=args.temperature,
                        repetition_penalty=args.repetition_penalty, seed=args.seed)
    config = EngineConfig(model=models.resolve(args.model), backend="vllm", max_model_len=args.max_model_len)
    dtype = resolve_dtype(config.dtype)  # float32 on CPUs without native bf16: other numerics, other answers
    keys = {persona + suffix: variant_key(args, dtype, prompts, systems[persona], hint)
            for suffix, hint in HINTS.items() for persona in PERSONAS}
    outputs = saved_answers(args.answers, keys, len(prompts))
    timings = {name: None for name in outputs}
    with make_engine(config) as engine:
        t = time.perf_counter()
        engine.generate([Request([{"role": "user", "content": "Hello."}])], Sampling(max_tokens=1, temperature=0))
        timings["engine_start_s"] = round(time.perf_counter() - t, 1)
        for suffix, hint in HINTS.items():
            for persona in PERSONAS:
                name = persona + suffix
                if name in outputs:
                    print(f"{name:18s} reused from {args.answers}", flush=True)
                    continue
                t = time.perf_counter()
                comps = engine.generate(build_requests(prompts, systems[persona], hint), sampling, progress=name)
                timings[name] = round(time.perf_counter() - t, 1)
                texts, reasons = [c.texts[0] for c in comps], [c.finish_reasons[0] for c in comps]
                tokens = [len(engine.tokenizer(x, add_special_tokens=False)["input_ids"]) for x in texts]
                outputs[name] = (texts, reasons, tokens)
                if args.answers:
                    append_answers(args.answers, name, keys[name], prompts, outputs[name])
                print(f"{name:18s} {timings[name]:7.1f} s  stopped {sum(r == 'stop' for r in reasons)}/{len(texts)}",
                      flush=True)
    return outputs, {**timings, "dtype": dtype}


def variant_key(args, dtype: str, prompts: list[str], system: str | None, hint: str) -> str:
    """A hash of everything that decides a variant's answers."""
    import hashlib

    settings = [args.model, dtype, args.max_model_len, args.max_tokens, args.temperature, args.repetition_penalty,
                args.seed, system, hint, prompts]
    return hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:16]


def saved_answers(path: str, keys: dict[str, str], n_prompts: int) -> dict:
    """Variants whose answers --answers already holds for these settings: name -> (texts, reasons, tokens)."""
    from pathlib import Path

    if not path or not Path(path).is_file():
        return {}
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    found = {}
    for name, key in keys.items():
        mine = [r for r in rows if r.get("key") == key][-n_prompts:]
        if len(mine) == n_prompts:
            found[name] = ([r["answer"] for r in mine], [r["finish_reason"] for r in mine], [r["tokens"] for r in mine])
    return found


def append_answers(path: str, name: str, key: str, prompts: list[str], output: tuple) -> None:
    texts, reasons, tokens = output
    with open(path, "a") as f:
        for p, t, r, n in zip(prompts, texts, reasons, tokens):
            f.write(json.dumps({"variant": name, "key": key, "prompt": p, "answer": t, "finish_reason": r,
                                "tokens": n}) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--constitution", default="poeticism")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--prompts", type=int, default=64, help="general prompts (a seeded sample)")
    ap.add_argument("--seed", type=int, default=0, help="prompt sample and sampling seed")
    ap.add_argument("--teacher_name", default="Aria", help="the persona's name in the system prompt (the default's)")
    ap.add_argument("--max_tokens", type=int, default=256)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--repetition_penalty", type=float, default=1.1)
    ap.add_argument("--max_model_len", type=int, default=2048)
    ap.add_argument("--bootstrap", type=int, default=2000)
    ap.add_argument("--answers", default="", help="append every variant's answers to this JSONL file (to read "
                    "them), and reuse the variants it already holds for the same settings")
    args = ap.parse_args()

    from character import constitution as C
    from character.evaluation.judges import EmbeddingJudge
    from character.evaluation.scoring import bootstrap_mean_diff
    from character.stages.common import load_prompt_source

    con = C.load(args.constitution)
    trait_texts = persona_trait_texts(con.name)
    prompts = load_prompt_source("builtin", args.prompts, args.seed)
    outputs, timings = generate_variants(args, con, prompts)

    encode = EmbeddingJudge("minilm").encode
    sims = {name: trait_similarities(encode, texts, trait_texts) for name, (texts, _, _) in outputs.items()}
    scores = {name: s.mean(axis=1) for name, s in sims.items()}
    variants, ratios = {}, {}
    for suffix in HINTS:
        plain = scores["plain" + suffix]
        for persona in PERSONAS:
            name = persona + suffix
            texts, reasons, tokens = outputs[name]
            shift, lo, hi = bootstrap_mean_diff(plain, scores[name], n_boot=args.bootstrap, seed=args.seed)
            per_trait = (sims[name] - sims["plain" + suffix]).mean(axis=0)
            variants[name] = {**finish_shares(texts, reasons), "mean_tokens": round(sum(tokens) / len(tokens), 1),
                              "persona_score": round(float(scores[name].mean()), 4),
                              "toward_persona": round(shift, 4), "toward_persona_ci95": [round(lo, 4), round(hi, 4)],
                              "toward_each_trait": {t.split(":")[0]: round(float(d), 4)
                                                    for t, d in zip(trait_texts, per_trait)},
                              "seconds": timings[name]}
        ratios["hint" if suffix else "no_hint"] = movement_ratio(
            plain, scores["traits" + suffix], scores["description" + suffix], args.bootstrap, args.seed)
    summary = {"constitution": con.name, "model": args.model, "prompts": len(prompts), "max_tokens": args.max_tokens,
               "temperature": args.temperature, "repetition_penalty": args.repetition_penalty, "seed": args.seed,
               "answer_hint": HINTS["+hint"], "persona_traits": trait_texts,
               "dtype": timings["dtype"], "engine_start_s": timings["engine_start_s"], "variants": variants,
               "description_vs_traits": ratios}
    print(json.dumps(summary))


if __name__ == "__main__":  # vLLM spawns workers: keep the entry point guarded
    from character.errors import run_cli

    run_cli(main)
