"""APC: global persona faithfulness (Peng & Shang, NeurIPS 2024, "Quantifying and Optimizing Global Faithfulness in
Persona-driven Role-playing").

    character eval apc --model smollm2-135m --adapter runs/demo/poeticism/merge --constitution poeticism

The persona statements are the constitution's traits. For a user prompt q, an answer r and each statement s, one
discriminator gives P(s is relevant to q) and another the NLI probabilities of r against s (entailed, neutral,
contradicted). A relevant statement should be shown (active constraint), an irrelevant one at least not broken
(passive constraint):

    APC(q, r) = sum over s of  P(rel) * P(entailed) + (1 - P(rel)) * (1 - P(contradicted))

reported per system (the base, each adapter, and the constitution as the base's system prompt), raw and divided by
the number of statements, with percentile-bootstrap intervals over prompts and a paired interval against the
reference; and per statement (its mean term, and whether answers honour it: mean P(entailed) - P(contradicted),
bootstrap interval above 0, or violate it: below 0).

Discriminators are pluggable (`--apc_discriminator`):
- `minilm` (CPU, offline): relevance = MiniLM cosine of statement and prompt through a logistic calibration;
  NLI = multinomial logistic probe on MiniLM features of (statement, answer): [s, a, s*a, |s-a|]. Both are fitted
  on the labelled set. It reads tone more than logic (a harsh answer looks "contradicted" whatever it says), so it
  is a coarse measuring stick; its accuracy below says how coarse. No PyPI package ships NLI weights to use instead.
- `model`: local transformers sequence-classification dirs (the paper distils DeBERTa-v3-large ones):
  `--apc_nli_model` (label names from config.json's id2label: entail*, neutral, contradict*; premise = answer,
  hypothesis = statement) and optionally `--apc_relevance_model` (labels yes/relevant, or 2 unnamed labels in the
  paper's order no, yes; pair = statement, prompt), else MiniLM relevance.
- `llm`: an LLM judge (`--judge_model`, default the base) reads both from the log-probs of option letters.

The labelled set, `evals/apc/` (written for this project), is in the official repository's layout: per persona
`NAME.relevance.json` ([{character, statement, query, relevant: yes|no}]) and `NAME.nli.v2.json` ([{character,
statement, query, response, label: entailed|neutral|contradicted}]; the older nested `NAME.nli.json` loads too).
`--data DIR` uses such files instead; `--data NAME.json` (the official statement file, [{character, statement}])
also takes the persona statements from it. Each discriminator's accuracy on the labelled set is reported with a
Wilson interval: held out by persona (leave-one-persona-out folds) for the fitted probes, on every row for the
others. The section is inconclusive when the NLI (or relevance) interval does not clear chance.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from character.errors import CharacterError

NLI_LABELS = ("entailed", "neutral", "contradicted")
_ALIASES = {"entailed": 0, "entail": 0, "entailment": 0, "neutral": 1, "contradicted": 2, "contradict": 2,
            "contradiction": 2}
OPTIONS = ("A", "B", "C")  # one token each: the LLM judge's options are read from their log-probs
REL_TEMPLATE = ('An AI assistant has this trait:\n"{statement}"\n\nA user writes:\n"{prompt}"\n\nDoes this message '
                "give the assistant a reason to show the trait?\nA: yes, the reply should show it\nB: no, the trait "
                "has little to do with this message\nAnswer with A or B.")
NLI_TEMPLATE = ('An AI assistant has this trait:\n"{statement}"\n\nUser: {prompt}\nAssistant: {answer}\n\nHow does '
                "the assistant's reply relate to the trait?\nA: the reply shows the trait\nB: the reply neither "
                "shows it nor goes against it\nC: the reply goes against the trait\nAnswer with A, B or C.")


def apc_terms(p_rel, p_entail, p_contra):
    """The per-statement term P(rel) * P(entailed) + (1 - P(rel)) * (1 - P(contradicted)), elementwise."""
    import numpy as np

    p_rel, p_entail, p_contra = (np.asarray(x, dtype=float) for x in (p_rel, p_entail, p_contra))
    return p_rel * p_entail + (1.0 - p_rel) * (1.0 - p_contra)


# -- the labelled set ---------------------------------------------------------------------------------------------

def _read_list(path: Path) -> list:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CharacterError(f"{path}: not readable JSON ({e}); give a file in the APC repository's layout") from None
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise CharacterError(f"{path}: expected a JSON list of objects (the APC repository's layout)")
    return data


def _need(path: Path, n: int, row: dict, keys: tuple[str, ...]) -> None:
    missing = [k for k in keys if not isinstance(row.get(k), str) or not row[k].strip()]
    if missing:
        raise CharacterError(f"{path}: row {n} lacks {', '.join(missing)}; each row needs {', '.join(keys)}")


def _relevance_rows(path: Path) -> list[dict]:
    out = []
    for n, r in enumerate(_read_list(path), 1):
        _need(path, n, r, ("statement", "query", "relevant"))
        if r["relevant"].strip().lower() not in ("yes", "no"):
            raise CharacterError(f"{path}: row {n}: 'relevant' is {r['relevant']!r}; use yes or no")
        out.append({"character": r.get("character") or path.name.split(".")[0], "statement": r["statement"],
                    "prompt": r["query"], "relevant": r["relevant"].strip().lower() == "yes"})
    return out


def _nli_rows(path: Path) -> list[dict]:
    out = []
    for n, r in enumerate(_read_list(path), 1):
        if "nli" in r:  # the older layout: {statement, query, nli: {label: response}}
            if not isinstance(r["nli"], dict):
                raise CharacterError(f"{path}: row {n}: 'nli' must map labels to responses")
            pairs = [(answer, label) for label, answer in r["nli"].items()]
        else:
            pairs = [(r.get("response"), r.get("label"))]
        for answer, label in pairs:
            _need(path, n, {**r, "response": answer, "label": label}, ("statement", "query", "response", "label"))
            key = label.strip().strip(".\"' ").lower()
            if key not in _ALIASES:
                raise CharacterError(f"{path}: row {n}: label {label!r} is not entailed, neutral or contradicted")
            out.append({"character": r.get("character") or path.name.split(".")[0], "statement": r["statement"],
                        "prompt": r["query"], "answer": answer, "label": _ALIASES[key]})
    return out


def load_labelled(path: str | Path | None = None) -> tuple[list[dict], list[dict]]:
    """(relevance rows, NLI rows) from a directory of official files (`NAME.relevance.json`, `NAME.nli.v2.json` or
    `NAME.nli.json`), or the files beside an official statement file `NAME.json`; None: the shipped evals/apc/."""
    from character.resources import data_path

    p = Path(path).expanduser() if path is not None else data_path("evals", "apc")
    if p.is_file():
        stem = p.name[:-len(".json")] if p.name.endswith(".json") else p.stem
        rel = [p.parent / f"{stem}.relevance.json"]
        nli = [p.parent / f"{stem}.nli.v2.json", p.parent / f"{stem}.nli.json"]
    elif p.is_dir():
        rel = sorted(p.glob("*.relevance.json"))
        nli = sorted(p.glob("*.nli.v2.json")) + sorted(p.glob("*.nli.json"))
    else:
        raise CharacterError(f"apc data '{p}': not found; give a directory of APC files or a NAME.json statement file")
    rel_rows = [r for f in rel if f.is_file() for r in _relevance_rows(f)]
    seen, nli_rows = set(), []
    for f in nli:  # a persona's relabelled v2 file wins over its v1 file
        who = f.name.split(".")[0]
        if f.is_file() and who not in seen:
            seen.add(who)
            nli_rows += _nli_rows(f)
    if not rel_rows or not nli_rows:
        what = "NAME.relevance.json" if not rel_rows else "NAME.nli.v2.json (or NAME.nli.json)"
        raise CharacterError(f"apc data '{p}': no rows in {what}; the labelled set needs both relevance and NLI rows")
    return rel_rows, nli_rows


def load_statements(path: str | Path) -> tuple[str, list[str]]:
    """(character, statements) from an official statement file: [{character, statement, ...}] or [str]."""
    p = Path(path).expanduser()
    rows = json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None
    if not isinstance(rows, list) or not rows:
        raise CharacterError(f"apc data '{p}': expected a non-empty JSON list of statements ([{{character, "
                             "statement}}] or strings)")
    texts = [r if isinstance(r, str) else r.get("statement") if isinstance(r, dict) else None for r in rows]
    if not all(isinstance(t, str) and t.strip() for t in texts):
        raise CharacterError(f"apc data '{p}': every row needs a 'statement' string")
    name = next((r.get("character") for r in rows if isinstance(r, dict) and r.get("character")), p.stem)
    return str(name), list(dict.fromkeys(texts))


# -- discriminators -----------------------------------------------------------------------------------------------

def _softmax_rows(x):
    import numpy as np

    x = np.asarray(x, dtype=float)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def cached(encode):
    """`encode` with a memory of the texts it has embedded (the folds and the statements repeat them)."""
    import numpy as np

    memo: dict[str, object] = {}

    def run(texts):
        todo = [t for t in dict.fromkeys(texts) if t not in memo]
        if todo:
            memo.update(zip(todo, encode(todo)))
        return np.stack([memo[t] for t in texts]) if texts else encode([])

    return run


class MiniLMRelevance:
    """P(relevant) = sigmoid(a * cos(statement, prompt) + b), fitted on the labelled relevance rows."""

    name, trainable = "minilm-cosine", True

    def __init__(self, encode):
        self.encode, self.model = encode, None

    def _cos(self, statements, prompts):
        import numpy as np

        return np.sum(self.encode(list(statements)) * self.encode(list(prompts)), axis=1, keepdims=True)

    def fit(self, rows: list[dict]) -> MiniLMRelevance:
        from sklearn.linear_model import LogisticRegression

        y = [r["relevant"] for r in rows]
        if len(set(y)) < 2:
            raise CharacterError("apc: the relevance rows need both yes and no labels to calibrate MiniLM relevance")
        self.model = LogisticRegression(C=100.0).fit(self._cos([r["statement"] for r in rows],
                                                               [r["prompt"] for r in rows]), y)
        return self

    def probs(self, statements, prompts):
        return self.model.predict_proba(self._cos(statements, prompts))[:, list(self.model.classes_).index(True)]


class MiniLMNLIProbe:
    """(P(entailed), P(neutral), P(contradicted)) from a logistic probe on [s, a, s*a, |s-a|] MiniLM features."""

    name, trainable = "minilm-probe", True

    def __init__(self, encode, c: float = 1.0):
        self.encode, self.c, self.model = encode, c, None

    def _features(self, statements, answers):
        import numpy as np

        s, a = self.encode(list(statements)), self.encode(list(answers))
        return np.hstack([s, a, s * a, np.abs(s - a)])

    def fit(self, rows: list[dict]) -> MiniLMNLIProbe:
        from sklearn.linear_model import LogisticRegression

        y = [r["label"] for r in rows]
        if len(set(y)) < 3:
            raise CharacterError("apc: the NLI rows need all three labels (entailed, neutral, contradicted)")
        self.model = LogisticRegression(C=self.c, max_iter=3000).fit(
            self._features([r["statement"] for r in rows], [r["answer"] for r in rows]), y)
        return self

    def probs(self, statements, prompts, answers):
        import numpy as np

        p = self.model.predict_proba(self._features(statements, answers))
        return p[:, [list(self.model.classes_).index(k) for k in range(3)]].astype(np.float64)


def read_id2label(path: str, task: str) -> list[int]:
    """Column indices of a sequence-classification dir's outputs for the task's classes, from config.json: NLI
    [entailed, neutral, contradicted], relevance [relevant]. One line on a dir it cannot read."""
    cfg_file = Path(path).expanduser() / "config.json"
    if not cfg_file.is_file():
        raise CharacterError(f"apc {task} model '{path}': no config.json; give a local transformers "
                             "sequence-classification directory")
    labels = {int(k): str(v).lower() for k, v in json.loads(cfg_file.read_text()).get("id2label", {}).items()}
    if task == "nli":
        want = ("entail", "neutral", "contradict")
        idx = [next((i for i, n in labels.items() if n.startswith(w)), None) for w in want]
        if None in idx:
            raise CharacterError(f"apc nli model '{path}': its id2label {sorted(labels.values())} lacks entail*, "
                                 "neutral or contradict*; name the labels in its config.json")
        return idx  # type: ignore[return-value]
    named = [i for i, n in labels.items() if n in ("yes", "relevant", "related")]
    if named:
        return named[:1]
    if len(labels) == 2 and all(n.startswith("label_") for n in labels.values()):
        return [1]  # the paper's order: no, yes
    raise CharacterError(f"apc relevance model '{path}': id2label {sorted(labels.values())} names no yes/relevant "
                         "class; rename it in config.json")


class SequenceClassifier:
    """A local transformers sequence-classification model as the NLI or the relevance discriminator."""

    trainable = False

    def __init__(self, path: str, task: str, batch_size: int = 16):
        self.path, self.task, self.batch_size = path, task, batch_size
        self.columns = read_id2label(path, task)
        self.name = f"model:{Path(path).name}"
        self._model = self._tok = None

    def _run(self, firsts: list[str], seconds: list[str]):
        import numpy as np
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if self._model is None:
            self._tok = AutoTokenizer.from_pretrained(self.path)
            self._model = AutoModelForSequenceClassification.from_pretrained(self.path).eval()
        out = []
        for i in range(0, len(firsts), self.batch_size):
            enc = self._tok(firsts[i:i + self.batch_size], seconds[i:i + self.batch_size], padding=True,
                            truncation=True, max_length=512, return_tensors="pt")
            with torch.no_grad():
                out.append(torch.softmax(self._model(**enc).logits.float(), -1).numpy())
        return np.concatenate(out)[:, self.columns] if out else np.zeros((0, len(self.columns)))

    def probs(self, statements, prompts, answers=None):
        if self.task == "nli":  # premise: the answer, hypothesis: the statement
            p = self._run(list(answers), list(statements))
            return p / p.sum(axis=1, keepdims=True)
        return self._run(list(statements), list(prompts))[:, 0]


class LLMDiscriminator:
    """An LLM judge's relevance (options A/B) or NLI (A/B/C) probabilities from the option letters' log-probs."""

    trainable = False

    def __init__(self, engine, task: str, model: str = "llm"):
        self.engine, self.task, self.name = engine, task, f"llm:{Path(model).name}"

    def probs(self, statements, prompts, answers=None):
        import numpy as np

        from character.engine.base import Request

        if self.task == "nli":
            texts = [NLI_TEMPLATE.format(statement=s, prompt=p, answer=a)
                     for s, p, a in zip(statements, prompts, answers)]
        else:
            texts = [REL_TEMPLATE.format(statement=s, prompt=p) for s, p in zip(statements, prompts)]
        k = 3 if self.task == "nli" else 2
        scores = self.engine.score([Request(messages=[{"role": "user", "content": t}]) for t in texts],
                                   [list(OPTIONS[:k])] * len(texts)) if texts else [[0.0] * k][:0]
        p = _softmax_rows(scores) if texts else np.zeros((0, k))
        return p if self.task == "nli" else p[:, 0]


@dataclass
class Discriminator:
    """A relevance component (`probs(statements, prompts)`) and an NLI one (`probs(statements, prompts, answers)`)."""

    relevance: object
    nli: object

    def terms(self, statements: list[str], prompts: list[str], answers: list[str]):
        """APC terms, shape (answers, statements): answer i to prompts[i] against every statement."""
        import numpy as np

        n, m = len(answers), len(statements)
        uniq = list(dict.fromkeys(prompts))
        rel = self.relevance.probs([s for _ in uniq for s in statements], [q for q in uniq for _ in statements])
        rel = np.asarray(rel).reshape(len(uniq), m)[[uniq.index(q) for q in prompts]]
        nli = np.asarray(self.nli.probs([s for _ in range(n) for s in statements],
                                        [q for q in prompts for _ in statements],
                                        [a for a in answers for _ in statements])).reshape(n, m, 3)
        return apc_terms(rel, nli[..., 0], nli[..., 2]), rel, nli


def build(kind: str, *, encode=None, labelled=None, nli_model: str | None = None,
          relevance_model: str | None = None, engine=None, judge_model: str = "llm") -> Discriminator:
    """The discriminator `kind` (minilm, model, llm); the MiniLM parts are fitted on `labelled` (rel, nli rows)."""
    if kind == "llm":
        return Discriminator(LLMDiscriminator(engine, "relevance", judge_model), LLMDiscriminator(engine, "nli",
                                                                                                  judge_model))
    rel_rows, nli_rows = labelled if labelled is not None else load_labelled()
    encode = cached(encode) if encode is not None else None
    relevance = (SequenceClassifier(relevance_model, "relevance") if kind == "model" and relevance_model
                 else MiniLMRelevance(encode).fit(rel_rows))
    if kind == "model":
        if not nli_model:
            raise CharacterError("apc_discriminator model: give --apc_nli_model DIR (a local NLI classifier)")
        return Discriminator(relevance, SequenceClassifier(nli_model, "nli"))
    return Discriminator(relevance, MiniLMNLIProbe(encode).fit(nli_rows))


# -- accuracy on the labelled set ---------------------------------------------------------------------------------

def _folds(rows: list[dict], k_max: int = 6) -> list[list[int]]:
    """Held-out folds by persona (by statement when fewer than 3 personas): a probe is scored on rows of personas
    (statements) it never saw."""
    key = "character" if len({r["character"] for r in rows}) >= 3 else "statement"
    groups = sorted({r[key] for r in rows})
    k = min(k_max, len(groups))
    where = {g: i % k for i, g in enumerate(groups)}
    return [[i for i, r in enumerate(rows) if where[r[key]] == f] for f in range(k)] if k >= 2 else []


def accuracy(component, rows: list[dict], task: str) -> dict:
    """Accuracy of a relevance or NLI component on labelled rows (held out by fold for a fitted probe), with a
    Wilson interval; chance = the larger of 1/classes and the majority label's share."""
    import numpy as np

    from character.evaluation.scoring import wilson

    truth = [r["relevant"] if task == "relevance" else r["label"] for r in rows]

    def predict(comp, idx):
        sub = [rows[i] for i in idx]
        p = comp.probs([r["statement"] for r in sub], [r["prompt"] for r in sub],
                       *([[r["answer"] for r in sub]] if task == "nli" else []))
        return list(np.asarray(p) >= 0.5) if task == "relevance" else list(np.argmax(p, axis=1))

    pred: list = [None] * len(rows)
    folds = _folds(rows) if component.trainable else [list(range(len(rows)))]
    if not folds:
        raise CharacterError(f"apc: the labelled {task} rows cover one statement only; a fitted probe cannot be "
                             "scored held out")
    for idx in folds:
        comp = component
        if component.trainable:
            held = set(idx)
            comp = type(component)(component.encode).fit([r for i, r in enumerate(rows) if i not in held])
        for i, v in zip(idx, predict(comp, idx)):
            pred[i] = v
    k = sum(bool(p == t) for p, t in zip(pred, truth))
    n = len(rows)
    classes = 2 if task == "relevance" else 3
    chance = max(1 / classes, max(truth.count(c) for c in set(truth)) / n)
    lo, hi = wilson(k, n)
    by = "persona" if len({r["character"] for r in rows}) >= 3 else "statement"
    out = {"discriminator": component.name, "rows": n, "correct": k, "accuracy": k / n, "ci95": [lo, hi],
           "chance": chance, "held_out": f"held out by {by}" if component.trainable else "not fitted on it",
           "chance_in_ci": bool(lo <= chance)}
    if task == "nli":
        out["recall"] = {NLI_LABELS[c]: sum(p == t for p, t in zip(pred, truth) if t == c) / max(1, truth.count(c))
                         for c in range(3)}
    return out


