"""Steered systems in `character eval`, and the section that sets them beside the prompted and trained ones.

    character eval all --model smollm2-135m --adapter runs/demo/poeticism/merge --constitution poeticism \\
        --steer runs/steer/poeticism            # at the strength its sweep chose; DIR@6 for another

`--steer DIR[@STRENGTH]` (repeatable) adds to the systems, after the adapters:
- `persona-prompted`: the base with the persona's system prompt (evaluation/robustness.py `persona_prompt`);
- `steered@S` per vector: the base with the vector added to its chosen layer at strength S (generated on the
  transformers engine with hooks: systems.Engines).
Every suite then evaluates them like any other system: preferences, robustness, prefill, coherence (and the
others). The `steering` section, run last, reads the suites' results and gives the paper's comparison in one
table, prompted vs steered vs trained, per suite (each figure against the base, with its interval), and the
monitoring projections of every system on each vector (project.py) on held-out evaluation prompts.
"""

from __future__ import annotations

from pathlib import Path

from character.errors import CharacterError

PROJECTION_PROMPTS = 24  # held-out prompts every system answers for the projection table
PROMPTED = "persona-prompted"


def active(cfg) -> list:
    """The Steering of each --steer spec, less those of a pipeline steer stage that was left off."""
    from character.steer.vectors import open_dir

    return [s for s in (open_dir(spec) for spec in cfg.steer) if s is not None]


def suites_for(cfg, suites: list[str]) -> list[str]:
    """The suites to run: `steering` joins when a vector is given and leaves `all` when none is."""
    from character.evaluation.suites import names_of

    steering = bool(cfg.steer) and bool(active(cfg))
    rest = [s for s in suites if s != "steering"]
    if "steering" in names_of(cfg.suite) and not steering:  # asked for by name, not as part of `all`
        raise CharacterError("steering: give --steer DIR (a `character steer build` directory)")
    return rest + ["steering"] if steering else rest


def systems(cfg, base: str, taken: set[str]) -> list:
    """The persona-prompted base and one steered base per --steer spec (none when every spec is a stage left off)."""
    from character import constitution as C
    from character.evaluation.robustness import persona_prompt
    from character.evaluation.systems import System
    from character.identity import identity

    found = active(cfg)
    if not found:
        return []
    if cfg.backend == "openai":
        raise CharacterError("--steer needs the model's weights: use --backend hf or vllm (steered systems run on "
                             "transformers either way)")
    if not cfg.constitution:
        raise CharacterError(f"--steer: give --constitution {found[0].constitution} (the vector's persona), so the "
                             "persona-prompted system and the marked traits are that persona's")
    const = C.load(cfg.constitution)
    out = [System(PROMPTED, base, system_prompt=persona_prompt(const, cfg.persona_prompt))]
    base_id = identity(base)
    for st in found:
        if st.constitution != const.name:
            raise CharacterError(f"--steer '{st.path}' is a '{st.constitution}' vector but --constitution is "
                                 f"'{const.name}'; evaluate one persona at a time")
        if st.model and st.model != base_id:
            raise CharacterError(f"--steer '{st.path}' was built on another model than {base}; give the --model "
                                 "it was built on")
        name = f"steered@{st.strength:g}"
        if name in taken or any(s.name == name for s in out):
            name = f"steered:{Path(st.path).name}@{st.strength:g}"
        out.append(System(name, base, steer=st))
    return out


def inputs(systems: list) -> dict[str, str]:
    """What decides a steered system's answers, for the eval manifest's inputs."""
    from character.identity import identity

    return {s.name: f"{identity(s.steer.path)}|{s.steer.method}|{s.steer.layer}|{s.steer.strength!r}"
            for s in systems if s.steer is not None}


def kind(system) -> str:
    return "steered" if system.steer is not None else "prompted" if system.system_prompt else "trained"


def run(ctx) -> dict:
    """The steering section: the vectors, the three-way comparison from the other sections, the projections."""
    steered = [s for s in ctx.systems if s.steer is not None]
    vectors = {s.name: {"path": s.steer.path, "constitution": s.steer.constitution, "method": s.steer.method,
                        "layer": s.steer.layer, "strength": s.steer.strength, "chosen": _chosen(s.steer.path)}
               for s in steered}
    section = {"reference": ctx.systems[0].name, "vectors": vectors,
               "kinds": {s.name: kind(s) for s in ctx.systems[1:]}}
    section["projection"] = _projection(ctx, steered)
    section["comparison"] = comparison(ctx.results, section)
    return section


def _chosen(path: str) -> dict:
    from character.artifacts import read_manifest

    return (read_manifest(path) or {}).get("chosen", {})


def _projection(ctx, steered: list) -> dict:
    import random

    from character.steer.project import projections, scale_of, summarize

    prompts = random.Random(ctx.cfg.seed + 3).sample(ctx.prompts, min(PROJECTION_PROMPTS, len(ctx.prompts)))
    items = [(s, s.request(p)) for s in ctx.systems for p in prompts]
    texts = ctx.engines.generate(items, ctx.sampling, label="projection")
    n = len(prompts)
    answers = {s.name: texts[k * n:(k + 1) * n] for k, s in enumerate(ctx.systems)}
    vectors: dict = {}  # one projection per distinct vector and layer (several strengths share one)
    for s in steered:
        vectors.setdefault(f"{Path(s.steer.path).name}:{s.steer.method}:{s.steer.layer}", s.steer)
    out = {}
    for key, steering in vectors.items():
        answer: dict = {}
        for model in dict.fromkeys(s.model for s in ctx.systems):
            group = [s for s in ctx.systems if s.model == model]
            a, _ = projections(ctx.engines.hf(model), group, prompts, answers, steering, steering.layer,
                               ctx.cfg.batch_size)
            answer.update(a)
        out[key] = {"path": steering.path, "method": steering.method, "layer": steering.layer, "prompts": n,
                    "systems": summarize(answer, scale_of(steering, steering.layer), ctx.systems[0].name,
                                         ctx.cfg.bootstrap, ctx.cfg.seed)}
    return out


