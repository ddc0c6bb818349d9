"""PersonaGym (Samuel et al. 2024, "PersonaGym: Evaluating Persona Agents and LLMs"): how well each system plays
a persona on five tasks, each answer scored 1-5 against the task's rubric.

    character eval personagym --model smollm2-135m --adapter runs/demo/poeticism/merge --constitution poeticism
    character eval personagym --model M --data PersonaGym/questions/benchmark-v1 --personagym_personas 0 \
        --personagym_judges llm,/models/Llama-3.1-70B-Instruct --personagym_questions 10

The tasks: Expected Action, Toxicity Control, Linguistic Habits, Persona Consistency, Action Justification
(evals/personagym/tasks.yaml: our own question guides, rubrics with one anchor per score, generic questions).
As in the paper, per persona the relevant environments are selected first (here: the MiniLM nearest of
evals/personagym/environments.yaml; the paper asks its writer), then a question-writer model (default: --model)
writes the questions of each task; a writer whose reply does not parse as questions (a 135M model's usually does
not) is topped up with our generic questions set in those environments, and the section counts both. With
`--data DIR` (`--data personagym=DIR` beside other suites) the questions come from the official per-persona JSON
files instead (`<persona>.json`, task -> list of questions), and every system answers with the persona as its
system prompt, as in the paper.

Judges (`--personagym_judges`, one or more; the paper uses two LLMs): `probe`, ridge regression on MiniLM cosine
features of the answer against the persona, the question and the task's five rubric anchors, trained on
evals/personagym/judge_labelled.jsonl (our own answers with scores); `llm` (the --judge_model) or a model, read as
the expectation of the score over the log-probabilities of the labels "1".."5" (nothing to parse). Task score =
mean over questions (and judges); PersonaScore = mean of the five task scores; per system, with bootstrap intervals
(questions resampled within each persona and task, paired across systems). Each judge's within-1 accuracy and
Spearman correlation on the labelled set (the probe's held out, leave-one-persona-out) come with intervals, and the
section is inconclusive when the combined judge is not shown to beat chance.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from character.errors import CharacterError

TASKS = ("Expected Action", "Toxicity Control", "Linguistic Habits", "Persona Consistency", "Action Justification")
LABELS = ["1", "2", "3", "4", "5"]
PAPER = "Samuel et al. 2024, PersonaGym: Evaluating Persona Agents and LLMs"


@dataclass(frozen=True)
class Persona:
    name: str  # short, for the report
    text: str  # what the question writer and the judges read
    source: str  # constitution, or the official file it came from
    system_prompt: str | None = None  # given to every system (official personas); None: only the prompted system


# ---- shipped data ----------------------------------------------------------------------------------------------

def _data_file(name: str) -> Path:
    from character.resources import data_path

    p = data_path("evals", "personagym", name)
    if not p.is_file():
        raise CharacterError(f"{p}: PersonaGym data file missing; reinstall character or set CHARACTER_DATA")
    return p


def spec() -> dict:
    """evals/personagym/tasks.yaml, checked: the five tasks, each with key, guide, criterion, rubric 1..5, generic."""
    import yaml

    p = _data_file("tasks.yaml")
    d = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    tasks = {t.get("name"): t for t in d.get("tasks", []) if isinstance(t, dict)}
    for name in TASKS:
        t = tasks.get(name)
        if t is None:
            raise CharacterError(f"{p}: task '{name}' missing; it needs all five PersonaGym tasks")
        missing = [k for k in ("key", "guide", "criterion", "rubric", "generic") if not t.get(k)]
        if missing or sorted(t["rubric"]) != [1, 2, 3, 4, 5]:
            raise CharacterError(f"{p}: task '{name}' needs key, guide, criterion, generic and a rubric with "
                                 f"anchors 1..5 (missing: {', '.join(missing) or 'rubric anchors'})")
    for key in ("persona_prompt", "writer_template", "judge_template"):
        if key not in d:
            raise CharacterError(f"{p}: missing '{key}'")
    return {**d, "tasks": {n: tasks[n] for n in TASKS}}


def environments() -> dict[str, str]:
    import yaml

    d = yaml.safe_load(_data_file("environments.yaml").read_text(encoding="utf-8"))
    if not isinstance(d, dict) or not d:
        raise CharacterError(f"{_data_file('environments.yaml')}: expected a mapping of place -> description")
    return {str(k): str(v) for k, v in d.items()}


def labelled() -> list[dict]:
    """(persona, task, question, answer, score 1-5) rows of our own, for training and measuring the judges."""
    from character.artifacts import read_jsonl

    p = _data_file("judge_labelled.jsonl")
    rows = read_jsonl(p)
    for n, r in enumerate(rows, 1):
        if not all(k in r for k in ("persona", "task", "question", "answer", "score")) or r["task"] not in TASKS \
                or r["score"] not in (1, 2, 3, 4, 5):
            raise CharacterError(f"{p}: row {n} needs persona, question, answer, a task of {', '.join(TASKS)} "
                                 "and a score 1-5")
    return rows


def load_official(path: str, limit: int, spec_: dict) -> list[tuple[Persona, dict[str, list[str]]]]:
    """Personas and questions from PersonaGym's per-persona files (a directory of `<persona>.json`, or one file):
    each a JSON object mapping the five task keys to lists of questions. The first `limit` files by name (0: all)."""
    root = Path(path).expanduser()
    files = sorted(root.glob("*.json")) if root.is_dir() else [root] if root.is_file() else []
    if not files:
        raise CharacterError(f"personagym --data '{path}': no .json file there; give PersonaGym's questions "
                             "directory (e.g. PersonaGym/questions/benchmark-v1) or one of its <persona>.json files")
    from character.config import suggest

    by_key = {}
    for name, t in spec_["tasks"].items():
        by_key[t["key"]] = by_key[name] = name
    fmt = "a JSON object mapping each task (" + ", ".join(t["key"] for t in spec_["tasks"].values()) + \
        ") to a list of question strings"
    out = []
    for f in files[:limit or None]:
        try:
            d = json.loads(f.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CharacterError(f"{f}: not valid JSON ({e}); PersonaGym question files are {fmt}") from None
        if not isinstance(d, dict):
            raise CharacterError(f"{f}: expected {fmt}, found a JSON {type(d).__name__}")
        questions: dict[str, list[str]] = {}
        for key, qs in d.items():
            if key not in by_key:
                raise CharacterError(f"{f}: unknown task '{key}'{suggest(key, list(by_key))}; expected {fmt}")
            if not isinstance(qs, list) or not qs or not all(isinstance(q, str) and q.strip() for q in qs):
                raise CharacterError(f"{f}: '{key}' must be a non-empty list of question strings; expected {fmt}")
            questions[by_key[key]] = [q.strip() for q in qs]
        missing = [spec_["tasks"][t]["key"] for t in TASKS if t not in questions]
        if missing:
            raise CharacterError(f"{f}: task {', '.join(repr(m) for m in missing)} missing; expected {fmt}")
        text = f.stem.strip()
        if not text:
            raise CharacterError(f"{f}: empty persona; the file name is the persona description")
        prompt = spec_["persona_prompt"].format(persona=text)
        out.append((Persona(text[:60], text, str(f), prompt), {t: questions[t] for t in TASKS}))
    return out


# ---- questions ---------------------------------------------------------------------------------------------------

def select_environments(persona: str, envs: dict[str, str], k: int, encode) -> list[str]:
    """The k environments whose text is nearest the persona's (MiniLM cosine), nearest first."""
    import numpy as np

    names = list(envs)
    sims = encode([f"{n}: {envs[n]}" for n in names]) @ encode([persona])[0]
    return [names[i] for i in np.argsort(-sims, kind="stable")[:k]]


