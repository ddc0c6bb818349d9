"""`character eval SUITE`: the config, validation of models and adapters, and the run that writes
results.json, report.md and PNG plots into the out dir.

    character eval preferences --model smollm2-135m --adapter runs/demo/train-dpo --constitution sarcasm
    character eval all --model smollm2-135m --adapter A --adapter B --out runs/eval

`run_eval(cfg)` is the library entry (the pipeline calls it); it skips when the out dir's manifest matches.
results.json holds only what the seed decides (same seed, same file); timings go to timings.json.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from character.config import config_hash, field, suggest, to_dict
from character.engine.base import EngineConfig, Sampling
from character.errors import CharacterError

SUITES = ("preferences", "robustness", "prefill", "coherence", "capability", "all")
Suite = Literal["preferences", "robustness", "prefill", "coherence", "capability", "all"]


@dataclass
class EvalConfig(EngineConfig, Sampling):
    """Evaluate a base model, the base with adapters (one engine, multi-LoRA), or a merged model dir."""

    suite: Suite = field("preferences", help="preferences, robustness, prefill, coherence, capability or all")
    adapter: list[str] = field(help="PEFT adapter dirs served on top of --model (repeat --adapter or comma-separate)",
                               factory=list)
    baseline: str | None = field(None, help="another full model to compare against (e.g. the base of a merged "
                                            "--model); gets its own engine")
    constitution: str | None = field(None, help="persona the adapters were trained for (name or file): marks its "
                                                "traits in the shift table and labels the adapters for robustness")
    judge: Literal["embedding", "llm"] = field("embedding", help="preferences judge: embedding (MiniLM) or llm")
    judge_model: str | None = field(None, help="llm judge (and coherence judge) model; default: --model itself")
    judge_mode: Literal["logprob", "tags"] = field("logprob", help="llm judge: read the choice from log-probs, "
                                                                   "or parse it from a written reply")
    embedding_model: str = field("minilm", help="sentence-embedding model for the embedding judge and classifier")
    condition: Literal["feel", "like", "random"] = field("feel", help="preferences system-prompt condition")
    comparisons: int = field(200, help="preferences: comparisons per system")
    num_traits: int = field(0, help="preferences: traits in play (constitution traits + random others); 0 = all")
    prompt_set: str = field("eval", help="prompt set: a name in evals/prompts/ (without .jsonl) or a .jsonl file; "
                                        "the default `eval` is held out from every training prompt")
    permutations: int = field(1000, help="preferences: permutations of the paired test behind p-values and the "
                                         "per-trait significance flags (Holm-adjusted); 0 skips the test")
    control: str | None = field(None, help="preferences: a finished eval dir of a control run (a placebo "
                                           "constitution through the same pipeline): the report gives this run's "
                                           "marked shift minus the control's, with an interval")
    bootstrap: int = field(200, help="bootstrap resamples for intervals")
    bt_l2: float = field(0.1, help="Bradley-Terry prior strength (keeps strengths of all-win/all-loss traits finite)")
    reliability: bool = field(True, help="measure the judge's accuracy on evals/judge_labelled.jsonl")
    personas: list[str] = field(help="robustness: personas for the classifier (constitution names); empty = all",
                                factory=list)
    suffixes: list[str] = field(help="robustness: suffix ids from evals/robustness.yaml; empty = all", factory=list)
    classifier_prompts: int = field(24, help="robustness: training prompts per persona for the classifier")
    classifier_features: Literal["minilm", "tfidf-word", "tfidf-char", "minilm+tfidf"] = field(
        "minilm", help="robustness: persona classifier features: MiniLM embeddings, TF-IDF word or char n-grams, "
                       "or MiniLM and both TF-IDF sets")
    persona_prompt: Literal["description", "traits"] = field(
        "description", help="robustness: the system prompt that plays each persona: the constitution's "
                            "description (small models follow it better) or its numbered traits")
    robustness_prompts: int = field(12, help="robustness/prefill: held-out prompts per system and suffix")
    coherence_prompts: int = field(48, help="coherence: prompts judged per pair of systems")
    capability_questions: int = field(0, help="capability: questions used; 0 = all")
    harness_tasks: list[str] = field(help="capability: lm-evaluation-harness tasks to run too (needs lm-eval)",
                                     factory=list)
    harness_limit: int = field(0, help="capability: examples per harness task; 0 = all")
    lora_serving: Literal["auto", "multi", "merged"] = field(
        "auto", help="multi: one engine serves the base and all adapters (multi-LoRA); merged: each adapter merged "
                     "into a full checkpoint served by its own engine; auto: multi")
    score_backend: Literal["auto", "hf"] = field("auto", help="engine for log-prob scoring (capability, llm "
                                                 "judge): auto = the generating engine, hf = transformers")
    max_tokens: int = field(128, help="new tokens per answer")
    out: str = field("runs/eval", help="output directory", hash=False)

    def __post_init__(self):
        super().__post_init__()
        for name in ("comparisons", "bootstrap", "classifier_prompts", "robustness_prompts", "coherence_prompts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.permutations < 0:
            raise ValueError("permutations must be >= 0")
        if self.seed is None:
            raise ValueError("seed must be set: evaluations are reproducible by seed")


def _check_names(names: list[str], known, what: str) -> None:
    for n in names:
        if n not in known:
            raise CharacterError(f"{what} '{n}' is unknown{suggest(n, known)}; known: {', '.join(known)}")


def prepare_systems(cfg: EvalConfig):
    """Resolve the base, validate every adapter against it (before any engine starts) and name the systems."""
    from character.evaluation.systems import System
    from character.models import check_adapter, resolve

    base = resolve(cfg.model)
    systems = []
    if cfg.baseline:
        systems.append(System("baseline", resolve(cfg.baseline)))
    systems.append(System("base" if not cfg.baseline else "model", base))
    taken = {s.name for s in systems}
    for a in cfg.adapter:
        check_adapter(a, base)
        path = os.path.abspath(os.path.expanduser(a))
        name = Path(path).name or "adapter"
        while name in taken:
            name = f"{Path(path).parent.name}-{name}" if Path(path).parent.name not in name else name + "'"
        taken.add(name)
        systems.append(System(name, base, adapter=path))
    return base, systems


def resolve_lora_serving(cfg: EvalConfig) -> str:
    """`auto` is multi-LoRA everywhere: on GPU with vLLM's kernels, on CPU with character's grouped ones
    (engine/cpu_lora.py), which serve 4 adapters as fast as 4 merged checkpoints (bench/eval.py --merged)."""
    return "multi" if cfg.lora_serving == "auto" else cfg.lora_serving


def serve_merged(systems):
    """Adapters replaced by merged full checkpoints (same names), for --lora_serving merged."""
    from character.evaluation.systems import System, merged_checkpoint

    return [System(s.name, merged_checkpoint(s.model, s.adapter)) if s.adapter else s for s in systems]


def load_constitution(cfg: EvalConfig):
    if not cfg.constitution:
        return None
    from character import constitution as C

    return C.load(cfg.constitution)


def run_eval(cfg: EvalConfig) -> Path:
    from character.artifacts import (
        StageDir,
        atomic_write_json,
        content_hash,
        git_commit,
        sha256_text,
        versions,
    )
    from character.evaluation import data
    from character.resources import data_path

    if cfg.suite not in SUITES:
        raise CharacterError(f"suite '{cfg.suite}' is unknown{suggest(cfg.suite, SUITES)}; use one of {', '.join(SUITES)}")
    base, systems = prepare_systems(cfg)
    const = load_constitution(cfg)
    suites = ["preferences", "robustness", "prefill", "coherence", "capability"] if cfg.suite == "all" else [cfg.suite]
    if any(s in suites for s in ("robustness", "prefill")) and len(systems) > 1 and const is None:
        raise CharacterError("robustness: give --constitution so the trained systems' answers can be labelled "
                             "with the persona they were trained for")
    if cfg.harness_tasks and "capability" in suites:
        import importlib.util

        if importlib.util.find_spec("lm_eval") is None:
            raise CharacterError("harness_tasks: lm-evaluation-harness is not installed; `pip install lm-eval` "
                                 "or leave --harness_tasks empty")
    _check_names(cfg.suffixes, [s["id"] for s in data.robustness_settings()["suffixes"]], "suffix")
    from character import constitution as C

    _check_names(cfg.personas, C.available(), "persona")

    out = StageDir(cfg.out, "eval")
    cfg_dict = {k: v for k, v in to_dict(cfg).items() if k != "out"}
    h = config_hash(cfg)
    inputs = {s.name: content_hash(s.adapter or s.model) for s in systems}
    inputs["evals"] = content_hash(data_path("evals"))
    if const is not None:
        inputs["constitution"] = const.hash()
        inputs["eval_traits"] = list(const.eval_traits)
    control = _load_control(cfg.control) if cfg.control and "preferences" in suites else None
    if control is not None:
        inputs["control"] = content_hash(cfg.control)
    prompts = _prompt_file(cfg.prompt_set) if Path(cfg.prompt_set).suffix == ".jsonl" else data.prompts(cfg.prompt_set)
    if out.is_complete(h, inputs) and (out.path / "results.json").is_file():
        print(f"eval: {out.path} is up to date (same config and inputs); delete it to rerun")
        return out.path
    # a finished report of other settings stays until this one is written (begin works beside it); the answer
    # cache is keyed by request, so the new run starts from the old one's
    out.begin(cfg_dict, h, inputs, carry=("cache",))
    for p in [*out.path.glob("*.png"), out.path / "results.json", out.path / "report.md"]:
        p.unlink(missing_ok=True)  # of an unfinished run (a finished one's are beside, in out.final)

    from character.engine.base import subset
    from character.evaluation.systems import Engines

    adapter_of = {s.name: s.adapter for s in systems}
    serving = resolve_lora_serving(cfg) if any(adapter_of.values()) else "none"
    if serving == "merged":
        systems = serve_merged(systems)
    engine_cfg = subset(cfg, EngineConfig)
    engine_cfg = dataclasses.replace(engine_cfg, model=base)
    sampling = subset(cfg, Sampling)
    engines = Engines(engine_cfg, [s.adapter for s in systems if s.adapter], cache_dir=out.path / "cache",
                      score_backend=cfg.score_backend)
    results: dict = {"suite": cfg.suite, "config": cfg_dict, "config_hash": h, "seed": cfg.seed,
                     "systems": [{"name": s.name, "model": s.model, "adapter": adapter_of[s.name]} for s in systems],
                     "lora_serving": serving,
                     "versions": versions(), "git_commit": git_commit(), "inputs": inputs}
    timings: dict = {}
    embed_judge = None

    def embedding_judge():
        nonlocal embed_judge
        if embed_judge is None:
            from character.evaluation.judges import EmbeddingJudge

            embed_judge = EmbeddingJudge(cfg.embedding_model)
        return embed_judge

    def llm_judge():
        from character.evaluation.judges import LLMJudge
        from character.evaluation.systems import EngineJudgeAdapter
        from character.models import resolve

        judge_model = resolve(cfg.judge_model) if cfg.judge_model else base
        j = LLMJudge(EngineJudgeAdapter(engines, judge_model), mode=cfg.judge_mode)
        j.model = judge_model
        return j

    from character.evaluation import provenance

    # the systems as given (a merged checkpoint served for an adapter has no manifests to follow)
    trained = {s["name"]: s["adapter"] or s["model"] for s in results["systems"][1:]}
    results["contamination"] = provenance.contamination(trained, prompts) if trained else {"checked": False,
                                                                                          "reason": "no trained system"}
    lineages = {name: provenance.trace(path) for name, path in trained.items()}
    results["teacher_separation"] = _teacher_separation(lineages)
    marked_choice = (constitution_traits(const, embedding_judge, results["teacher_separation"])
                     if const is not None else None)
    marked = marked_choice["traits"] if marked_choice else []

    try:
        if "preferences" in suites:
            t0 = time.time()
            from character.evaluation import preferences
            from character.evaluation.judges import reliability

            judge = embedding_judge() if cfg.judge == "embedding" else llm_judge()
            vocab = list(data.traits())
            template = data.preference_templates()["conditions"][cfg.condition]
            section = preferences.run(engines, systems, judge, vocab=vocab, prompts=prompts,
                                      condition=cfg.condition, template=template, comparisons=cfg.comparisons,
                                      seed=cfg.seed, sampling=sampling, n_boot=cfg.bootstrap, l2=cfg.bt_l2,
                                      marked=marked, num_traits=cfg.num_traits, n_perm=cfg.permutations)
            section["marked_from"] = marked_choice["source"] if marked_choice else None
            if marked_choice and marked_choice.get("candidates"):
                section["marked_candidates"] = marked_choice["candidates"]
            section["judge"] = {"kind": cfg.judge, "mode": cfg.judge_mode if cfg.judge == "llm" else None,
                                "model": getattr(judge, "model", None) if cfg.judge == "llm" else cfg.embedding_model}
            if cfg.reliability:
                rel = reliability(judge, n_distractors=5 if cfg.judge == "embedding" else 2, seed=cfg.seed)
                section["judge_reliability"] = rel
                # a judge no better than a coin makes every shift below unreadable: say so before anything else
                section["inconclusive"] = bool(rel["ci95"][0] <= 0.5)
            if control is not None:
                section["control"] = {"path": str(Path(cfg.control).resolve()),
                                      **preferences.compare_to_control(section, control, n_boot=max(cfg.bootstrap, 500),
                                                                       seed=cfg.seed, l2=cfg.bt_l2,
                                                                       n_perm=cfg.permutations)}
            results["preferences"] = section
            timings["preferences_s"] = round(time.time() - t0, 1)

        if "robustness" in suites or "prefill" in suites:
            t0 = time.time()
            results.update(_robustness(cfg, engines, systems[0].model, systems, const, prompts, sampling, embedding_judge(),
                                       suites))
            timings["robustness_s"] = round(time.time() - t0, 1)

        if "coherence" in suites:
            t0 = time.time()
            from character.evaluation import coherence

            if len(systems) < 2:
                raise CharacterError("coherence compares systems: give --adapter (or --baseline)")
            rng_prompts = _sample(prompts, cfg.coherence_prompts, cfg.seed + 1)
            results["coherence"] = coherence.run(engines, systems, llm_judge(), rng_prompts, sampling)
            timings["coherence_s"] = round(time.time() - t0, 1)

        if "capability" in suites:
            t0 = time.time()
            from character.evaluation import capability

            qs = data.capability_questions()
            if cfg.capability_questions:
                qs = qs[:cfg.capability_questions]
            results["capability"] = capability.run(engines, systems, qs, cfg.seed)
            if cfg.harness_tasks:
                engines.close()
                results["capability"]["harness"] = capability.run_harness(systems, cfg.harness_tasks,
                                                                          cfg.harness_limit or None)
            timings["capability_s"] = round(time.time() - t0, 1)
    finally:
        engines.close()
    timings["engine_starts"] = engines.starts
    timings["scorer_starts"] = engines.scorer_starts

    from character.evaluation import report

    t0 = time.time()
    plots = report.plots(results, out.path)
    results["plots"] = plots
    atomic_write_json(out.path / "results.json", results)
    report.write(results, out.path / "report.md")
    timings["report_s"] = round(time.time() - t0, 1)
    atomic_write_json(out.path / "timings.json", timings)
    out.finish(counts={"systems": len(systems), "suites": suites}, timings=timings,
               results_hash=sha256_text((out.path / "results.json").read_text()))
    print(f"eval: wrote {out.path / 'report.md'}")
    return out.path


def _prompt_file(path: str) -> list[str]:
    from character.artifacts import read_jsonl

    return [r["prompt"] for r in read_jsonl(path)]


def _sample(items: list, n: int, seed: int) -> list:
    import random

    return random.Random(seed).sample(items, min(n, len(items)))


def constitution_traits(const, embedding_judge, separation: dict | None = None, k: int = 5) -> dict:
    """The vocabulary traits a constitution's training should raise, and where they came from (marked.py): its
    own `eval_traits`, the built-in map for the shipped personas, or the traits nearest its statements that the
    DPO data moves toward (`separation`: the teacher's separation from the adapter's dpo-data), never two opposites."""
    from character.evaluation import data
    from character.evaluation.marked import choose_marked_traits

    sep = next((v for v in (separation or {}).get("systems", {}).values() if v.get("checked")), None)
    return choose_marked_traits(const, embedding_judge().encode, data.traits(), sep, k=k)


def _teacher_separation(lineages: dict) -> dict:
    """Per trained system: the separation `dpo-data` measured between its chosen and rejected answers (how well
    the teacher played the persona), read from the dpo-data manifest its lineage leads to."""
    from character.artifacts import read_manifest

    out: dict = {}
    for name, lineage in lineages.items():
        where = lineage.stage("dpo-data")
        sep = (read_manifest(where) or {}).get("separation") if where else None
        if sep:
            out[name] = {**sep, "dpo_data": str(where)}
        else:
            out[name] = {"checked": False, "reason": "no dpo-data stage in its lineage" if where is None
                         else f"{where}: its manifest has no separation (made before it was measured)"}
    return {"systems": out}


def _load_control(path: str) -> dict:
    """The preferences section of a finished control eval, checked before any engine starts."""
    import json

    f = Path(path).expanduser() / "results.json"
    if not f.is_file():
        raise CharacterError(f"control '{path}': no results.json; give the eval dir of a finished control run "
                             "(e.g. runs/placebo/placebo/eval)")
    pref = json.loads(f.read_text(encoding="utf-8")).get("preferences") or {}
    if not pref.get("outcomes") or len(pref["outcomes"]) < 2:
        raise CharacterError(f"control '{path}': its results.json has no per-comparison preference outcomes of a "
                             "trained system; rerun that eval with this version (suite preferences, with an adapter)")
    return pref


def _robustness(cfg, engines, base, systems, const, prompts, sampling, embed_judge, suites) -> dict:
    from character import constitution as C
    from character.evaluation import data, robustness
    from character.evaluation.systems import System

    names = cfg.personas or C.available()
    personas = {n: C.load(n) for n in names}
    if const is not None and const.name not in personas:
        personas[const.name] = const
    if len(personas) < 2:
        raise CharacterError("robustness: the classifier needs at least two personas; list more with --personas")
    settings = data.robustness_settings()
    suffixes = [s for s in settings["suffixes"] if not cfg.suffixes or s["id"] in cfg.suffixes]
    train, test = robustness.split_prompts(prompts, cfg.classifier_prompts, cfg.robustness_prompts, cfg.seed)
    clf, n_train, train_acc = robustness.train_classifier(engines, base, personas, train, sampling,
                                                          embed_judge.encode, cfg.classifier_features,
                                                          cfg.persona_prompt)
    # every system but the reference is a trained one (adapter, merged adapter, or the merged --model against a
    # --baseline): it should show the constitution's persona
    trained = [System(s.name, s.model, s.adapter, label=const.name if const else None) for s in systems[1:]]
    adapters = [s for s in trained if s.label]
    section = robustness.run(engines, clf, base=base, personas=personas, adapters=adapters, test_prompts=test,
                             suffixes=suffixes, sampling=sampling, do_robustness="robustness" in suites,
                             do_prefill="prefill" in suites, followup=settings.get("prefill_followup", "Keep going."),
                             style=cfg.persona_prompt, n_boot=cfg.bootstrap, seed=cfg.seed)
    section["classifier"] = {"train_answers": n_train, "train_accuracy": train_acc, "features": cfg.classifier_features,
                             "persona_prompt": cfg.persona_prompt,
                             "embedding_model": cfg.embedding_model if "minilm" in cfg.classifier_features else None}
    return {"robustness": section}
