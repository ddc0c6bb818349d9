"""Role identification: given an answer and K candidate personas, which persona wrote it? The protocol and metrics
of PersonaEval (Zhou et al. 2025, "Are LLM Evaluators Human Enough to Judge Role-Play?"), with the judge's
certainty as a filter (Dong et al. 2024, "Can LLM be a Personalized Judge?").

    character eval role-id --model smollm2-135m --adapter runs/demo/poeticism/merge --constitution poeticism
    character eval role-id --model M --judge llm --judge_model JUDGE --data PersonaEval/data   # official CSVs

The judge gives a probability over the candidates: softmax(score / T). Scores: with `--judge embedding` (default,
CPU) the cosine between MiniLM's embedding of the text and the centroid of the persona's description and trait
statements (a candidate that is no known constitution, e.g. a PersonaEval character name, is its name alone); with
`--judge llm` the log-probabilities of the option letters A, B, ... as the judge's reply (evals/roleid/judge.yaml).
T is fitted by maximum likelihood on the labelled set (`--roleid_temperature 0`, the default) or fixed.
Candidates are shown in a seeded random order per item, so a judge that favours a position is at chance.

Metrics, as PersonaEval's code computes them: top-1 and top-2 accuracy (Wilson intervals), mean rank of the right
persona, Brier score (mean over items and options of (p - 1[right])^2), ECE over 20 equal-width bins of the top
probability, macro-F1 over the right personas; plus Dong et al.'s filter: accuracy of the verdicts whose top
probability reaches `--roleid_threshold`, and the share kept (coverage). Bootstrap intervals for the rest.

Two uses. (b) Judge validity, first: the judge on the official PersonaEval CSVs (`--data` file or directory; columns
prompt, option1..optionN, gt) or on evals/roleid/labelled.csv (55 answers we wrote for the shipped constitutions,
four candidates each, in that layout); its probabilities there are cross-fitted (T fitted on the other half). The
section is inconclusive when the top-1 interval's lower bound is not above chance (mean 1/K). (a) Distinctiveness:
the base model plays each candidate persona by system prompt and each adapter answers as itself, on held-out
prompts; the judge names the author of every answer. Per adapter: how often its own persona is named, minus how
often the base model's answers get that name (paired over prompts).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from character.errors import CharacterError
from character.evaluation.scoring import interval, wilson

HELP = "which persona wrote each answer (PersonaEval), and the judge's validity"
LETTERS = "ABCDEFGHIJ"
ECE_BINS = 20
# candidates besides --constitution when --roleid_personas is empty: four personas that differ in kind (imagery,
# irony, warmth, numbers), so each costs one system prompt's answers and K stays small for a CPU run
DEFAULT_PERSONAS = ("poeticism", "sarcasm", "loving", "mathematical")
TEMPERATURES = [10 ** (k / 20) for k in range(-60, 61)]  # 1e-3 .. 1e3, the grid the fit searches


@dataclass(frozen=True)
class Item:
    """One identification: the text the judge reads, the candidate names in the order shown, the right one's index
    (None for an answer no persona wrote: the base model's)."""

    text: str
    options: tuple[str, ...]
    gt: int | None


def dialogue(prompt: str, answer: str) -> str:
    """An answer as the judge reads it; evals/roleid/labelled.csv writes its prompts the same way."""
    return f"User: {prompt}\nAssistant: {answer}"


# --- data -------------------------------------------------------------------------------------------------------

def labelled_path() -> Path:
    from character.resources import data_path

    return data_path("evals", "roleid", "labelled.csv")


def load_csv(path: str | Path) -> list[Item]:
    """A PersonaEval CSV: columns prompt, option1..optionN and gt (the right option's text); other columns are
    ignored, and an empty option cell (a file of 4 options beside one of 5) is skipped."""
    import csv
    import sys

    p = Path(path)
    fix = "write it with a header row prompt,option1,...,optionN,gt (PersonaEval's layout)"
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # PersonaEval prompts hold whole dialogues
    try:
        with p.open(encoding="utf-8-sig", newline="") as f:
            rows = list(csv.DictReader(f))
            header = [h.strip() for h in (rows[0].keys() if rows else [])]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise CharacterError(f"{p}: cannot read it as a CSV file ({e}); {fix}") from None
    opts = [f"option{i}" for i in range(1, 27) if f"option{i}" in header]
    missing = [c for c in ("prompt", "option1", "option2", "gt") if c not in header]
    if missing:
        raise CharacterError(f"{p}: no column {', '.join(missing)} (it has {', '.join(header) or 'no rows'}); {fix}")
    if len(opts) > len(LETTERS):
        raise CharacterError(f"{p}: {len(opts)} option columns; at most {len(LETTERS)} are supported")
    items = []
    for n, row in enumerate(rows, 2):  # line 1 is the header
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items() if k}
        options = tuple(row[o] for o in opts if row.get(o))
        if not row["prompt"] or len(options) < 2:
            raise CharacterError(f"{p}: line {n}: needs a prompt and at least two options; fill them or drop the row")
        if len(set(options)) < len(options):
            raise CharacterError(f"{p}: line {n}: two options are the same ({', '.join(options)}); make them distinct")
        if row["gt"] not in options:
            raise CharacterError(f"{p}: line {n}: gt '{row['gt']}' is none of its options ({', '.join(options)}); "
                                 "gt must repeat the right option's text")
        items.append(Item(row["prompt"], options, options.index(row["gt"])))
    if not items:
        raise CharacterError(f"{p}: no rows under the header; {fix}")
    return items