_BULLET = re.compile(r"^\s*(?:\d+\s*[.):]|[-*\u2022])\s*")


def parse_questions(text: str, n: int) -> list[str]:
    """Up to n distinct questions from a writer's reply: a JSON list of strings, else one per (numbered) line.
    A question has 5-80 words and a question mark and speaks to the persona ("you"); template echoes (`Persona:`,
    braces) and questions about "the persona" in the third person are dropped."""
    cands: list = []
    m = re.search(r"\[.*\]", text, re.S)
    if m:
        try:
            cands = [c for c in json.loads(m.group(0)) if isinstance(c, str)]
        except (json.JSONDecodeError, TypeError):
            cands = []
    if not cands:
        cands = [_BULLET.sub("", line).strip().strip('"') for line in text.splitlines()]
    out: list[str] = []
    for q in (" ".join(c.split()) for c in cands):
        if "?" in q and 5 <= len(q.split()) <= 80 and re.search(r"\byou(r|rs|rself)?\b", q, re.I) \
                and not re.search(r"[{}]|persona|places where", q, re.I) and q.lower() not in {o.lower() for o in out}:
            out.append(q)
    return out[:n]


def generic_questions(spec_: dict, task: str, envs: list[str], n: int, seed: int) -> list[str]:
    """n of our generic questions of a task, each set in one of the selected environments (seeded order)."""
    import random

    pool = [q.format(environment=e) for q in spec_["tasks"][task]["generic"] for e in envs]
    return random.Random(f"{seed}|{task}|{'|'.join(envs)}").sample(pool, min(n, len(pool)))


