"""report.md (what a person reads first) and the PNG plots, both built from results.json alone."""

from __future__ import annotations

from pathlib import Path

from character.artifacts import atomic_write_text


def _f(x, nd: int = 2) -> str:
    return "n/a" if x is None else f"{x:+.{nd}f}" if isinstance(x, float) and nd < 0 else f"{x:.{nd}f}"


def _ci(ci, nd: int = 2) -> str:
    return f"[{ci[0]:.{nd}f}, {ci[1]:.{nd}f}]"


def plots(results: dict, out: Path) -> list[str]:
    """Write each section's plots (the suite registry says which function draws them); returns the file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from character.evaluation.suites import SUITES

    names: list[str] = []
    for key, suite in _present(results, SUITES).items():
        if suite.plots is not None:
            names += suite.plots(results[key], out, plt)
    return names


def _present(results: dict, suites: dict) -> dict:
    """{results key: suite} for the sections results.json holds, in registry order."""
    out: dict = {}
    for name, suite in suites.items():
        key = suite.section or name
        if results.get(key):
            out.setdefault(key, suite)
    return out


def preferences_plots(pref: dict, out: Path, plt) -> list[str]:
    names = []
    for sys_name, sec in pref.get("shifts", {}).items():
        rows = sec["rows"]
        up = [r for r in rows if r["shift"] > 0][:10]
        down = [r for r in rows if r["shift"] < 0][-10:]
        show = up + down
        if not show:
            continue
        fig, ax = plt.subplots(figsize=(7, 0.32 * len(show) + 1.5))
        y = list(range(len(show)))[::-1]
        shift = [r["shift"] for r in show]
        err = [[r["shift"] - r["ci95"][0] for r in show], [r["ci95"][1] - r["shift"] for r in show]]
        colors = ["tab:red" if r["constitution"] else ("tab:blue" if r["shift"] > 0 else "tab:gray") for r in show]
        ax.barh(y, shift, xerr=err, color=colors, capsize=2)
        ax.set_yticks(y, [r["trait"] + (" *" if r["constitution"] else "") for r in show])
        ax.axvline(0, color="black", lw=0.8)
        ax.set_xlabel(f"Bradley-Terry strength shift vs {pref['reference']} (95% bootstrap CI)")
        ax.set_title(f"{sys_name}: largest trait shifts ({pref['condition']}); * = constitution trait")
        fig.tight_layout()
        name = f"preferences_shift_{_safe(sys_name)}.png"
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        names.append(name)
    return names


def robustness_plots(rob: dict, out: Path, plt) -> list[str]:
    return [_robustness_plot(rob, out, plt)] if rob.get("robustness") else []


def capability_plots(cap: dict, out: Path, plt) -> list[str]:
    systems = list(cap["systems"])
    readings = [("accuracy", "ci95", "acc (summed log-prob)", "tab:green")]
    if all("acc_norm" in cap["systems"][s] for s in systems):
        readings.append(("acc_norm", "acc_norm_ci95", "acc_norm (per byte)", "tab:olive"))
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(systems) * len(readings) + 1), 3.5))
    width = 0.8 / len(readings)
    for k, (key, ci_key, label, color) in enumerate(readings):
        acc = [cap["systems"][s][key] for s in systems]
        err = [[a - cap["systems"][s][ci_key][0] for a, s in zip(acc, systems)],
               [cap["systems"][s][ci_key][1] - a for a, s in zip(acc, systems)]]
        ax.bar([i + k * width for i in range(len(systems))], acc, width, yerr=err, capsize=3, color=color,
               label=label)
    ax.set_xticks([i + width * (len(readings) - 1) / 2 for i in range(len(systems))], systems)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy (95% CI)")
    ax.set_title(f"Capability: {cap['questions']} multiple-choice questions")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "capability.png", dpi=110)
    plt.close(fig)
    return ["capability.png"]


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _first_lines(results: dict) -> list[str]:
    """What decides whether the numbers below can be trusted, before the numbers: is the judge better than chance,
    were the evaluation prompts trained on, did the teacher play the persona, what does a control run show."""
    L = []
    pref = results.get("preferences") or {}
    rel = pref.get("judge_reliability")
    if pref.get("inconclusive") and rel:
        L.append(f"**Inconclusive: the judge's accuracy on the labelled set, {rel['accuracy']:.2f} "
                 f"{_ci(rel['ci95'])}, does not exclude chance (0.50), so the preference shifts below cannot be told "
                 "from judge noise.** Use a stronger judge (`--judge llm --judge_model ...`).")
    from character.evaluation.suites import SUITES

    for key in _present(results, SUITES):  # every suite that cannot tell its result from noise says so here
        sec = results[key]
        if key != "preferences" and isinstance(sec, dict) and sec.get("inconclusive"):
            L.append(f"**Inconclusive ({key}): {sec.get('inconclusive_reason', 'see the section below')}**")
    con = results.get("contamination")
    if con:
        if con.get("checked"):
            L.append(f"Contamination: {con['overlap']} of the {con['eval_prompts']} evaluation prompts were in the "
                     f"training data ({con['training_prompts']} distinct training prompts, traced through the "
                     "stage manifests).")
        else:
            why = "; ".join(f"`{k}`: {v.get('reason', 'not traced')}" for k, v in con.get("systems", {}).items()
                            if not v.get("checked")) or con.get("reason", "")
            L.append(f"Contamination: not checked ({why}); the evaluation prompts may have been trained on.")
    for name, sep in (results.get("teacher_separation") or {}).get("systems", {}).items():
        if not sep.get("checked"):
            L.append(f"Teacher separation (`{name}`): not measured ({sep.get('reason', '')}).")
            continue
        c = sep["classifier"]
        warn = (" **Near chance: the teacher barely plays this persona, so there is little to distil.**"
                if sep.get("near_chance") else "")
        L.append(f"Teacher separation (`{name}`, {sep['pairs']} DPO pairs): a held-out classifier tells chosen from "
                 f"rejected answers with accuracy {c['accuracy']:.2f} {_ci(c['ci95'])} (chance 0.50).{warn}")
    ctl = pref.get("control")
    if ctl:
        p = f", permutation p = {ctl['p_value']:.3f}" if ctl.get("p_value") is not None else ""
        L.append(f"Against the control run ({ctl['path']}): marked mean shift {ctl['shift']:+.2f} here, "
                 f"{ctl['control_shift']:+.2f} in the control; difference **{ctl['difference']:+.2f}** "
                 f"{_ci(ctl['ci95'])} ({'paired' if ctl['paired'] else 'independent'} bootstrap{p}).")
    return L + [""] if L else []


def write(results: dict, path: Path) -> None:
    L = [f"# Evaluation: {results['suite']}", ""]
    L.append("Systems: " + ", ".join(f"`{s['name']}`" + (f" (adapter {s['adapter']})" if s["adapter"] else
                                                        f" ({s['model']})") for s in results["systems"]))
    serving = {"multi": "all served by one engine (multi-LoRA)",
               "merged": "each adapter merged into a full checkpoint with its own engine"}.get(results.get("lora_serving"))
    if serving:
        L.append(f"Adapters: {serving}.")
    L += [f"Seed {results['seed']}, config hash `{results['config_hash']}`. Full numbers: results.json.", ""]
    L += _first_lines(results)

    from character.evaluation.suites import SUITES

    for key, suite in _present(results, SUITES).items():
        if suite.report is not None:
            L += suite.report(results[key], results)
    atomic_write_text(path, "\n".join(L) + "\n")


def preferences_section(pref: dict, results: dict) -> list[str]:
    L = []
    L += ["## Revealed preferences", "",
          f"Condition `{pref['condition']}`, {pref['comparisons']} comparisons per system "
          f"({pref['undecided']} undecided), {pref['traits_in_play']} traits in play, judge "
          f"`{pref['judge']['kind']}`" + (f" ({pref['judge']['mode']})" if pref['judge']['mode'] else "") + "."]
    rel = pref.get("judge_reliability")
    if rel:
        L.append(f"Judge reliability on the labelled set: accuracy {rel['accuracy']:.2f} "
                 f"{_ci(rel['ci95'])} over {rel['cases']} cases (chance 0.50).")
        bins = rel.get("by_margin") or []
        if bins:
            L += ["", "Judge accuracy by verdict margin (|margin| quartiles on the labelled set): "
                  + "; ".join(f"[{b['lo']:.3g}, {b['hi']:.3g}] {b['accuracy']:.2f} {_ci(b['ci95'])} "
                              f"(n={b['cases']})" for b in bins) + "."]
    L.append("Strengths are Bradley-Terry log-strengths (mean 0); shift = system minus "
             f"`{pref['reference']}`, with a paired-bootstrap 95% interval; * marks the constitution's traits"
             + (f" (from {pref['marked_from']})." if pref.get("marked_from") else "."))
    if pref.get("significance"):
        L.append(f"(sig.) = {pref['significance']}; p = the permutation p-value before adjustment.")
    conf = pref.get("confident_only")
    for name, sec in pref["shifts"].items():
        L += ["", f"### {name} vs {pref['reference']}", ""]
        cm = sec.get("constitution_mean_shift")
        if cm:
            p = f", paired permutation p = {cm['p_value']:.3f}" if cm.get("p_value") is not None else ""
            L.append(f"Mean shift of the constitution's traits: **{cm['shift']:+.2f}** {_ci(cm['ci95'])}{p}.")
        if sec.get("unmarked_mean_abs_shift") is not None:
            L.append(f"Background movement (mean |shift| of the unmarked traits in play): "
                     f"{sec['unmarked_mean_abs_shift']:.2f}.")
        cc = (conf or {}).get("constitution_mean_shift", {}).get(name)
        if cc:
            L.append(f"Sensitivity, confident verdicts only ({conf['rule']}, cut {conf['margin_cut']:.3g}; "
                     f"{conf['verdicts'][name]} of {pref['comparisons']} verdicts): {cc['shift']:+.2f} "
                     f"{_ci(cc['ci95'])}.")
        L.append(f"Rank correlation of strengths with the reference (Spearman): "
                 f"{_f(sec['spearman_vs_reference'])} (Elo: {_f(sec['elo_spearman_vs_reference'])}).")
        L += ["", "| trait | reference | system | shift | 95% CI | p | Elo shift | matches |",
              "|---|---:|---:|---:|---|---:|---:|---:|"]
        rows = sec["rows"]
        pick = rows[:10] + [r for r in rows[10:-10] if r["constitution"]] + rows[max(10, len(rows) - 10):]
        for r in pick:
            star = " *" if r["constitution"] else ""
            sig = " (sig.)" if r.get("significant") else ""
            pv = f"{r['p_value']:.3f}" if r.get("p_value") is not None else "n/a"
            L.append(f"| {r['trait']}{star} | {r['reference']:+.2f} | {r['system']:+.2f} | "
                     f"**{r['shift']:+.2f}**{sig} | {_ci(r['ci95'])} | {pv} | {r['elo_shift']:+.0f} | "
                     f"{r['matches']} |")
        plot = f"preferences_shift_{_safe(name)}.png"
        if plot in results.get("plots", []):
            L += ["", f"![shifts]({plot})"]
    spread = {k: v["elo_order_sd"] for k, v in pref["strengths"].items()}
    L += ["", "Online Elo (the original's method) depends on the order of the matches: re-playing the same "
          "matches in random orders moves a trait's Elo by " +
          ", ".join(f"{v:.1f} points (`{k}`)" for k, v in spread.items()) + " on average (SD)."]
    return L


def coherence_section(coh: dict, results: dict) -> list[str]:
    L = []
    L += ["", "## Coherence", "", f"{coh['prompts']} prompts, LLM judge in both orders; only consistent "
          f"verdicts count. Win rate of each system against `{coh['reference']}`:", "",
          "| system | win rate | 95% CI | consistent verdicts |", "|---|---:|---|---:|"]
    for name, p in coh["pairs"].items():
        L.append(f"| {name} | {_f(p['win_rate'])} | {_ci(p['ci95'])} | {p['consistent']} "
                 f"({p['consistency_rate']:.0%}) |")
    return L


def capability_section(cap: dict, results: dict) -> list[str]:
    L = []
    L += ["", "## Capability retention", "", f"{cap['questions']} multiple-choice questions scored by "
          "log-likelihood: acc takes the option with the highest summed log-probability (which favours short "
          "options), acc_norm the highest per UTF-8 byte of the option.", "",
          "| system | acc | 95% CI | delta vs reference | 95% CI "
          "| acc_norm | 95% CI | delta vs reference | 95% CI |",
          "|---|---:|---|---:|---|---:|---|---:|---|"]
    for name, s in cap["systems"].items():
        cells = [_capability_cells(s["accuracy"], s["ci95"], s.get("delta_vs_reference"))]
        if "acc_norm" in s:
            cells.append(_capability_cells(s["acc_norm"], s["acc_norm_ci95"], s.get("acc_norm_delta_vs_reference")))
        else:
            cells.append("n/a | | | |")
        L.append(f"| {name} | " + " | ".join(cells) + " |")
    if cap.get("harness"):
        L += ["", "lm-evaluation-harness: see results.json `capability.harness`."]
    if "capability.png" in results.get("plots", []):
        L += ["", "![capability](capability.png)"]
    return L


def _capability_cells(acc: float, ci, delta: dict | None) -> str:
    """`acc | ci | delta | ci` cells of the capability table; the reference has no delta."""
    tail = f"{delta['delta']:+.3f} | {_ci(delta['ci95'], 3)}" if delta else "(reference) |"
    return f"{acc:.3f} | {_ci(ci)} | {tail}"


def _robustness_plot(rob: dict, out: Path, plt) -> str:
    """Left: the prompted personas' accuracy per variant against chance. Right (with adapters): each adapter's rate
    of its persona's label minus the base's, per variant, with its paired 95% interval."""
    t, check = rob["robustness"], rob["classifier_check"]
    variants = list(t["prompted"])
    adapters = list(t["adapters"])
    fig, axes = plt.subplots(1, 2 if adapters else 1, figsize=(12 if adapters else 6.5, 4.2), squeeze=False)
    ax = axes[0][0]
    ax.bar(range(len(variants)), [t["prompted"][v]["accuracy"] for v in variants], color="tab:blue")
    ax.axhline(check["chance"], color="black", ls="--", lw=0.8, label=f"chance ({check['chance']:.2f})")
    ax.set_xticks(range(len(variants)), variants, rotation=45, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("system-prompted answers classified as their persona")
    ax.legend(fontsize=8)
    if adapters:
        ax = axes[0][1]
        width = 0.8 / len(adapters)
        for k, a in enumerate(adapters):
            rows = [t["adapters"][a][v] for v in variants]
            shift = [r["minus_base"] for r in rows]
            err = [[r["minus_base"] - r["ci95"][0] for r in rows], [r["ci95"][1] - r["minus_base"] for r in rows]]
            ax.bar([i + k * width for i in range(len(variants))], shift, width, yerr=err, capsize=2,
                   label=f"{a} ({rows[0]['persona']})")
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks([i + width * (len(adapters) - 1) / 2 for i in range(len(variants))], variants, rotation=45,
                      ha="right")
        ax.set_ylabel("rate of its persona's label minus the base's (95% CI)")
        ax.legend(fontsize=8)
    verdict = "INCONCLUSIVE: classifier near chance" if check["inconclusive"] else "classifier check passed"
    fig.suptitle(f"Robustness to adversarial suffixes (held-out classifier accuracy {check['accuracy']:.2f}, "
                 f"{verdict})", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "robustness_accuracy.png", dpi=110)
    plt.close(fig)
    return "robustness_accuracy.png"


def robustness_section(rob: dict, results: dict) -> list[str]:
    check, clf = rob["classifier_check"], rob["classifier"]
    L = ["", "## Robustness", ""]
    if check["inconclusive"]:
        L += [f"**Inconclusive: {rob['inconclusive_reason']}**", ""]
    L += [f"Classifier check, held out: accuracy **{check['accuracy']:.2f}** {_ci(check['ci95'])} on the "
          f"{check['n']} plain answers of its {len(rob['classifier_labels'])} classes to {rob['test_prompts']} "
          f"held-out prompts (chance {check['chance']:.2f}; conclusive only when the 95% lower bound exceeds "
          f"{check['bar']:.2f}: twice chance, or halfway from chance to 1 if that is lower), macro-F1 "
          f"{_f(check['macro_f1'])}.", "",
          "Held-out recall per class (a class is distinguishable when its lower bound exceeds the same bar; "
          "- marks one that is not): " + ", ".join(
              f"{c} {r['recall']:.2f} {_ci(r['ci95'])}" + ("" if r["distinguishable"] else " -")
              for c, r in check["per_class"].items()) + ".", "",
          f"Classifier: {clf.get('features', 'minilm')} features + logistic regression, personas played through "
          f"their {clf.get('persona_prompt', 'traits')} as system prompt, trained on {clf['train_answers']} answers "
          f"(in-sample accuracy {clf['train_accuracy']:.2f})."]
    for part, title in (("robustness", "Adversarial suffixes"), ("prefill", "Prefill attack")):
        if rob.get(part):
            L += _robustness_part(rob[part], check, title)
            if part == "prefill":
                L.append(f"The base's first answers are classified `default` in "
                         f"{rob[part]['first_answer_classified_default']:.0%} of cases.")
    if "robustness_accuracy.png" in results.get("plots", []):
        L += ["", "![robustness](robustness_accuracy.png)"]
    return L


def _robustness_part(t: dict, check: dict, title: str) -> list[str]:
    """One part's tables: each adapter's persona rate minus the base's per variant, then the base's label rates."""
    L = ["", f"### {title}", ""]
    variants = list(t["prompted"])
    for a, rows in t["adapters"].items():
        persona = next(iter(rows.values()))["persona"]
        recall = check["per_class"].get(persona)
        L.append(f"`{a}`: rate at which its answers are classified `{persona}`, minus the base's rate on the same "
                 "prompts (paired bootstrap over prompts, 95% interval)." +
                 ("" if recall and recall["distinguishable"] else
                  f" **The classifier does not recognise `{persona}` on held-out answers: these rates cannot show "
                  "the persona.**"))
        L += ["", f"| variant | {a} | base | minus base | 95% CI | prompted personas' accuracy |",
              "|---|---:|---:|---:|---|---:|"]
        for v in variants:
            r = rows[v]
            L.append(f"| {v} | {r['rate']:.2f} | {r['base_rate']:.2f} | **{r['minus_base']:+.2f}** | "
                     f"{_ci(r['ci95'])} | {t['prompted'][v]['accuracy']:.2f} |")
        pooled = (t.get("all_suffixes") or {}).get(a)
        if pooled:
            L.append(f"| all suffixes | {pooled['rate']:.2f} | {pooled['base_rate']:.2f} | "
                     f"**{pooled['minus_base']:+.2f}** | {_ci(pooled['ci95'])} | |")
        L.append("")
    labels = list(next(iter(t["base_label_rates"].values())))
    L += ["Labels the classifier gives the base's own answers (no system prompt), by variant:", "",
          "| variant | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    for v, rates in t["base_label_rates"].items():
        L.append(f"| {v} | " + " | ".join(f"{rates[lab]:.2f}" for lab in labels) + " |")
    if not t["adapters"]:
        L += ["", "Prompted personas' accuracy: " + ", ".join(f"{v} {t['prompted'][v]['accuracy']:.2f}"
                                                             for v in variants) + "."]
    return L
