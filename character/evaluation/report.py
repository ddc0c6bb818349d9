"""report.md (what a person reads first) and the PNG plots, both built from results.json alone."""

from __future__ import annotations

from pathlib import Path

from character.artifacts import atomic_write_text


def _f(x, nd: int = 2) -> str:
    return "n/a" if x is None else f"{x:+.{nd}f}" if isinstance(x, float) and nd < 0 else f"{x:.{nd}f}"


def _ci(ci, nd: int = 2) -> str:
    return f"[{ci[0]:.{nd}f}, {ci[1]:.{nd}f}]"


def plots(results: dict, out: Path) -> list[str]:
    """Write the plots; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    pref = results.get("preferences")
    for sys_name, sec in (pref or {}).get("shifts", {}).items():
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

    rob = (results.get("robustness") or {}).get("robustness")
    if rob:
        variants = list(rob["prompted"])
        series = {"system-prompted (all personas)": [rob["prompted"][v]["accuracy"] for v in variants]}
        for a, t in rob["adapters"].items():
            series[f"{a} ({next(iter(t.values()))['persona']})"] = [t[v]["accuracy"] for v in variants]
        fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(variants) + 2), 4))
        width = 0.8 / len(series)
        for k, (label, vals) in enumerate(series.items()):
            ax.bar([i + k * width for i in range(len(variants))], vals, width, label=label)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(variants))], variants, rotation=45, ha="right")
        ax.set_ylim(0, 1)
        ax.set_ylabel("classified as its persona")
        ax.set_title("Robustness to adversarial suffixes")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "robustness_accuracy.png", dpi=110)
        plt.close(fig)
        names.append("robustness_accuracy.png")

    cap = results.get("capability")
    if cap:
        systems = list(cap["systems"])
        acc = [cap["systems"][s]["accuracy"] for s in systems]
        err = [[a - cap["systems"][s]["ci95"][0] for a, s in zip(acc, systems)],
               [cap["systems"][s]["ci95"][1] - a for a, s in zip(acc, systems)]]
        fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(systems) + 1), 3.5))
        ax.bar(systems, acc, yerr=err, capsize=3, color="tab:green")
        ax.set_ylim(0, 1)
        ax.set_ylabel("accuracy (95% CI)")
        ax.set_title(f"Capability: {cap['questions']} multiple-choice questions")
        fig.tight_layout()
        fig.savefig(out / "capability.png", dpi=110)
        plt.close(fig)
        names.append("capability.png")
    return names


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def write(results: dict, path: Path) -> None:
    L = [f"# Evaluation: {results['suite']}", ""]
    L.append("Systems: " + ", ".join(f"`{s['name']}`" + (f" (adapter {s['adapter']})" if s["adapter"] else
                                                        f" ({s['model']})") for s in results["systems"]))
    serving = {"multi": "all served by one engine (multi-LoRA)",
               "merged": "each adapter merged into a full checkpoint with its own engine"}.get(results.get("lora_serving"))
    if serving:
        L.append(f"Adapters: {serving}.")
    L += [f"Seed {results['seed']}, config hash `{results['config_hash']}`. Full numbers: results.json.", ""]

    pref = results.get("preferences")
    if pref:
        L += ["## Revealed preferences", "",
              f"Condition `{pref['condition']}`, {pref['comparisons']} comparisons per system "
              f"({pref['undecided']} undecided), {pref['traits_in_play']} traits in play, judge "
              f"`{pref['judge']['kind']}`" + (f" ({pref['judge']['mode']})" if pref['judge']['mode'] else "") + "."]
        rel = pref.get("judge_reliability")
        if rel:
            L.append(f"Judge reliability on the labelled set: accuracy {rel['accuracy']:.2f} "
                     f"{_ci(rel['ci95'])} over {rel['cases']} cases (chance 0.50): trust differences accordingly.")
        L.append("Strengths are Bradley-Terry log-strengths (mean 0); shift = system minus "
                 f"`{pref['reference']}`, with a paired-bootstrap 95% interval; * marks the constitution's traits"
                 + (f" (from {pref['marked_from']})." if pref.get("marked_from") else "."))
        for name, sec in pref["shifts"].items():
            L += ["", f"### {name} vs {pref['reference']}", ""]
            cm = sec.get("constitution_mean_shift")
            if cm:
                L.append(f"Mean shift of the constitution's traits: **{cm['shift']:+.2f}** {_ci(cm['ci95'])}.")
            L.append(f"Rank correlation of strengths with the reference (Spearman): "
                     f"{_f(sec['spearman_vs_reference'])} (Elo: {_f(sec['elo_spearman_vs_reference'])}).")
            L += ["", "| trait | reference | system | shift | 95% CI | Elo shift | matches |",
                  "|---|---:|---:|---:|---|---:|---:|"]
            rows = sec["rows"]
            pick = rows[:10] + [r for r in rows[10:-10] if r["constitution"]] + rows[max(10, len(rows) - 10):]
            for r in pick:
                star = " *" if r["constitution"] else ""
                sig = " (sig.)" if r["significant"] else ""
                L.append(f"| {r['trait']}{star} | {r['reference']:+.2f} | {r['system']:+.2f} | "
                         f"**{r['shift']:+.2f}**{sig} | {_ci(r['ci95'])} | {r['elo_shift']:+.0f} | {r['matches']} |")
            plot = f"preferences_shift_{_safe(name)}.png"
            if plot in results.get("plots", []):
                L += ["", f"![shifts]({plot})"]
        spread = {k: v["elo_order_sd"] for k, v in pref["strengths"].items()}
        L += ["", "Online Elo (the original's method) depends on the order of the matches: re-playing the same "
              "matches in random orders moves a trait's Elo by " +
              ", ".join(f"{v:.1f} points (`{k}`)" for k, v in spread.items()) + " on average (SD)."]

    rob = results.get("robustness")
    if rob:
        clf = rob["classifier"]
        L += ["", "## Robustness", "",
              f"Persona classifier: {len(rob['classifier_labels'])} classes ({', '.join(rob['classifier_labels'])}), "
              f"trained on {clf['train_answers']} answers (training accuracy {clf['train_accuracy']:.2f}); "
              f"{rob['test_prompts']} held-out prompts per system and variant."]
        for part in ("robustness", "prefill"):
            t = rob.get(part)
            if not t:
                continue
            adapters = list(t["adapters"])
            L += ["", f"### {'Adversarial suffixes' if part == 'robustness' else 'Prefill attack'}", "",
                  "| variant | prompted acc | prompted macro-F1 | " + " | ".join(f"{a} acc | {a} macro-F1"
                                                                          for a in adapters) + " |",
                  "|---|---:|---:|" + "---:|---:|" * len(adapters)]
            for v, m in t["prompted"].items():
                cells = [f"{t['adapters'][a][v]['accuracy']:.2f} | {_f(t['adapters'][a][v]['macro_f1'])}"
                         for a in adapters]
                L.append(f"| {v} | {m['accuracy']:.2f} | {_f(m['macro_f1'])} | " + " | ".join(cells) + " |")
            first = next(iter(t["prompted"].values()))
            L += ["", "Per persona (system-prompted, accuracy " + ("plain" if part == "robustness" else "prefill") +
                  "): " + ", ".join(f"{p} {a:.2f}" for p, a in first["per_persona"].items())]
            if part == "prefill":
                L.append(f"The base's first answers are classified `default` in "
                         f"{t['first_answer_classified_default']:.0%} of cases.")
        if "robustness_accuracy.png" in results.get("plots", []):
            L += ["", "![robustness](robustness_accuracy.png)"]

    coh = results.get("coherence")
    if coh:
        L += ["", "## Coherence", "", f"{coh['prompts']} prompts, LLM judge in both orders; only consistent "
              f"verdicts count. Win rate of each system against `{coh['reference']}`:", "",
              "| system | win rate | 95% CI | consistent verdicts |", "|---|---:|---|---:|"]
        for name, p in coh["pairs"].items():
            L.append(f"| {name} | {_f(p['win_rate'])} | {_ci(p['ci95'])} | {p['consistent']} "
                     f"({p['consistency_rate']:.0%}) |")

    cap = results.get("capability")
    if cap:
        L += ["", "## Capability retention", "", f"{cap['questions']} multiple-choice questions scored by "
              "log-likelihood.", "", "| system | accuracy | 95% CI | delta vs reference | 95% CI |",
              "|---|---:|---|---:|---|"]
        for name, s in cap["systems"].items():
            d = s.get("delta_vs_reference")
            L.append(f"| {name} | {s['accuracy']:.3f} | {_ci(s['ci95'])} | "
                     + (f"{d['delta']:+.3f} | {_ci(d['ci95'], 3)} |" if d else "(reference) | |"))
        if cap.get("harness"):
            L += ["", "lm-evaluation-harness: see results.json `capability.harness`."]
        if "capability.png" in results.get("plots", []):
            L += ["", "![capability](capability.png)"]
    atomic_write_text(path, "\n".join(L) + "\n")