def write_questions(engines, writer, persona: Persona, envs: list[str], n: int, spec_: dict, sampling, seed: int):
    """Per task: n questions written by `writer` (a System) for the persona, topped up with generic ones when its
    reply yields fewer. Returns ({task: questions}, {task: {"written": k, "generic": n - k}}, the raw replies)."""
    import dataclasses

    prompts = [spec_["writer_template"].format(persona=persona.text, environments="; ".join(envs), task=task,
                                               guide=" ".join(spec_["tasks"][task]["guide"].split()), n=n)
               for task in TASKS]
    writing = dataclasses.replace(sampling, max_tokens=min(1024, 60 * n + 40), n=1)
    replies = engines.generate([(writer, writer.request(p)) for p in prompts], writing, label="personagym-writer")
    questions, counts = {}, {}
    for task, reply in zip(TASKS, replies):
        mine = parse_questions(reply, n)
        extra = [q for q in generic_questions(spec_, task, envs, n + len(mine), seed) if q not in mine]
        questions[task] = mine + extra[:n - len(mine)]
        counts[task] = {"written": len(mine), "generic": len(questions[task]) - len(mine)}
    return questions, counts, dict(zip(TASKS, replies))


# ---- judges ------------------------------------------------------------------------------------------------------

class Memo:
    """An encoder that embeds each distinct text once (the probe's folds and the answers share texts)."""

    def __init__(self, encode):
        self.encode, self.vecs = encode, {}

    def __call__(self, texts):
        import numpy as np

        todo = [t for t in dict.fromkeys(texts) if t not in self.vecs]
        if todo:
            self.vecs.update(zip(todo, self.encode(todo)))
        return np.stack([self.vecs[t] for t in texts])


class ProbeJudge:
    """Ridge regression from MiniLM cosine features to the 1-5 score: the answer against the persona, the question
    and each of the task's five rubric anchors, plus the answer's log length, each also per task, and the task."""

    name = "probe"

    def __init__(self, encode, spec_: dict, alpha: float = 3.0):
        self.encode, self.alpha = encode if isinstance(encode, Memo) else Memo(encode), alpha
        self.anchors = {t: encode([" ".join(spec_["tasks"][t]["rubric"][k].split()) for k in range(1, 6)])
                        for t in TASKS}
        self.w = None

    def features(self, items: list[dict]):
        import numpy as np

        a = self.encode([it["answer"] or " " for it in items])
        p = self.encode([it["persona"] for it in items])
        q = self.encode([it["question"] for it in items])
        anchor = np.stack([self.anchors[it["task"]] @ a[i] for i, it in enumerate(items)])
        words = np.log1p([len(it["answer"].split()) for it in items])
        base = np.column_stack([(a * p).sum(1), (a * q).sum(1), words, anchor])
        onehot = np.array([[it["task"] == t for t in TASKS] for it in items], dtype=float)
        return np.column_stack([base, *(base * onehot[:, [j]] for j in range(len(TASKS))), onehot])

    def fit(self, items: list[dict], scores) -> ProbeJudge:
        import numpy as np

        y = np.asarray(scores, dtype=float)
        if len(items) < 10 or len(set(y)) < 2:
            raise CharacterError("personagym probe: the labelled set needs at least 10 rows with different scores "
                                 "(evals/personagym/judge_labelled.jsonl)")
        x = self.features(items)
        self.mu, self.sd = x.mean(0), x.std(0) + 1e-9
        z = (x - self.mu) / self.sd
        self.intercept = y.mean()
        self.w = np.linalg.solve(z.T @ z + self.alpha * np.eye(z.shape[1]), z.T @ (y - self.intercept))
        return self

    def score(self, items: list[dict]) -> list[float]:
        import numpy as np

        assert self.w is not None, "fit the probe first"
        if not items:
            return []
        z = (self.features(items) - self.mu) / self.sd
        return [float(s) for s in np.clip(z @ self.w + self.intercept, 1.0, 5.0)]