def load_data(path: str | Path | None) -> dict[str, list[Item]]:
    """{set name: items}: each CSV of a directory (PersonaEval's Literary, Drama, Expertise), one file, or (None)
    the shipped labelled set."""
    if path is None:
        return {"labelled": load_csv(labelled_path())}
    p = Path(path).expanduser()
    if p.is_dir():
        files = sorted(p.glob("*.csv"))
        if not files:
            raise CharacterError(f"{p}: no .csv files; give a PersonaEval CSV or a directory of them")
        return {f.stem: load_csv(f) for f in files}
    if not p.is_file():
        raise CharacterError(f"--data {p}: not found; give a PersonaEval CSV or a directory of them")
    return {p.stem: load_csv(p)}


def shuffled(items: Sequence[Item], seed: int) -> list[Item]:
    """Each item's candidates in a seeded random order (the right one followed)."""
    rng = random.Random(seed)
    out = []
    for it in items:
        order = rng.sample(range(len(it.options)), len(it.options))
        out.append(replace(it, options=tuple(it.options[k] for k in order),
                           gt=None if it.gt is None else order.index(it.gt)))
    return out


# --- judges -----------------------------------------------------------------------------------------------------

class Personas:
    """Candidate names -> constitutions, for the ones that are known (given, or shipped); others are bare names."""

    def __init__(self, given: dict | None = None):
        self.known = dict(given or {})

    def get(self, name: str):
        from character import constitution as C

        if name not in self.known and name in C.available():
            self.known[name] = C.load(name)
        return self.known.get(name)

    def sentences(self, name: str) -> list[str]:
        c = self.get(name)
        return [name] if c is None else [s for s in [c.description, *(t.trait for t in c.traits)] if s]

    def line(self, name: str) -> str:
        c = self.get(name)
        return name if c is None else f"{name}: {c.description or ' '.join(t.trait for t in c.traits)}"


class EmbeddingRoleJudge:
    """Score = cosine between the text's embedding and the (renormalised) mean embedding of the persona's sentences."""

    name = "embedding"

    def __init__(self, encode: Callable, personas: Personas):
        self.encode, self.personas = encode, personas
        self._centroids: dict = {}

    def _add_centroids(self, names: Sequence[str]) -> None:
        import numpy as np

        todo = [n for n in dict.fromkeys(names) if n not in self._centroids]
        sentences = [self.personas.sentences(n) for n in todo]
        if not todo:
            return
        vecs = np.asarray(self.encode([s for group in sentences for s in group]))  # one batch for all of them
        start = 0
        for name, group in zip(todo, sentences):
            v = vecs[start:start + len(group)].mean(axis=0)
            self._centroids[name] = v / max(float(np.linalg.norm(v)), 1e-12)
            start += len(group)

    def scores(self, items: Sequence[Item]) -> list[list[float]]:
        if not items:
            return []
        self._add_centroids([o for it in items for o in it.options])
        texts = list(dict.fromkeys(it.text for it in items))
        vec = dict(zip(texts, self.encode(texts)))
        return [[float(vec[it.text] @ self._centroids[o]) for o in it.options] for it in items]