# -- the suite ----------------------------------------------------------------------------------------------------

def _boot(values, n_boot: int, seed: int) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap 95% interval over the rows of `values` (prompts)."""
    import numpy as np

    from character.evaluation.scoring import interval

    v = np.asarray(values, dtype=float)
    idx = np.random.default_rng(seed).integers(0, len(v), (n_boot, len(v)))
    lo, hi = interval(v[idx].mean(axis=1))
    return float(v.mean()), float(lo), float(hi)


def summarise(terms, rel, nli, ref_terms, statements: list[str], n_boot: int, seed: int) -> dict:
    """One system's APC: raw and per statement, bootstrap intervals over prompts, paired delta to the reference,
    and per statement the mean term, P(rel), P(entailed), P(contradicted) and whether answers honour it."""
    from character.evaluation.scoring import bootstrap_mean_diff

    per_prompt = terms.sum(axis=1)
    m = len(statements)
    apc, lo, hi = _boot(per_prompt, n_boot, seed)
    out = {"prompts": len(per_prompt), "apc": apc, "ci95": [lo, hi], "apc_normalised": apc / m,
           "normalised_ci95": [lo / m, hi / m], "statements": []}
    if ref_terms is not None:
        d, dlo, dhi = bootstrap_mean_diff(ref_terms.sum(axis=1), per_prompt, n_boot=n_boot, seed=seed)
        out["delta_vs_reference"] = {"delta": d, "ci95": [dlo, dhi]}
    for j, s in enumerate(statements):
        net, nlo, nhi = _boot(nli[:, j, 0] - nli[:, j, 2], n_boot, seed + j + 1)
        t, tlo, thi = _boot(terms[:, j], n_boot, seed + j + 1)
        row = {"statement": s, "term": t, "ci95": [tlo, thi], "relevance": float(rel[:, j].mean()),
               "entailed": float(nli[:, j, 0].mean()), "contradicted": float(nli[:, j, 2].mean()),
               "net": net, "net_ci95": [nlo, nhi],
               "verdict": "honoured" if nlo > 0 else "violated" if nhi < 0 else "unclear"}
        if ref_terms is not None:
            d, dlo, dhi = bootstrap_mean_diff(ref_terms[:, j], terms[:, j], n_boot=n_boot, seed=seed + j + 1)
            row["delta_vs_reference"] = {"delta": d, "ci95": [dlo, dhi]}
        out["statements"].append(row)
    return out


def _persona(cfg, const):
    """(name, statements, system prompt that plays them) from --data NAME.json or the constitution."""
    from character import constitution as C
    from character.evaluation.robustness import persona_prompt

    if cfg.data_for("apc") and Path(cfg.data_for("apc")).expanduser().is_file():
        name, statements = load_statements(cfg.data_for("apc"))
        const = C.Constitution(name=name, traits=tuple(C.Trait(s, ()) for s in statements))
        return name, statements, persona_prompt(const, "traits")
    if const is None:
        raise CharacterError("apc: give --constitution (its traits are the persona statements) or --data NAME.json "
                             "(an APC statement file)")
    return const.name, [t.trait for t in const.traits], persona_prompt(const, cfg.persona_prompt)


def check(cfg) -> None:
    """Before any engine starts: a persona, a readable labelled set, usable discriminator dirs."""
    from character import constitution as C

    if cfg.apc_prompts < 1:
        raise CharacterError("apc_prompts must be >= 1")
    const = C.load(cfg.constitution) if cfg.constitution else None
    _persona(cfg, const)
    load_labelled(cfg.data_for("apc"))
    if cfg.apc_discriminator == "model":
        if not cfg.apc_nli_model:
            raise CharacterError("apc_discriminator model: give --apc_nli_model DIR (a local NLI classifier)")
        read_id2label(cfg.apc_nli_model, "nli")
        if cfg.apc_relevance_model:
            read_id2label(cfg.apc_relevance_model, "relevance")


def run(ctx) -> dict:
    from character.evaluation.systems import EngineJudgeAdapter, System
    from character.models import resolve

    cfg, systems = ctx.cfg, list(ctx.systems)
    name, statements, system_prompt = _persona(cfg, ctx.constitution)
    base = systems[0].model
    systems.append(System(f"prompted:{name}", base, system_prompt=system_prompt))
    prompts = random.Random(cfg.seed + 3).sample(ctx.prompts, min(cfg.apc_prompts, len(ctx.prompts)))
    answers = ctx.engines.generate([(s, s.request(p)) for s in systems for p in prompts], ctx.sampling, label="apc")
    rel_rows, nli_rows = load_labelled(cfg.data_for("apc"))
    judge_model = resolve(cfg.judge_model) if cfg.judge_model else base
    encode = ctx.embedding_judge().encode if cfg.apc_discriminator != "llm" else None
    disc = build(cfg.apc_discriminator, encode=encode, labelled=(rel_rows, nli_rows), nli_model=cfg.apc_nli_model,
                 relevance_model=cfg.apc_relevance_model, engine=EngineJudgeAdapter(ctx.engines, judge_model),
                 judge_model=judge_model)
    checks = {"relevance": accuracy(disc.relevance, rel_rows, "relevance"), "nli": accuracy(disc.nli, nli_rows, "nli")}
    n = len(prompts)
    scored = [disc.terms(statements, prompts, answers[k * n:(k + 1) * n]) for k in range(len(systems))]
    section: dict = {"persona": name, "statements": statements, "prompts": n, "reference": systems[0].name,
                     "discriminator": cfg.apc_discriminator, "discriminator_accuracy": checks, "systems": {}}
    for k, s in enumerate(systems):
        terms, rel, nli = scored[k]
        section["systems"][s.name] = summarise(terms, rel, nli, scored[0][0] if k else None, statements,
                                               cfg.bootstrap, cfg.seed)
    weak = [f"{t} {c['accuracy']:.2f} [{c['ci95'][0]:.2f}, {c['ci95'][1]:.2f}] (chance {c['chance']:.2f})"
            for t, c in checks.items() if c["chance_in_ci"]]
    section["inconclusive"] = bool(weak)
    if weak:
        section["inconclusive_reason"] = ("the APC discriminators' accuracy on the labelled set does not clear chance: "
                                          + "; ".join(weak) + ", so APC differences are discriminator noise")
    return section


# -- report -------------------------------------------------------------------------------------------------------

def report(sec: dict, results: dict) -> list[str]:
    ci = "[{:.2f}, {:.2f}]".format
    L = ["", "## APC: global persona faithfulness", "",
         f"Persona `{sec['persona']}`, {len(sec['statements'])} statements, {sec['prompts']} held-out prompts per "
         f"system, discriminator `{sec['discriminator']}`. APC sums over statements P(rel) * P(entailed) + "
         "(1 - P(rel)) * (1 - P(contradicted)) (Peng & Shang 2024); normalised = divided by the number of "
         "statements. 95% bootstrap intervals over prompts; delta = paired against the reference.", ""]
    for task, c in sec["discriminator_accuracy"].items():
        L.append(f"- {task} discriminator `{c['discriminator']}`: accuracy {c['accuracy']:.2f} {ci(*c['ci95'])} on "
                 f"{c['rows']} labelled rows ({c['held_out']}; chance {c['chance']:.2f})"
                 + (", recall " + ", ".join(f"{k} {v:.2f}" for k, v in c["recall"].items()) if "recall" in c else "")
                 + ".")
    L += ["", "| system | APC | 95% CI | normalised | 95% CI | delta vs reference | 95% CI |",
          "|---|---:|---|---:|---|---:|---|"]
    for name, s in sec["systems"].items():
        d = s.get("delta_vs_reference")
        L.append(f"| {name} | {s['apc']:.2f} | {ci(*s['ci95'])} | {s['apc_normalised']:.3f} | "
                 f"{ci(*s['normalised_ci95'])} | " + (f"{d['delta']:+.2f} | {ci(*d['ci95'])} |" if d else
                                                      "(reference) | |"))
    names = list(sec["systems"])
    L += ["", "Per statement: mean term, and (+) honoured / (-) violated / (?) unclear: mean P(entailed) - "
          "P(contradicted) with its interval above / below 0.", "",
          "| statement | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    mark = {"honoured": "+", "violated": "-", "unclear": "?"}
    for j, stmt in enumerate(sec["statements"]):
        cells = [sec["systems"][n]["statements"][j] for n in names]
        L.append(f"| {stmt} | " + " | ".join(f"{c['term']:.2f} ({mark[c['verdict']]})" for c in cells) + " |")
    if "apc.png" in results.get("plots", []):
        L += ["", "![apc](apc.png)"]
    return L


def plots(sec: dict, out: Path, plt) -> list[str]:
    names = list(sec["systems"])
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 0.35 * len(sec["statements"]) + 3))
    vals = [sec["systems"][n]["apc_normalised"] for n in names]
    err = [[v - sec["systems"][n]["normalised_ci95"][0] for v, n in zip(vals, names)],
           [sec["systems"][n]["normalised_ci95"][1] - v for v, n in zip(vals, names)]]
    ax.bar(range(len(names)), vals, yerr=err, capsize=3, color="tab:purple")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("APC / statements (95% bootstrap CI)")
    width = 0.8 / len(names)
    for k, n in enumerate(names):
        ys = [j + k * width for j in range(len(sec["statements"]))]
        bx.barh(ys, [r["term"] for r in sec["systems"][n]["statements"]], width, label=n)
    bx.set_yticks([j + width * (len(names) - 1) / 2 for j in range(len(sec["statements"]))],
                  [s[:48] + ("..." if len(s) > 48 else "") for s in sec["statements"]], fontsize=7)
    bx.invert_yaxis()
    bx.set_xlim(0, 1)
    bx.set_xlabel("mean term per statement")
    bx.legend(fontsize=7)
    flag = " (INCONCLUSIVE: discriminator near chance)" if sec.get("inconclusive") else ""
    fig.suptitle(f"APC faithfulness to {sec['persona']}{flag}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "apc.png", dpi=110)
    plt.close(fig)
    return ["apc.png"]