class RubricLLMJudge:
    """An LLM reads the rubric prompt; its score is the expectation over the labels 1..5 of their probabilities as
    its reply (the label log-probs, renormalised over the five), like LLMJudge reads A and B."""

    def __init__(self, engine, spec_: dict, name: str = "llm", model: str | None = None):
        self.engine, self.spec, self.name, self.model = engine, spec_, name, model

    def prompt(self, it: dict) -> str:
        t = self.spec["tasks"][it["task"]]
        anchors = "\n".join(f"{k}: {t['rubric'][k]}" for k in range(1, 6))
        return self.spec["judge_template"].format(task=it["task"], criterion=t["criterion"], persona=it["persona"],
                                                  question=it["question"], answer=it["answer"], anchors=anchors)

    def score(self, items: list[dict]) -> list[float]:
        import math

        from character.engine.base import Request

        if not items:
            return []
        reqs = [Request(messages=[{"role": "user", "content": self.prompt(it)}]) for it in items]
        out = []
        for lp in self.engine.score(reqs, [LABELS] * len(reqs)):
            if len(lp) != 5 or any(math.isnan(x) for x in lp) or not any(math.isfinite(x) for x in lp):
                raise CharacterError(f"personagym judge '{self.name}': no finite log-probabilities for the labels "
                                     "1..5; use a model whose tokenizer spells each digit as one token, or `probe`")
            top = max(lp)
            p = [math.exp(x - top) for x in lp]
            out.append(sum((k + 1) * v for k, v in enumerate(p)) / sum(p))
        return out


def probe_heldout(rows: list[dict], encode, spec_: dict) -> list[float]:
    """The probe's score of each labelled row by a probe trained without that row's persona."""
    preds, encode = [0.0] * len(rows), encode if isinstance(encode, Memo) else Memo(encode)
    for persona in dict.fromkeys(r["persona"] for r in rows):
        train = [r for r in rows if r["persona"] != persona]
        test = [i for i, r in enumerate(rows) if r["persona"] == persona]
        probe = ProbeJudge(encode, spec_).fit(train, [r["score"] for r in train])
        for i, s in zip(test, probe.score([rows[i] for i in test])):
            preds[i] = s
    return preds


def judge_accuracy(pred, truth, clusters, n_boot: int = 1000, seed: int = 0) -> dict:
    """Within-1 accuracy of the rounded scores and Spearman correlation with the labels, each with a percentile
    bootstrap interval over clusters (the labelled questions; their answers are not independent). Chance for
    within-1 is the agreement expected if the judge's scores were unrelated to the labels (its own score mix against
    the labels' mix); for Spearman 0. `chance_in_ci`: either interval reaches chance."""
    import numpy as np

    from character.evaluation.scoring import interval, spearman

    pred, truth = np.asarray(pred, dtype=float), np.asarray(truth, dtype=float)
    rounded = np.clip(np.rint(pred), 1, 5)
    hit = np.abs(rounded - truth) <= 1
    chance = float((np.abs(rounded[:, None] - truth[None, :]) <= 1).mean())
    keys = list(dict.fromkeys(clusters))
    members = [np.array([i for i, c in enumerate(clusters) if c == k]) for k in keys]
    rng = np.random.default_rng(seed)
    w1, rho = np.empty(n_boot), np.empty(n_boot)
    for b in range(n_boot):
        idx = np.concatenate([members[i] for i in rng.integers(0, len(keys), len(keys))])
        w1[b] = hit[idx].mean()
        r = spearman(pred[idx], truth[idx])
        rho[b] = 0.0 if np.isnan(r) else r
    w_lo, w_hi = interval(w1)
    r_lo, r_hi = interval(rho)
    return {"rows": int(len(truth)), "within1": float(hit.mean()), "within1_ci95": [float(w_lo), float(w_hi)],
            "within1_chance": chance, "spearman": spearman(pred, truth), "spearman_ci95": [float(r_lo), float(r_hi)],
            "mae": float(np.abs(pred - truth).mean()),
            "chance_in_ci": bool(w_lo <= chance or r_lo <= 0.0)}


# ---- aggregation -------------------------------------------------------------------------------------------------