class LabelRoleJudge:
    """Score = log p(letter) of each candidate's letter as the judge's reply (one forward pass per item)."""

    name = "llm"

    def __init__(self, engine, personas: Personas, template: str | None = None):
        self.engine, self.personas = engine, personas
        self.template = template or judge_template()

    def prompt(self, it: Item) -> str:
        lines = "\n".join(f"{LETTERS[k]}. {self.personas.line(o)}" for k, o in enumerate(it.options))
        return self.template.format(prompt=it.text, options=lines)

    def scores(self, items: Sequence[Item]) -> list[list[float]]:
        from character.engine.base import Request

        reqs = [Request(messages=[{"role": "user", "content": self.prompt(it)}]) for it in items]
        return self.engine.score(reqs, [list(LETTERS[:len(it.options)]) for it in items]) if items else []


def judge_template() -> str:
    import yaml

    p = labelled_path().parent / "judge.yaml"
    t = (yaml.safe_load(p.read_text(encoding="utf-8")) or {}).get("template") if p.is_file() else None
    if not t or "{prompt}" not in t or "{options}" not in t:
        raise CharacterError(f"{p}: needs a 'template' with {{prompt}} and {{options}}; reinstall character")
    return t


def judge_scores(judge, items: Sequence[Item]) -> list[list[float]]:
    """The judge's scores, refused with one line if any item has a non-finite one (the judge cannot score)."""
    import math

    out = judge.scores(items)
    for it, s in zip(items, out):
        if len(s) != len(it.options) or not all(math.isfinite(x) for x in s):
            raise CharacterError(f"role-id: the {judge.name} judge gave no usable score for '{it.text[:60]}...' "
                                 f"({s}); use another --judge or --judge_model")
    return [list(s) for s in out]


# --- probabilities ----------------------------------------------------------------------------------------------

def softmax(scores: Sequence[float], temperature: float) -> list[float]:
    import numpy as np

    z = np.asarray(scores, dtype=float) / temperature
    e = np.exp(z - z.max())
    return [float(x) for x in e / e.sum()]


def fit_temperature(scores: Sequence[Sequence[float]], gts: Sequence[int]) -> float:
    """The T of the grid that maximises the likelihood of the right candidates (ties: the larger T)."""
    import numpy as np

    def nll(t):
        return -sum(np.log(max(softmax(s, t)[g], 1e-300)) for s, g in zip(scores, gts))

    losses = [nll(t) for t in TEMPERATURES]
    best = min(losses)
    return max(t for t, v in zip(TEMPERATURES, losses) if v <= best + 1e-9)


