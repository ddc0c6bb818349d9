"""The evaluation suites, in one table: `character eval NAME` runs `SUITES[NAME]`, `all` runs them in this order.

Each suite is a function `run(ctx: SuiteContext) -> dict` that returns its section of results.json; the runner
times it (`timings.json`: `{section}_s`), and report.md and the plots show the sections in the same order, each
drawn by the suite's `report` and `plots` functions. A section that sets `inconclusive: true` (its judge or
classifier cannot be told from chance) and `inconclusive_reason` gets a warning at the top of the report. A new
suite is one module with such functions plus one line in SUITES. Imports nothing heavy: suites import their modules when run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from character.config import suggest
from character.errors import CharacterError
from character.evaluation import apc as APC
from character.evaluation import harm as H
from character.evaluation import personagym as PG
from character.evaluation import reasoning as RS
from character.evaluation import report as R
from character.evaluation import roleid as RI
from character.steer import evalsuite as ST


@dataclass
class SuiteContext:
    """What the runner has ready before any suite runs; suites read it and never start their own engines."""

    cfg: Any  # the EvalConfig
    engines: Any  # systems.Engines: one engine (multi-LoRA) or one per merged system, started on first use
    systems: list  # the systems as served (merged checkpoints in place of adapters with --lora_serving merged)
    prompts: list[str]  # the held-out prompt set
    sampling: Any  # engine.base.Sampling
    suites: list[str]  # the suites asked for (a shared section, like robustness and prefill, reads which)
    embedding_judge: Callable[[], Any]  # the MiniLM judge, loaded once on first call
    llm_judge: Callable[[], Any]  # a new LLM judge on --judge_model (default: --model)
    constitution: Any = None  # the persona the adapters were trained for, or None
    marked_choice: dict | None = None  # constitution_traits(): the traits training should raise, and their source
    control: dict | None = None  # the preferences section of a finished control eval (--control)
    results: dict = field(default_factory=dict)  # results.json so far (earlier sections included)


@dataclass(frozen=True)
class Suite:
    run: Callable[[SuiteContext], dict]
    help: str
    # results.json key and timings name; suites that share one run (prefill is measured inside robustness) share it
    section: str = ""
    # with a trained system, its answers are labelled with the persona it was trained for: --constitution needed
    needs_constitution: bool = False
    # measures a persona itself (its statements or description): --constitution or the suite's --data needed;
    # `all` leaves the suite out, with a note, when neither is given
    needs_persona: bool = False
    # checked before any engine starts: (cfg) -> None, raising CharacterError
    check: Callable[[Any], None] | None = None
    # report.md lines of its section: (section, results) -> list[str] (report.py has the shipped ones)
    report: Callable[[dict, dict], list[str]] | None = None
    # its plots: (section, out dir, matplotlib.pyplot) -> file names written
    plots: Callable[[dict, Any, Any], list[str]] | None = None


def _sample(items: list, n: int, seed: int) -> list:
    import random

    return random.Random(seed).sample(items, min(n, len(items)))


def run_preferences(ctx: SuiteContext) -> dict:
    from pathlib import Path

    from character.evaluation import data, preferences
    from character.evaluation.judges import reliability

    cfg, marked_choice = ctx.cfg, ctx.marked_choice
    judge = ctx.embedding_judge() if cfg.judge == "embedding" else ctx.llm_judge()
    vocab = list(data.traits())
    template = data.preference_templates()["conditions"][cfg.condition]
    section = preferences.run(ctx.engines, ctx.systems, judge, vocab=vocab, prompts=ctx.prompts,
                              condition=cfg.condition, template=template, comparisons=cfg.comparisons,
                              seed=cfg.seed, sampling=ctx.sampling, n_boot=cfg.bootstrap, l2=cfg.bt_l2,
                              marked=marked_choice["traits"] if marked_choice else [], num_traits=cfg.num_traits,
                              n_perm=cfg.permutations)
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
    if ctx.control is not None:
        section["control"] = {"path": str(Path(cfg.control).resolve()),
                              **preferences.compare_to_control(section, ctx.control, n_boot=max(cfg.bootstrap, 500),
                                                               seed=cfg.seed, l2=cfg.bt_l2, n_perm=cfg.permutations)}
    return section


def run_robustness(ctx: SuiteContext) -> dict:
    """Robustness (adversarial suffixes) and prefill share one persona classifier and one section."""
    import dataclasses

    from character import constitution as C
    from character.evaluation import data, robustness

    cfg, const, systems = ctx.cfg, ctx.constitution, ctx.systems
    base = systems[0].model
    names = cfg.personas or C.available()
    personas = {n: C.load(n) for n in names}
    if const is not None and const.name not in personas:
        personas[const.name] = const
    if len(personas) < 2:
        raise CharacterError("robustness: the classifier needs at least two personas; list more with --personas")
    settings = data.robustness_settings()
    suffixes = [s for s in settings["suffixes"] if not cfg.suffixes or s["id"] in cfg.suffixes]
    train, test = robustness.split_prompts(ctx.prompts, cfg.classifier_prompts, cfg.robustness_prompts, cfg.seed)
    clf, n_train, train_acc = robustness.train_classifier(ctx.engines, base, personas, train, ctx.sampling,
                                                          ctx.embedding_judge().encode, cfg.classifier_features,
                                                          cfg.persona_prompt)
    # every system but the reference is a trained one (adapter, merged adapter, or the merged --model against a
    # --baseline): it should show the constitution's persona
    trained = [dataclasses.replace(s, label=const.name if const else None) for s in systems[1:]]  # keeps steering
    adapters = [s for s in trained if s.label]
    section = robustness.run(ctx.engines, clf, base=base, personas=personas, adapters=adapters, test_prompts=test,
                             suffixes=suffixes, sampling=ctx.sampling, do_robustness="robustness" in ctx.suites,
                             do_prefill="prefill" in ctx.suites,
                             followup=settings.get("prefill_followup", "Keep going."),
                             style=cfg.persona_prompt, n_boot=cfg.bootstrap, seed=cfg.seed)
    section["classifier"] = {"train_answers": n_train, "train_accuracy": train_acc, "features": cfg.classifier_features,
                             "persona_prompt": cfg.persona_prompt,
                             "embedding_model": cfg.embedding_model if "minilm" in cfg.classifier_features else None}
    return section


def run_coherence(ctx: SuiteContext) -> dict:
    from character.evaluation import coherence

    if len(ctx.systems) < 2:
        raise CharacterError("coherence compares systems: give --adapter (or --baseline)")
    prompts = _sample(ctx.prompts, ctx.cfg.coherence_prompts, ctx.cfg.seed + 1)
    return coherence.run(ctx.engines, ctx.systems, ctx.llm_judge(), prompts, ctx.sampling)


def run_capability(ctx: SuiteContext) -> dict:
    from character.evaluation import capability, data

    cfg = ctx.cfg
    qs = data.capability_questions()
    if cfg.capability_questions:
        qs = qs[:cfg.capability_questions]
    section = capability.run(ctx.engines, ctx.systems, qs, cfg.seed)
    if cfg.harness_tasks:
        ctx.engines.close()  # lm-eval loads the models itself
        section["harness"] = capability.run_harness(ctx.systems, cfg.harness_tasks, cfg.harness_limit or None)
    return section


def check_harness(cfg) -> None:
    import importlib.util

    if cfg.harness_tasks and importlib.util.find_spec("lm_eval") is None:
        raise CharacterError("harness_tasks: lm-evaluation-harness is not installed; `pip install lm-eval` "
                             "or leave --harness_tasks empty")


SUITES: dict[str, Suite] = {
    "preferences": Suite(run_preferences, "revealed trait preferences (Bradley-Terry shifts)",
                         report=R.preferences_section, plots=R.preferences_plots),
    "robustness": Suite(run_robustness, "adversarial suffixes against a persona classifier", section="robustness",
                        needs_constitution=True, report=R.robustness_section, plots=R.robustness_plots),
    "prefill": Suite(run_robustness, "continuing a base model's answer", section="robustness",
                     needs_constitution=True, report=R.robustness_section, plots=R.robustness_plots),
    "coherence": Suite(run_coherence, "pairwise LLM judge of answer quality", report=R.coherence_section),
    "capability": Suite(run_capability, "multiple-choice questions by log-likelihood", check=check_harness,
                        report=R.capability_section, plots=R.capability_plots),
    "harm": Suite(H.run, "persona harm: toxicity, agreement, regard, Harmful Difference Score", check=H.check,
                  report=H.report_section, plots=H.plots),
    "personagym": Suite(PG.run, "PersonaGym: five persona tasks scored 1-5 by rubric judges (PersonaScore)",
                        check=PG.check, report=PG.report_section, plots=PG.plots, needs_persona=True),
    "role-id": Suite(RI.run_suite, RI.HELP, needs_constitution=True, check=RI.check, report=RI.report_section,
                     plots=RI.plots),
    "reasoning": Suite(RS.run_suite, RS.HELP, check=RS.check_config, report=RS.report_section, plots=RS.plots),
    "apc": Suite(APC.run, "APC global faithfulness to the persona statements (Peng & Shang 2024)", check=APC.check,
                 report=APC.report, plots=APC.plots, needs_persona=True),
    "steering": Suite(ST.run, "with --steer: prompted vs steered vs trained per suite, and persona projections",
                      section="steering", report=ST.report_section),
}
CHOICES = (*SUITES, "all")


def _items(cfg) -> list[str]:
    return [cfg.data] if isinstance(cfg.data, str) else list(cfg.data or [])


def names_of(choice: str) -> list[str]:
    """The suite names in a SUITE argument: one name, several comma-separated, or `all`."""
    return [n.strip() for n in str(choice).split(",") if n.strip()]


def choice_problems(choice: str) -> list[str]:
    """Names in a SUITE argument that are no suite (`all` only alone)."""
    names = names_of(choice)
    if not names:
        return [f"'suite': give one of {', '.join(CHOICES)}, or several comma-separated"]
    if "all" in names and len(names) > 1:
        return ["'suite': all runs every suite; give it alone"]
    return [f"'suite' {n}: must be one of {', '.join(CHOICES)}{suggest(n, CHOICES)}" for n in names
            if n not in CHOICES]


def _data(cfg) -> dict[str, str]:
    out = {}
    for item in _items(cfg):
        name, eq, path = str(item).partition("=")
        if eq and name in SUITES:
            out[name] = path
        else:  # a bare path: the one suite that runs
            out[names_of(cfg.suite)[0]] = str(item)
    return out


def data_problems(cfg) -> list[str]:
    """--data items that reach no suite: a bare path under `all`, or SUITE=PATH naming no suite."""
    problems = []
    for item in _items(cfg):
        name, eq, _ = str(item).partition("=")
        if eq and name not in SUITES and not name.startswith(("/", ".", "~")):
            problems.append(f"'data' {item}: no suite is called '{name}'{suggest(name, SUITES)}")
        elif not (eq and name in SUITES) and (cfg.suite == "all" or len(names_of(cfg.suite)) > 1):
            problems.append(f"'data' {item}: with suite {cfg.suite}, say which suite reads it (--data SUITE=PATH)")
    return problems


def suite_data(cfg, name: str) -> str | None:
    """The official data file or directory given to suite `name` (--data NAME=PATH, or PATH when only it runs)."""
    return _data(cfg).get(name)


def others_options(cfg, names: list[str]) -> tuple[str, ...]:
    """The options of suites not in `names` (a suite's own options are named after it: `harm_prompts`,
    `roleid_threshold`). They cannot change this run's results, so the config hash leaves them out: adding a suite,
    or changing another suite's options, does not redo a finished evaluation."""
    import dataclasses

    others = tuple(n.replace("-", "") + "_" for n in SUITES if n not in names)
    return tuple(f.name for f in dataclasses.fields(cfg) if f.name.startswith(others))


def section_of(name: str) -> str:
    return SUITES[name].section or name


def selected(choice: str, cfg=None) -> list[str]:
    """The suites that `character eval CHOICE` runs, in registry order: one, several comma-separated (their
    sections in one report), or `all`. `all` without a persona (no --constitution, no --data for the suite) leaves
    out the suites that measure one, and says so."""
    if choice != "all":
        chosen = set(names_of(choice))
        return [n for n in SUITES if n in chosen]
    names = list(SUITES)
    if cfg is not None and not getattr(cfg, "constitution", None):
        skipped = [n for n in names if SUITES[n].needs_persona and suite_data(cfg, n) is None]
        if skipped:
            import sys

            print(f"eval all: {', '.join(skipped)} left out: they measure a persona; give --constitution",
                  file=sys.stderr)
        names = [n for n in names if n not in skipped]
    return names


def sections(names: list[str]) -> dict[str, Suite]:
    """Each results section the named suites write, once, in registry order, with the suite that writes it."""
    out: dict[str, Suite] = {}
    for name in SUITES:
        if name in names:
            out.setdefault(section_of(name), SUITES[name])
    return out