def aggregate(table: dict, n_boot: int = 1000, seed: int = 0) -> dict:
    """`table[system][persona][task]` = per-question scores (already averaged over judges); every system answered
    the same questions. Task score = mean over personas of the mean over questions; PersonaScore = mean of the task
    scores. Intervals: percentile bootstrap resampling questions within each (persona, task), the same draws for
    every system, so the differences to the first system (the reference) are paired."""
    import numpy as np

    from character.evaluation.scoring import interval

    systems = list(table)
    ref = systems[0]
    personas = list(table[ref])
    arr = {s: {(p, t): np.asarray(table[s][p][t], dtype=float) for p in personas for t in TASKS} for s in systems}
    rng = np.random.default_rng(seed)
    task_point = np.array([[np.mean([arr[s][(p, t)].mean() for p in personas]) for t in TASKS] for s in systems])
    task_boot = np.zeros((n_boot, len(systems), len(TASKS)))
    for j, t in enumerate(TASKS):
        for p in personas:
            n = len(arr[ref][(p, t)])
            idx = rng.integers(0, n, (n_boot, n))
            for k, s in enumerate(systems):
                task_boot[:, k, j] += arr[s][(p, t)][idx].mean(axis=1) / len(personas)
    score_point, score_boot = task_point.mean(axis=1), task_boot.mean(axis=2)
    out = {}
    for k, s in enumerate(systems):
        lo, hi = interval(score_boot[:, k])
        tlo, thi = interval(task_boot[:, k, :])
        entry = {"persona_score": float(score_point[k]), "ci95": [float(lo), float(hi)],
                 "tasks": {t: {"score": float(task_point[k, j]), "ci95": [float(tlo[j]), float(thi[j])],
                               "questions": sum(len(arr[s][(p, t)]) for p in personas)} for j, t in enumerate(TASKS)}}
        if k:
            d_lo, d_hi = interval(score_boot[:, k] - score_boot[:, 0])
            t_lo, t_hi = interval(task_boot[:, k, :] - task_boot[:, 0, :])
            entry["delta_vs_reference"] = {
                "persona_score": {"delta": float(score_point[k] - score_point[0]), "ci95": [float(d_lo), float(d_hi)]},
                "tasks": {t: {"delta": float(task_point[k, j] - task_point[0, j]),
                              "ci95": [float(t_lo[j]), float(t_hi[j])]} for j, t in enumerate(TASKS)}}
        out[s] = entry
    return out


def judge_answers(judges: list, items: list[dict]) -> list[float]:
    """Each item's score averaged over the judges."""
    per = []
    for j in judges:
        s = j.score(items)
        if len(s) != len(items):
            raise CharacterError(f"personagym judge '{j.name}' scored {len(s)} of {len(items)} answers")
        per.append(s)
    return [sum(col) / len(col) for col in zip(*per)]


# ---- the suite ---------------------------------------------------------------------------------------------------

def constitution_persona(const) -> str:
    """A constitution as a persona description: its description, then its trait statements."""
    text = " ".join([const.description or "", *(t.trait for t in const.traits)]).strip()
    if not text:
        raise CharacterError(f"constitution '{const.name}': empty persona (no description, no traits)")
    return text


def check(cfg) -> None:
    """Before any engine starts: the numbers, the judges and writer as models, a persona, the --data layout."""
    from character.models import resolve

    for name in ("personagym_questions", "personagym_environments"):
        if getattr(cfg, name) < 1:
            raise CharacterError(f"{name} must be >= 1")
    if cfg.personagym_personas < 0:
        raise CharacterError("personagym_personas must be >= 0 (0: every persona file under --data)")
    if not cfg.personagym_judges:
        raise CharacterError("personagym_judges is empty; give probe, llm, or a judge model (several: comma-separated)")
    for j in cfg.personagym_judges:
        if j not in ("probe", "llm"):
            resolve(j)
    if cfg.personagym_writer:
        resolve(cfg.personagym_writer)
    if cfg.data_for("personagym"):
        load_official(cfg.data_for("personagym"), cfg.personagym_personas, spec())
    elif not cfg.constitution:
        raise CharacterError("personagym needs a persona: give --constitution NAME, or --data with PersonaGym's "
                             "per-persona question files")