def crossfit(scores: list[list[float]], gts: list[int], seed: int) -> tuple[list[list[float]], list[float]]:
    """Probabilities of each item with T fitted on the other half of the items (two folds, seeded); returns them
    and the two temperatures."""
    idx = random.Random(seed).sample(range(len(scores)), len(scores))
    folds = [idx[: len(idx) // 2], idx[len(idx) // 2:]]
    probs: list = [None] * len(scores)
    temps = []
    for k, fold in enumerate(folds):
        other = folds[1 - k]
        t = fit_temperature([scores[i] for i in other], [gts[i] for i in other])
        temps.append(t)
        for i in fold:
            probs[i] = softmax(scores[i], t)
    return probs, temps


# --- metrics ----------------------------------------------------------------------------------------------------

def ranking(p: Sequence[float]) -> list[int]:
    """Option indices by probability, highest first; ties keep the order shown."""
    return sorted(range(len(p)), key=lambda j: -p[j])


def ece(conf: Sequence[float], correct: Sequence[bool], n_bins: int = ECE_BINS) -> float:
    """Expected calibration error: bins (lo, hi] of equal width over the top probability, each weighted by its
    share of the items, |mean confidence - accuracy|."""
    n = len(conf)
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        inside = [k for k, c in enumerate(conf) if lo < c <= hi]
        if inside:
            gap = sum(conf[k] for k in inside) / len(inside) - sum(correct[k] for k in inside) / len(inside)
            total += len(inside) / n * abs(gap)
    return total


def macro_f1(truth: Sequence[str], pred: Sequence[str]) -> float:
    """Mean over the right answers' classes of F1 = 2 tp / (2 tp + fp + fn)."""
    scores = []
    for c in sorted(set(truth)):
        tp = sum(t == c and p == c for t, p in zip(truth, pred))
        fp = sum(t != c and p == c for t, p in zip(truth, pred))
        fn = sum(t == c and p != c for t, p in zip(truth, pred))
        scores.append(2 * tp / (2 * tp + fp + fn))
    return sum(scores) / len(scores)


def metrics(items: Sequence[Item], probs: Sequence[Sequence[float]], threshold: float, n_boot: int = 200,
            seed: int = 0) -> dict:
    """PersonaEval's metrics and the certainty filter over labelled items (gt set)."""
    import numpy as np

    if not items:
        raise CharacterError("role-id: no labelled answers to score; give a non-empty --data file")
    order = [ranking(p) for p in probs]
    rank = np.array([o.index(it.gt) + 1 for o, it in zip(order, items)])
    brier = np.array([np.mean([(q - (j == it.gt)) ** 2 for j, q in enumerate(p)]) for p, it in zip(probs, items)])
    conf = np.array([p[o[0]] for p, o in zip(probs, order)])
    right = rank == 1
    truth = [it.options[it.gt] for it in items]
    pred = [it.options[o[0]] for o, it in zip(order, items)]
    n = len(items)
    kept = conf >= threshold
    stats = {"mean_rank": lambda i: rank[i].mean(), "brier": lambda i: brier[i].mean(),
             "ece": lambda i: ece(conf[i], right[i]), "macro_f1": lambda i: macro_f1([truth[k] for k in i],
                                                                                  [pred[k] for k in i])}
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, (n_boot, n))
    out: dict = {"n": n, "chance": float(np.mean([1 / len(it.options) for it in items]))}
    for name, hits in (("top1", right), ("top2", rank <= 2)):
        out[name] = float(hits.mean())
        out[f"{name}_ci95"] = list(wilson(int(hits.sum()), n))
    for name, f in stats.items():
        point = float(f(np.arange(n)))
        boot = np.array([f(d) for d in draws])
        # shifted by the bootstrap's bias: resampling duplicates items, which inflates ECE (fewer distinct items per
        # bin) and would leave the estimate below its own percentile interval
        lo, hi = interval(boot - (boot.mean() - point))
        out[name], out[f"{name}_ci95"] = point, [max(0.0, float(lo)), float(hi)]
    out["certain"] = {"threshold": threshold, "kept": int(kept.sum()), "coverage": float(kept.mean()),
                      "accuracy": float(right[kept].mean()) if kept.any() else None,
                      "ci95": list(wilson(int(right[kept].sum()), int(kept.sum())))}
    out["calibration"] = [{"lo": b / ECE_BINS, "hi": (b + 1) / ECE_BINS, "n": int(m.sum()),
                           "confidence": float(conf[m].mean()), "accuracy": float(right[m].mean())}
                          for b in range(ECE_BINS)
                          if (m := (conf > b / ECE_BINS) & (conf <= (b + 1) / ECE_BINS)).any()]
    return out


# --- the two uses -----------------------------------------------------------------------------------------------

def validity(judge, sets: dict[str, list[Item]], *, temperature: float, threshold: float, n_boot: int,
             seed: int) -> dict:
    """The judge on labelled sets (candidates shuffled per item): metrics pooled and per set, and the T to use on
    the answers under evaluation (fitted on all of them when `temperature` is 0)."""
    names = [name for name, items in sets.items() for _ in items]
    items = shuffled([it for s in sets.values() for it in s], seed)
    if len(items) < 4:
        raise CharacterError(f"role-id: {len(items)} labelled rows; the judge's validity needs at least 4")
    scores = judge_scores(judge, items)
    gts = [it.gt for it in items]
    if temperature > 0:
        probs, t, how = [softmax(s, temperature) for s in scores], temperature, {"fixed": temperature}
    else:
        probs, folds = crossfit(scores, gts, seed)
        t, how = fit_temperature(scores, gts), {"fitted": True, "folds": folds}
    out = {"sets": {name: len(s) for name, s in sets.items()}, "temperature": t, "temperature_fit": how,
           **metrics(items, probs, threshold, n_boot, seed)}
    if len(sets) > 1:
        out["per_set"] = {name: metrics([it for it, m in zip(items, names) if m == name],
                                        [p for p, m in zip(probs, names) if m == name], threshold, n_boot, seed)
                          for name in sets}
    return out


def distinctiveness(engines, systems: list, personas: dict, label: str | None, prompts: list[str], judge, *,
                    temperature: float, sampling, style: str, threshold: float, n_boot: int, seed: int) -> dict:
    """systems[0] answers as it is (the reference), the base plays each persona by system prompt, systems[1:] (the
    trained ones) are labelled `label`; the judge names the author of every answer among `personas`."""
    from character.evaluation.robustness import persona_prompt, rate_minus_base
    from character.evaluation.systems import System

    names = list(personas)
    ref = systems[0]
    prompted = [System(f"prompted:{n}", ref.model, system_prompt=persona_prompt(c, style), label=n)
                for n, c in personas.items()]
    trained = [replace(s, label=label) for s in systems[1:]] if label else []  # keeps steering
    every = [ref, *prompted, *trained]
    texts = engines.generate([(s, s.request(p)) for s in every for p in prompts], sampling, label="role-id")
    rng = random.Random(seed)
    orders = [tuple(rng.sample(names, len(names))) for _ in prompts]  # per prompt, shared by every system
    items = [Item(dialogue(p, texts[k * len(prompts) + i]), orders[i], orders[i].index(s.label) if s.label else None)
             for k, s in enumerate(every) for i, p in enumerate(prompts)]
    probs = [softmax(s, temperature) for s in judge_scores(judge, items)]
    top = [it.options[ranking(p)[0]] for it, p in zip(items, probs)]
    n = len(prompts)

    def part(s):
        k = every.index(s)
        return items[k * n:(k + 1) * n], probs[k * n:(k + 1) * n], top[k * n:(k + 1) * n]

    pooled = [part(s) for s in prompted]
    out: dict = {"candidates": names, "prompts": n, "chance": 1 / len(names), "reference": ref.name,
                 "prompted": metrics([i for it, _, _ in pooled for i in it], [q for _, p, _ in pooled for q in p],
                                     threshold, n_boot, seed)}
    out["prompted"]["per_persona"] = {}
    for s, (_, _, t) in zip(prompted, pooled):
        hits = sum(x == s.label for x in t)
        lo, hi = wilson(hits, n)
        out["prompted"]["per_persona"][s.label] = {"n": n, "recall": hits / n, "ci95": [lo, hi],
                                                   "distinguishable": lo > 1 / len(names)}
    ref_top = part(ref)[2]
    out["reference_label_rates"] = {c: ref_top.count(c) / n for c in names}
    out["adapters"] = {}
    for s in trained:
        its, ps, t = part(s)
        out["adapters"][s.name] = {"persona": label, **metrics(its, ps, threshold, n_boot, seed),
                                   "minus_reference": rate_minus_base([t], [ref_top], label, n_boot, seed)}
    step = max(1, len(items) // 6)
    out["examples"] = [{"system": every[k // n].name, "answer": texts[k], "named": top[k],
                        "probability": max(probs[k])} for k in range(0, len(items), step)]
    return out


# --- the suite --------------------------------------------------------------------------------------------------

def candidates(cfg, const) -> dict:
    """{name: constitution} of the candidate personas: --roleid_personas (default DEFAULT_PERSONAS) and the
    --constitution the adapters were trained for."""
    from character import constitution as C

    out = {}
    for name in cfg.roleid_personas or DEFAULT_PERSONAS:
        c = C.load(name)
        out[c.name] = c
    if const is not None:
        out.setdefault(const.name, const)
    if not 2 <= len(out) <= len(LETTERS):
        raise CharacterError(f"role-id: {len(out)} candidate personas; give between 2 and {len(LETTERS)} with "
                             "--roleid_personas")
    return out


def check(cfg) -> None:
    """Before any engine starts: the settings, the candidates and the --data files."""
    if cfg.roleid_prompts < 1:
        raise CharacterError("roleid_prompts must be >= 1")
    if not 0 < cfg.roleid_threshold <= 1:
        raise CharacterError(f"roleid_threshold {cfg.roleid_threshold}: a top probability, in (0, 1]")
    if cfg.roleid_temperature < 0:
        raise CharacterError("roleid_temperature must be >= 0 (0 fits it on the labelled set)")
    candidates(cfg, None)
    load_data(cfg.data_for("role-id"))


def run_suite(ctx) -> dict:
    cfg, const = ctx.cfg, ctx.constitution
    personas = candidates(cfg, const)
    book = Personas(personas)
    if cfg.judge == "llm":
        llm = ctx.llm_judge()
        judge, judge_info = LabelRoleJudge(llm.engine, book), {"kind": "llm", "model": getattr(llm, "model", None)}
    else:
        judge = EmbeddingRoleJudge(ctx.embedding_judge().encode, book)
        judge_info = {"kind": "embedding", "model": cfg.embedding_model}
    valid = validity(judge, load_data(cfg.data_for("role-id")), temperature=cfg.roleid_temperature,
                     threshold=cfg.roleid_threshold, n_boot=cfg.bootstrap, seed=cfg.seed)
    valid["source"] = str(Path(cfg.data_for("role-id")).expanduser().resolve()) if cfg.data_for("role-id") else "evals/roleid/labelled.csv"
    prompts = random.Random(cfg.seed + 15).sample(ctx.prompts, min(cfg.roleid_prompts, len(ctx.prompts)))
    dist = distinctiveness(ctx.engines, ctx.systems, personas, const.name if const else None, prompts, judge,
                           temperature=valid["temperature"], sampling=ctx.sampling, style=cfg.persona_prompt,
                           threshold=cfg.roleid_threshold, n_boot=cfg.bootstrap, seed=cfg.seed)
    return {"judge": judge_info, "validity": valid, "distinctiveness": dist, **verdict(valid, judge_info["kind"])}


def verdict(valid: dict, kind: str) -> dict:
    """Inconclusive when the judge's top-1 interval on the labelled set does not clear chance (mean 1/K)."""
    lo, hi = valid["top1_ci95"]
    if lo > valid["chance"]:
        return {"inconclusive": False}
    return {"inconclusive": True, "inconclusive_reason": (
        f"the {kind} judge names the right persona of labelled answers with accuracy {valid['top1']:.2f} "
        f"[{lo:.2f}, {hi:.2f}], not clearly above chance ({valid['chance']:.2f}), so its verdicts on the answers "
        "below mean nothing.")}


# --- report and plot --------------------------------------------------------------------------------------------

def _ci(ci) -> str:
    return f"[{ci[0]:.2f}, {ci[1]:.2f}]"


def _row(label: str, m: dict) -> str:
    c = m["certain"]
    cert = "n/a" if c["accuracy"] is None else f"{c['accuracy']:.2f} {_ci(c['ci95'])}"
    return (f"| {label} | {m['n']} | {m['top1']:.2f} {_ci(m['top1_ci95'])} | {m['top2']:.2f} | "
            f"{m['mean_rank']:.2f} {_ci(m['mean_rank_ci95'])} | {m['brier']:.3f} | {m['ece']:.3f} | "
            f"{m['macro_f1']:.2f} | {cert} ({c['coverage']:.0%}) |")


def report_section(sec: dict, results: dict) -> list[str]:
    v, d, j = sec["validity"], sec["distinctiveness"], sec["judge"]
    thr = v["certain"]["threshold"]
    how = (f"fixed at {v['temperature']:.3g}" if "fixed" in v["temperature_fit"] else
           f"fitted by maximum likelihood on the labelled set: {v['temperature']:.3g}; cross-fitted there, "
           f"{' and '.join(f'{t:.3g}' for t in v['temperature_fit']['folds'])} on its two halves")
    head = ("| answers | n | top-1 (95% CI) | top-2 | mean rank (95% CI) | Brier | ECE | macro-F1 | "
            f"top-1 when p >= {thr:g} (coverage) |")
    L = ["", "## Role identification (PersonaEval)", ""]
    if sec.get("inconclusive"):
        L += [f"**Inconclusive: {sec['inconclusive_reason']}**", ""]
    L += [f"Judge `{j['kind']}` ({j['model']}): a probability over the candidate personas, softmax of its scores "
          f"with temperature T ({how}). Candidates are shown in a random order per answer.", "",
          f"### Judge validity ({v['source']})", "", head, "|---|---:|---|---:|---|---:|---:|---:|---|",
          _row(f"pooled (chance {v['chance']:.2f})", v)]
    L += [_row(name, m) for name, m in (v.get("per_set") or {}).items()]
    L += ["", f"### Distinctiveness: which of {len(d['candidates'])} personas wrote each answer?", "",
          f"Candidates {', '.join(f'`{c}`' for c in d['candidates'])} (chance {d['chance']:.2f}); {d['prompts']} "
          "held-out prompts per system. The base model plays each persona by system prompt; each adapter should be "
          "named as its constitution.", "", head, "|---|---:|---|---:|---|---:|---:|---:|---|",
          _row("system-prompted personas", d["prompted"])]
    L += [_row(f"{name} (as `{a['persona']}`)", a) for name, a in d["adapters"].items()]
    L += ["", "Per prompted persona, how often the judge names it (- marks one not above chance): " + ", ".join(
        f"{c} {r['recall']:.2f} {_ci(r['ci95'])}" + ("" if r["distinguishable"] else " -")
        for c, r in d["prompted"]["per_persona"].items()) + "."]
    for name, a in d["adapters"].items():
        r = a["minus_reference"]
        L.append(f"`{name}` is named `{a['persona']}` for {r['rate']:.2f} of its answers, `{d['reference']}` for "
                 f"{r['base_rate']:.2f} of its own: **{r['minus_base']:+.2f}** {_ci(r['ci95'])} (paired over prompts).")
    L.append(f"Names given to `{d['reference']}`'s answers (no persona): " + ", ".join(
        f"{c} {x:.2f}" for c, x in d["reference_label_rates"].items()) + ".")
    if "roleid.png" in results.get("plots", []):
        L += ["", "![role-id](roleid.png)"]
    return L


def plots(sec: dict, out: Path, plt) -> list[str]:
    """Left: the judge's calibration on the labelled set. Right: top-1 accuracy of each group against chance."""
    v, d = sec["validity"], sec["distinctiveness"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    bins = v["calibration"]
    left.plot([0, 1], [0, 1], color="gray", ls="--", lw=0.8)
    left.scatter([b["confidence"] for b in bins], [b["accuracy"] for b in bins], s=[12 + 6 * b["n"] for b in bins])
    left.set(xlim=(0, 1), ylim=(0, 1), xlabel="top probability (bin mean)", ylabel="accuracy",
             title=f"Judge calibration, labelled set (ECE {v['ece']:.3f})")
    groups = [("judge validity", v)] + [(f"prompted:{c}", r) for c, r in d["prompted"]["per_persona"].items()]
    groups += [(name, a) for name, a in d["adapters"].items()]
    acc = [g.get("top1", g.get("recall")) for _, g in groups]
    ci = [g.get("top1_ci95", g.get("ci95")) for _, g in groups]
    right.bar(range(len(groups)), acc, yerr=[[a - c[0] for a, c in zip(acc, ci)], [c[1] - a for a, c in zip(acc, ci)]],
              capsize=3, color=["tab:gray"] + ["tab:blue"] * len(d["prompted"]["per_persona"])
              + ["tab:red"] * len(d["adapters"]))
    right.axhline(d["chance"], color="black", ls="--", lw=0.8, label=f"chance ({d['chance']:.2f})")
    right.set_xticks(range(len(groups)), [g for g, _ in groups], rotation=45, ha="right")
    right.set(ylim=(0, 1), ylabel="right persona named (95% CI)", title="Role identification")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "roleid.png", dpi=110)
    plt.close(fig)
    return ["roleid.png"]