def comparison(results: dict, section: dict) -> dict:
    """{suite: {system: {value, ci95, what}}}: each non-reference system's figure against the reference, for the
    suites present (preferences: marked mean shift; robustness: persona rate minus base over all suffixes;
    prefill: the same after the base's first answer; coherence: win rate; capability: accuracy delta;
    projection: relative projection minus the base's)."""
    out: dict = {}
    names = list(section["kinds"])
    pref = results.get("preferences") or {}
    rob = results.get("robustness") or {}
    for name in names:
        cm = ((pref.get("shifts") or {}).get(name) or {}).get("constitution_mean_shift")
        if cm:
            out.setdefault("preferences", {})[name] = {"value": cm["shift"], "ci95": cm["ci95"]}
        r = _robustness_row(rob.get("robustness"), name)
        if r:
            out.setdefault("robustness", {})[name] = {"value": r["minus_base"], "ci95": r["ci95"]}
        p = (((rob.get("prefill") or {}).get("adapters") or {}).get(name) or {}).get("prefill")
        if p:
            out.setdefault("prefill", {})[name] = {"value": p["minus_base"], "ci95": p["ci95"]}
        c = ((results.get("coherence") or {}).get("pairs") or {}).get(name)
        if c and c.get("win_rate") is not None:
            out.setdefault("coherence", {})[name] = {"value": c["win_rate"], "ci95": c["ci95"]}
        cap = (((results.get("capability") or {}).get("systems") or {}).get(name) or {}).get("delta_vs_reference")
        if cap:
            out.setdefault("capability", {})[name] = {"value": cap["delta"], "ci95": cap["ci95"]}
        for proj in section.get("projection", {}).values():
            row = proj["systems"].get(name)
            if row and "minus_reference" in row:
                out.setdefault("projection", {})[name] = {"value": row["minus_reference"],
                                                          "ci95": row["minus_reference_ci95"]}
                break
    return out


def _robustness_row(table: dict | None, name: str) -> dict | None:
    """A system's persona rate minus the base's, pooled over all suffixes (or its one suffix, or plain)."""
    if not table:
        return None
    pooled = (table.get("all_suffixes") or {}).get(name)
    if pooled:
        return pooled
    rows = (table.get("adapters") or {}).get(name) or {}
    return next((rows[v] for v in reversed(list(rows)) if v != "plain"), rows.get("plain"))


WHAT = {"preferences": "marked traits' mean shift", "robustness": "persona rate minus base, all suffixes",
        "prefill": "persona rate minus base after a prefill", "coherence": "win rate vs base (0.5 = tie)",
        "capability": "accuracy minus base", "projection": "projection minus base (relative scale)"}


def report_section(sec: dict, results: dict) -> list[str]:
    L = ["", "## Steering: prompted vs steered vs trained", ""]
    for name, v in sec["vectors"].items():
        c = v.get("chosen") or {}
        how = "chosen by its sweep" if c and c.get("strength") == v["strength"] else "given"
        L.append(f"`{name}`: the `{v['constitution']}` vector of `{v['path']}` ({v['method']}), added to layer "
                 f"{v['layer']} at strength {v['strength']:g} ({how}" +
                 ("" if c.get("coherent", True) else "; no swept strength kept its answers coherent") + ").")
    cols = [k for k in WHAT if k in sec["comparison"]]
    if cols:
        inconclusive = {k for k in cols if (results.get("robustness" if k == "prefill" else k) or {})
                        .get("inconclusive")}
        L += ["", f"Each figure against `{sec['reference']}` with its 95% interval; (i) = that section is "
              "inconclusive (see its warning above). " + "; ".join(f"{k}: {WHAT[k]}" for k in cols) + ".", "",
              "| system | kind | " + " | ".join(c + (" (i)" if c in inconclusive else "") for c in cols) + " |",
              "|---|---|" + "---|" * len(cols)]
        for name, k in sec["kinds"].items():
            cells = []
            for c in cols:
                v = sec["comparison"][c].get(name)
                cells.append(f"{v['value']:+.2f} [{v['ci95'][0]:+.2f}, {v['ci95'][1]:+.2f}]" if v else "n/a")
            L.append(f"| {name} | {k} | " + " | ".join(cells) + " |")
    for key, proj in sec.get("projection", {}).items():
        L += ["", f"Monitoring: mean projection on `{key}` over {proj['prompts']} held-out prompts, each system "
              "reading its own answers (0 = the build's plain answers, 1 = its persona-prompted ones; a steered "
              "system is read with its vector in, which adds its strength):", "",
              "| system | projection | 95% CI | minus base | 95% CI |", "|---|---:|---|---:|---|"]
        for name, r in proj["systems"].items():
            diff = (f"{r['minus_reference']:+.2f} | [{r['minus_reference_ci95'][0]:+.2f}, "
                    f"{r['minus_reference_ci95'][1]:+.2f}]") if "minus_reference" in r else "(reference) |"
            L.append(f"| {name} | {r['relative']:+.2f} | [{r['relative_ci95'][0]:+.2f}, "
                     f"{r['relative_ci95'][1]:+.2f}] | {diff} |")
    return L