def _judges(ctx, spec_: dict, encode) -> list:
    from character.evaluation.systems import EngineJudgeAdapter
    from character.models import resolve

    cfg, out = ctx.cfg, []
    for name in dict.fromkeys(cfg.personagym_judges):
        if name == "probe":
            rows = labelled()
            out.append(ProbeJudge(encode, spec_).fit(rows, [r["score"] for r in rows]))
            continue
        if name == "llm":
            model = resolve(cfg.judge_model) if cfg.judge_model else ctx.systems[0].model
        else:
            model = resolve(name)
        out.append(RubricLLMJudge(EngineJudgeAdapter(ctx.engines, model), spec_, name=name, model=model))
    return out


def run(ctx) -> dict:
    import dataclasses

    from character.evaluation.robustness import persona_prompt
    from character.evaluation.systems import System
    from character.models import resolve

    cfg, n, data = ctx.cfg, ctx.cfg.personagym_questions, ctx.cfg.data_for("personagym")
    if not data and ctx.constitution is None:
        raise CharacterError("personagym needs a persona: give --constitution NAME, or --data with PersonaGym's "
                             "per-persona question files")
    spec_ = spec()
    encode = Memo(ctx.embedding_judge().encode)
    systems, reference_model = list(ctx.systems), ctx.systems[0].model
    personas, info, writer_model = [], [], None
    if data:
        for persona, qs in load_official(data, cfg.personagym_personas, spec_):
            personas.append((persona, {t: q[:n] for t, q in qs.items()}))
            info.append({"name": persona.name, "source": persona.source, "environments": None,
                         "questions": {t: {"official": len(q[:n])} for t, q in qs.items()}})
    else:
        const = ctx.constitution
        persona = Persona(const.name, constitution_persona(const), "constitution")
        envs = select_environments(persona.text, environments(), cfg.personagym_environments, encode)
        writer_model = resolve(cfg.personagym_writer) if cfg.personagym_writer else reference_model
        qs, counts, _ = write_questions(ctx.engines, System("writer", writer_model), persona, envs, n, spec_,
                                        ctx.sampling, cfg.seed)
        personas.append((persona, qs))
        info.append({"name": persona.name, "source": "constitution", "environments": envs, "questions": counts})
        # the untrained reference told to play the persona: what a system prompt alone achieves
        systems.append(System(f"prompted:{const.name}", reference_model,
                              system_prompt=persona_prompt(const, cfg.persona_prompt)))

    requests, keys = [], []
    for pi, (persona, qs) in enumerate(personas):
        for s in systems:
            shown = dataclasses.replace(s, system_prompt=persona.system_prompt) if persona.system_prompt else s
            for t in TASKS:
                for q in qs[t]:
                    requests.append((shown, shown.request(q)))
                    keys.append((s.name, pi, t, q))
    answers = ctx.engines.generate(requests, ctx.sampling, label="personagym")

    judges = _judges(ctx, spec_, encode)
    items = [{"persona": personas[pi][0].text, "task": t, "question": q, "answer": a}
             for (_, pi, t, q), a in zip(keys, answers)]
    scores = judge_answers(judges, items)
    table: dict = {s.name: {pi: {t: [] for t in TASKS} for pi in range(len(personas))} for s in systems}
    examples: dict = {s.name: {} for s in systems}
    for (name, pi, t, q), it, sc in zip(keys, items, scores):
        table[name][pi][t].append(sc)
        if pi == 0 and t not in examples[name]:
            examples[name][t] = {"question": q, "answer": it["answer"][:400], "score": round(sc, 3)}

    rows = labelled()
    truth = [r["score"] for r in rows]
    clusters = [(r["persona"], r["task"]) for r in rows]
    preds = {j.name: probe_heldout(rows, encode, spec_) if isinstance(j, ProbeJudge) else j.score(rows)
             for j in judges}
    accuracy = {name: judge_accuracy(p, truth, clusters, cfg.bootstrap, cfg.seed) for name, p in preds.items()}
    combined = accuracy[judges[0].name]
    if len(judges) > 1:
        combined = accuracy["combined"] = judge_accuracy([sum(c) / len(c) for c in zip(*preds.values())], truth,
                                                         clusters, cfg.bootstrap, cfg.seed)
    section = {
        "paper": PAPER, "reference": systems[0].name, "questions_per_task": n, "personas": info,
        "writer": writer_model, "data": data,
        "judges": [{"name": j.name, "kind": "probe" if isinstance(j, ProbeJudge) else "llm",
                    "model": getattr(j, "model", cfg.embedding_model)} for j in judges],
        "judge_accuracy": accuracy,
        "systems": aggregate(table, cfg.bootstrap, cfg.seed),
        "examples": examples,
        "inconclusive": combined["chance_in_ci"],
    }
    if combined["chance_in_ci"]:
        section["inconclusive_reason"] = (
            f"the judge's agreement with the labelled scores does not exclude chance: within-1 "
            f"{combined['within1']:.2f} {_ci(combined['within1_ci95'])} (chance {combined['within1_chance']:.2f}), "
            f"Spearman {combined['spearman']:.2f} {_ci(combined['spearman_ci95'])}; the PersonaScores cannot be "
            "told from judge noise")
    return section


