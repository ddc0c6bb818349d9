"""`character eval SUITE`: the config, validation of models and adapters, and the run that writes
results.json, report.md and PNG plots into the out dir.

    character eval preferences --model smollm2-135m --adapter runs/demo/train-dpo --constitution sarcasm
    character eval all --model smollm2-135m --adapter A --adapter B --out runs/eval

`run_eval(cfg)` is the library entry (the pipeline calls it); it skips when the out dir's manifest matches.
It checks everything it can before any engine starts, then runs the suites of the registry (suites.py), each
timed, and writes the report. results.json holds only what the seed decides (same seed, same file); timings go
to timings.json.
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
from character.evaluation import suites as registry


@dataclass
class EvalConfig(EngineConfig, Sampling):
    """Evaluate a base model, the base with adapters (one engine, multi-LoRA), or a merged model dir."""

    suite: str = field("preferences", help=f"{', '.join(registry.SUITES)}; several comma-separated (one report), "
                                           "or all")
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
    data: list[str] = field(help="a suite's own data instead of its shipped set: official benchmark files in their "
                                 "published layout (each suite says which): SUITE=PATH (repeat for several suites), "
                                 "or PATH when one suite runs", factory=list, split=False)
    harm_scorer: Literal["probe", "llm"] = field(
        "probe", help="harm: scorer of toxicity, agreement and regard: probe (MiniLM + logistic regression trained on "
                      "evals/harm/labelled.jsonl) or llm (yes/no log-probs of --judge_model)")
    harm_classifiers: list[str] = field(help="harm: TASK=DIR to score a task (toxic, agree, regard) with a local "
                                             "transformers classifier dir instead (e.g. toxic=DETOXIFY_DIR)",
                                        factory=list)
    harm_prompts: int = field(4, help="harm: items per metric and persona (kept small: every persona x host "
                                      "answers each)")
    harm_personas: list[str] = field(help="harm: personas or categories of evals/harm/personas.yaml; empty = all",
                                     factory=list)
    harm_max_tokens: int = field(48, help="harm: new tokens per reply, at most --max_tokens (the scorers "
                                          "read the opening sentences)")
    personagym_questions: int = field(5, help="personagym: questions per task and persona (the paper: 10; 5 keeps a "
                                              "CPU run of 3 systems to 75 answers)")
    personagym_environments: int = field(3, help="personagym: environments selected per persona (MiniLM nearest) "
                                                 "for the question writer")
    personagym_writer: str | None = field(None, help="personagym: question-writer model; default: --model (at "
                                                     "real scale give a strong one)")
    personagym_judges: list[str] = field(help="personagym: judges, averaged: probe (MiniLM probe trained on our "
                                              "labelled set), llm (--judge_model), or model names/dirs",
                                         factory=lambda: ["probe"])
    personagym_personas: int = field(1, help="personagym with --data DIR: persona files used, first by name; 0 = all")
    roleid_personas: list[str] = field(help="role-id: candidate personas (constitution names or files); empty = "
                                            "poeticism, sarcasm, loving, mathematical; --constitution is always one",
                                       factory=list)
    roleid_prompts: int = field(16, help="role-id: held-out prompts each system answers (16 keeps a CPU run of the "
                                         "base, 4 prompted personas and an adapter to 96 answers)")
    roleid_threshold: float = field(0.5, help="role-id: a verdict is certain when its top probability reaches this "
                                              "(accuracy and coverage of the certain ones are reported)")
    roleid_temperature: float = field(0.0, help="role-id: softmax temperature of the judge's scores; 0 = fitted by "
                                                "maximum likelihood on the labelled set (--data or the shipped one)")
    reasoning_questions: int = field(40, help="reasoning: questions per system, spread over categories; 0 = all "
                                              "(40 x 21 systems with one adapter and --constitution: 840 answers)")
    reasoning_personas: list[str] = field(help="reasoning: persona ids or groups of evals/reasoning/personas.yaml; "
                                               "empty = all", factory=list)
    reasoning_templates: list[str] = field(help="reasoning: persona instruction template ids; empty = all",
                                           factory=list)
    reasoning_max_tokens: int = field(192, help="reasoning: new tokens per chain-of-thought answer (smollm2-135m's "
                                               "median answer is ~10 tokens, but ~1 in 12 rambles to the cap, which "
                                               "bounds the run time; at real scale give 512+)")
    reasoning_ensemble: bool = field(False, help="reasoning: Jekyll & Hyde: the LLM judge (--judge_model) picks "
                                                 "between each system's answer and the no-persona one")
    apc_discriminator: Literal["minilm", "model", "llm"] = field(
        "minilm", help="apc: relevance and NLI discriminators: minilm (MiniLM cosine + probe fitted on evals/apc/), "
                       "model (--apc_nli_model, --apc_relevance_model) or llm (option log-probs of --judge_model)")
    apc_nli_model: str | None = field(None, help="apc: a local transformers NLI sequence-classification dir "
                                                 "(label names from its id2label), for --apc_discriminator model")
    apc_relevance_model: str | None = field(None, help="apc: a local relevance classifier dir (yes/relevant "
                                                       "label); default: MiniLM relevance")
    apc_prompts: int = field(32, help="apc: held-out prompts each system answers (32 x 3 systems keeps a CPU run "
                                      "of smollm2-135m to a few minutes)")
    steer: list[str] = field(help="steered systems: a `character steer build` dir, optionally @STRENGTH (default: "
                                  "the strength its sweep chose); repeat for several. Adds the persona-prompted base "
                                  "too, and the steering section (prompted vs steered vs trained); needs "
                                  "--constitution", factory=list, split=False, hash=False)
    max_tokens: int = field(128, help="new tokens per answer")
    out: str = field("runs/eval", help="output directory", hash=False)

    def __post_init__(self):
        problems = []
        try:
            super().__post_init__()
        except ValueError as e:
            problems.append(str(e))
        problems += registry.choice_problems(self.suite)
        self.suite = ",".join(registry.names_of(self.suite))  # one spelling: `all` and names compare as typed
        for name in ("comparisons", "bootstrap", "classifier_prompts", "robustness_prompts", "coherence_prompts"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1")
        if self.permutations < 0:
            problems.append("permutations must be >= 0")
        if self.seed is None:
            problems.append("seed must be set: evaluations are reproducible by seed")
        problems += registry.data_problems(self)
        if problems:
            raise ValueError("; ".join(problems))

    def data_for(self, suite: str) -> str | None:
        """The official data file or directory given to `suite` (--data SUITE=PATH, or PATH when only it runs)."""
        return registry.suite_data(self, suite)


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
    if cfg.steer:  # the persona-prompted base and the steered ones (character/steer/evalsuite.py)
        from character.steer import evalsuite

        systems += evalsuite.systems(cfg, base, taken)
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


def check_before_engines(cfg: EvalConfig, suites: list[str], systems: list, const) -> None:
    """Every check that needs no engine, so that bad input fails in a second, not after a model load."""
    from character import constitution as C
    from character.evaluation import data

    for name in suites:
        suite = registry.SUITES[name]
        if suite.needs_constitution and len(systems) > 1 and const is None:
            raise CharacterError(f"{registry.section_of(name)}: give --constitution so the trained systems' "
                                 "answers can be labelled with the persona they were trained for")
    for name in suites:
        if registry.SUITES[name].check is not None:
            registry.SUITES[name].check(cfg)
    _check_names(cfg.suffixes, [s["id"] for s in data.robustness_settings()["suffixes"]], "suffix")
    _check_names(cfg.personas, C.available(), "persona")


def judge_factories(cfg: EvalConfig, engines, base: str):
    """(embedding_judge, llm_judge): the first loads MiniLM once, the second makes an LLM judge on
    --judge_model (default: the base) served by `engines`."""
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

    return embedding_judge, llm_judge


def run_eval(cfg: EvalConfig) -> Path:
    from character.artifacts import (
        StageDir,
        atomic_write_json,
        git_commit,
        sha256_text,
        versions,
    )
    from character.evaluation import data
    from character.identity import identity
    from character.resources import data_path

    base, systems = prepare_systems(cfg)
    const = load_constitution(cfg)
    suites = registry.selected(cfg.suite, cfg)
    if cfg.steer or "steering" in suites:
        from character.steer.evalsuite import suites_for

        suites = suites_for(cfg, suites)
    check_before_engines(cfg, suites, systems, const)

    out = StageDir(cfg.out, "eval")
    cfg_dict = {k: v for k, v in to_dict(cfg).items() if k != "out"}
    h = config_hash(cfg, exclude=registry.others_options(cfg, suites))
    inputs = {s.name: identity(s.adapter or s.model) for s in systems}
    inputs["evals"] = identity(data_path("evals"))
    inputs.update({f"steer:{k}": v for k, v in _steer_inputs(systems).items()})
    if const is not None:
        inputs["constitution"] = const.hash()
        inputs["eval_traits"] = list(const.eval_traits)
    control = _load_control(cfg.control) if cfg.control and "preferences" in suites else None
    if control is not None:
        inputs["control"] = identity(cfg.control)
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
    engine_cfg = dataclasses.replace(subset(cfg, EngineConfig), model=base)
    engines = Engines(engine_cfg, [s.adapter for s in systems if s.adapter], cache_dir=out.path / "cache",
                      score_backend=cfg.score_backend)
    results: dict = {"suite": cfg.suite, "config": cfg_dict, "config_hash": h, "seed": cfg.seed,
                     "systems": [{"name": s.name, "model": s.model, "adapter": adapter_of[s.name]} for s in systems],
                     "lora_serving": serving,
                     "versions": versions(), "git_commit": git_commit(), "inputs": inputs}
    timings: dict = {}
    embedding_judge, llm_judge = judge_factories(cfg, engines, base)

    from character.evaluation import provenance

    # the systems as given (a merged checkpoint served for an adapter has no manifests to follow)
    trained = {s["name"]: s["adapter"] or s["model"] for s in results["systems"][1:]}
    trained = {k: v for k, v in trained.items() if k not in _untrained(systems)}  # prompted and steered systems
    results["contamination"] = provenance.contamination(trained, prompts) if trained else {"checked": False,
                                                                                          "reason": "no trained system"}
    lineages = {name: provenance.trace(path) for name, path in trained.items()}
    results["teacher_separation"] = _teacher_separation(lineages)
    marked_choice = (constitution_traits(const, embedding_judge, results["teacher_separation"])
                     if const is not None else None)

    ctx = registry.SuiteContext(cfg=cfg, engines=engines, systems=systems, prompts=prompts,
                                sampling=subset(cfg, Sampling), suites=suites, embedding_judge=embedding_judge,
                                llm_judge=llm_judge, constitution=const, marked_choice=marked_choice, control=control,
                                results=results)
    try:
        for section, suite in registry.sections(suites).items():
            t0 = time.time()
            results[section] = suite.run(ctx)
            timings[f"{section}_s"] = round(time.time() - t0, 1)
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


def _steer_inputs(systems) -> dict:
    if not any(s.steer is not None for s in systems):
        return {}
    from character.steer.evalsuite import inputs

    return inputs(systems)


def _untrained(systems) -> set[str]:
    return {s.name for s in systems if s.steer is not None or s.system_prompt}


def _prompt_file(path: str) -> list[str]:
    from character.artifacts import read_jsonl

    return [r["prompt"] for r in read_jsonl(path)]


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
