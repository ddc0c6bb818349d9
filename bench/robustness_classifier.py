"""Which persona classifier can tell a small model's personas apart? Held-out accuracy of each option, same answers.

    .venv/bin/python bench/robustness_classifier.py                         # smollm2-135m, 56 new tokens
    .venv/bin/python bench/robustness_classifier.py --max-tokens 128 --train 48 --styles description

The model answers prompts from evals/prompts/general.jsonl (--prompt-set) with no system prompt (class "default") and under each
shipped persona's system prompt, in each prompt style (`traits`: the numbered trait statements; `description`: the
constitution's one paragraph), through the default engine (vLLM on CPU). Answers are cached under --work, one file
per system, so a second run only refits and a stopped one resumes. Prompts are split as `character eval robustness`
splits them (train first, then held-out test prompts); every option is fitted on the train prompts' answers and
scored on the held-out prompts' answers.
Options: features (MiniLM embeddings, TF-IDF word or char n-grams, MiniLM + TF-IDF), the logistic regression's
inverse regularisation C (1 or 10), training prompts per persona, and classes (all personas, or only the target,
default and a few others). The last line is one JSON object.

Measured here (2-core AMD EPYC with AVX512-BF16, smollm2-135m, `--prompt-set eval --styles description`, 64 train
and 24 held-out prompts, 2026-12-02; 1056 answers in 112 s, 6 min in all): held-out accuracy over the 12 classes
at best 0.194 (MiniLM + TF-IDF, C = 10, 64 answers per class; chance 0.083), MiniLM alone with 24 answers 0.146;
over 5 classes at best 0.375 (chance 0.200), MiniLM with 24 answers 0.300. No feature set or training size makes
SmolLM2-135M's personas separable: the personas it plays are too alike, whatever reads them.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def generate(args) -> dict:
    """{(style, label): [answer per prompt]} for the train + test prompts, plus the prompt lists."""
    from character import constitution as C
    from character.engine.base import EngineConfig, Sampling
    from character.evaluation import data, robustness
    from character.evaluation.systems import Engines, System
    from character.models import resolve

    base = resolve(args.model)
    train, test = robustness.split_prompts(data.prompts(args.prompt_set), args.train, args.test, args.seed)
    systems = [System("default", base, label="default")]
    for style in args.styles:
        for name in C.available():
            prompt = robustness.persona_prompt(C.load(name), style)
            systems.append(System(f"{style}:{name}", base, system_prompt=prompt, label=name))
    engines = Engines(EngineConfig(model=base), [], cache_dir=Path(args.work))
    sampling = Sampling(temperature=0.7, max_tokens=args.max_tokens, seed=args.seed)
    prompts = train + test
    t0 = time.time()
    # one call (and one cache file) per system: a run stopped halfway resumes where it was
    by = {s.name: engines.generate([(s, s.request(p)) for p in prompts], sampling, label=f"answers-{s.name}")
          for s in systems}
    engines.close()
    print(f"generated {len(systems) * len(prompts)} answers in {time.time() - t0:.0f} s", file=sys.stderr)
    return {"by": by, "n_train": len(train), "n_test": len(test)}


def held_out(fit_texts, fit_labels, test_texts, test_labels, features: str, c: float, embed) -> dict:
    from character.evaluation.classifier import PersonaClassifier, metrics

    clf = PersonaClassifier(embed, c=c, features=features).fit(fit_texts, fit_labels)
    return metrics(test_labels, clf.predict(test_texts))


def options(gen: dict, args, embed) -> list[dict]:
    from character import constitution as C
    from character.evaluation.classifier import FEATURES

    rows = []
    by, n_train = gen["by"], gen["n_train"]

    personas = C.available()
    subsets = {"all": personas, "target+3": [args.target, *[p for p in args.others if p != args.target]][:4]}
    for style in args.styles:
        for classes_name, names in subsets.items():
            systems = {"default": by["default"], **{p: by[f"{style}:{p}"] for p in names}}
            for k in sorted({min(n_train, x) for x in (12, 24, 48, n_train)}):
                for features, c in itertools.product(FEATURES, (1.0, 10.0)):
                    fit_t, fit_l, test_t, test_l = [], [], [], []
                    for label, answers in systems.items():
                        fit_t += answers[:k]
                        fit_l += [label] * k
                        test_t += answers[n_train:]
                        test_l += [label] * (len(answers) - n_train)
                    t0 = time.time()
                    m = held_out(fit_t, fit_l, test_t, test_l, features, c, embed)
                    rows.append({"style": style, "classes": classes_name, "n_classes": len(systems),
                                 "train_per_class": k, "features": features, "c": c,
                                 "held_out_accuracy": m["accuracy"],
                                 "macro_f1": m["macro_f1"], "chance": 1 / len(systems),
                                 "per_persona": m["per_persona"], "fit_s": round(time.time() - t0, 1)})
                    print(f"{style:11s} {classes_name:8s} k={k:3d} {features:13s} C={c:<4g} acc {m['accuracy']:.3f} "
                          f"(chance {1 / len(systems):.3f}) macro-F1 {m['macro_f1']:.3f}", file=sys.stderr)
    return rows


def memo(embed):
    """`embed` that computes each text's embedding once: every option refits on the same answers."""
    import numpy as np

    seen: dict[str, object] = {}

    def cached(texts):
        todo = [t for t in dict.fromkeys(texts) if t not in seen]
        if todo:
            seen.update(zip(todo, embed(todo)))
        return np.stack([seen[t] for t in texts])

    return cached


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--train", type=int, default=64, help="train prompts (answers per class)")
    ap.add_argument("--test", type=int, default=24, help="held-out prompts")
    ap.add_argument("--max-tokens", type=int, default=56)
    ap.add_argument("--styles", nargs="+", default=["traits", "description"])
    ap.add_argument("--target", default="poeticism")
    ap.add_argument("--others", nargs="+", default=["humor", "loving", "mathematical"])
    ap.add_argument("--prompt-set", default="general", help="a prompt set in evals/prompts/")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default="/tmp/bench-robustness-classifier")
    args = ap.parse_args()
    gen = generate(args)
    from character.evaluation.judges import EmbeddingJudge

    rows = options(gen, args, memo(EmbeddingJudge("minilm").encode))
    best = max(rows, key=lambda r: (r["held_out_accuracy"] - r["chance"]) / (1 - r["chance"]))
    print(json.dumps({"max_tokens": args.max_tokens, "test_prompts": gen["n_test"], "options": rows,
                      "best": best}))


if __name__ == "__main__":
    main()