# ---- report and plot ---------------------------------------------------------------------------------------------

def _ci(ci) -> str:
    return f"[{ci[0]:.2f}, {ci[1]:.2f}]"


def report_section(sec: dict, results: dict) -> list[str]:
    L = ["## PersonaGym", ""]
    L.append(f"{sec['paper']}. Each answer scored 1-5 against its task's rubric; task score = mean over "
             f"questions and judges, PersonaScore = mean of the five tasks; 95% bootstrap intervals over questions.")
    L.append("")
    for p in sec["personas"]:
        counts = p["questions"]
        if p["environments"] is not None:
            written = sum(c["written"] for c in counts.values())
            total = sum(c["written"] + c["generic"] for c in counts.values())
            why = (" (the rest are our generic questions: the writer's reply did not parse as questions)"
                   if written < total else "")
            L.append(f"Persona `{p['name']}` ({p['source']}), environments: {', '.join(p['environments'])}. "
                     f"Questions written by `{sec['writer']}`: {written} of {total}{why}.")
        else:
            total = sum(c["official"] for c in counts.values())
            L.append(f"Persona \"{p['name']}\": {total} questions from the official file `{p['source']}`.")
    L.append("")
    for name, a in sec["judge_accuracy"].items():
        how = "held out by persona" if name == "probe" else "all rows"
        L.append(f"Judge `{name}` on the labelled set ({a['rows']} answers, {how}): within-1 accuracy "
                 f"{a['within1']:.2f} {_ci(a['within1_ci95'])} (chance {a['within1_chance']:.2f}), Spearman "
                 f"{a['spearman']:.2f} {_ci(a['spearman_ci95'])}, mean absolute error {a['mae']:.2f}.")
    L += ["", "| system | " + " | ".join(TASKS) + " | **PersonaScore** | vs " + sec["reference"] + " |",
          "|---" * (len(TASKS) + 3) + "|"]
    for name, s in sec["systems"].items():
        cells = [f"{s['tasks'][t]['score']:.2f} {_ci(s['tasks'][t]['ci95'])}" for t in TASKS]
        d = s.get("delta_vs_reference", {}).get("persona_score")
        delta = f"{d['delta']:+.2f} {_ci(d['ci95'])}" if d else ""
        L.append(f"| `{name}` | " + " | ".join(cells) + f" | **{s['persona_score']:.2f}** {_ci(s['ci95'])} | {delta} |")
    return L + [""]


def plots(sec: dict, out: Path, plt) -> list[str]:
    systems = list(sec["systems"])
    labels = [*TASKS, "PersonaScore"]
    fig, ax = plt.subplots(figsize=(max(7, 1.4 * len(labels) * max(1, len(systems)) / 2), 3.8))
    width = 0.8 / len(systems)
    for k, name in enumerate(systems):
        s = sec["systems"][name]
        vals = [s["tasks"][t]["score"] for t in TASKS] + [s["persona_score"]]
        cis = [s["tasks"][t]["ci95"] for t in TASKS] + [s["ci95"]]
        err = [[v - c[0] for v, c in zip(vals, cis)], [c[1] - v for v, c in zip(vals, cis)]]
        ax.bar([i + k * width for i in range(len(labels))], vals, width, yerr=err, capsize=2, label=name)
    ax.set_xticks([i + width * (len(systems) - 1) / 2 for i in range(len(labels))],
                  [lab.replace(" ", "\n") for lab in labels], fontsize=8)
    ax.set_ylim(1, 5)
    ax.set_ylabel("rubric score 1-5 (95% CI)")
    ax.set_title("PersonaGym" + (" (inconclusive: judge not shown to beat chance)" if sec.get("inconclusive") else ""))
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "personagym.png", dpi=110)
    plt.close(fig)
    return ["personagym.png"]
