"""Reasoning under a persona: what playing a character or a socio-demographic persona costs in reasoning.

    character eval reasoning --model smollm2-135m --adapter runs/demo/poeticism/merge --constitution poeticism

After Gupta et al., ICLR 2024, "Bias Runs Deep: Implicit Reasoning Biases in Persona-Assigned LLMs". The same
questions (evals/reasoning/questions.jsonl, 160 of our own over arithmetic, logic, science and commonsense, or
`--data`: MMLU CSV files `question, A, B, C, D, answer` or BBH JSON files `{"examples": [{"input", "target"}]}`, a
file or a directory of them) are answered greedily with chain of thought by:

- the reference: the first system (the base) with no persona;
- each trained system (adapter), with no system prompt;
- the base with the constitution as its system prompt (with --constitution);
- the base with each persona of evals/reasoning/personas.yaml in a system prompt. Question i of persona j is asked
  under template (i + j) mod T, so each template is used equally often: a persona's accuracy estimates the paper's
  mean over templates at 1/T of the generation, and each question has one answer per persona for the paired test.

The final answer is read from "The answer is (X)" and common variants (`extract_answer`); a reply without one is
unparseable and counts as wrong. Per system: accuracy (Wilson 95%), its difference to the reference and the
relative drop (paired bootstrap over questions), the abstention rate (replies that decline: a pattern list, and
with --judge llm a yes/no log-prob check) and an exact McNemar test against the reference, paired by question;
the personas significantly worse are counted after Holm adjustment over the personas (control excluded).

--reasoning_ensemble follows Jekyll & Hyde (Kim et al. 2024, "Persona is a Double-edged Sword"): per question the
LLM judge (--judge_model) sees a system's solution and the reference's in both orders and the summed A/B log-odds
pick one (a position preference cancels); reported: the ensemble's accuracy and its gain over each side alone.

The extractor and the abstention checks are scored on evals/reasoning/labelled_replies.jsonl (written together with
the patterns, so those two figures are in-sample), the ensemble judge on right-versus-wrong solutions to the shipped
questions; a check whose 95% interval reaches chance (the share of the labelled set's most common label; 0.5 for
the judge's pairs) makes the section inconclusive.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from character.errors import CharacterError
from character.evaluation.scoring import bootstrap_mean_diff, holm, wilson

HELP = "chain-of-thought accuracy under personas: drops, abstentions, McNemar (Bias Runs Deep)"
PAPER = ("Gupta et al., ICLR 2024, Bias Runs Deep: Implicit Reasoning Biases in Persona-Assigned LLMs; ensemble: "
         "Kim et al. 2024, Jekyll & Hyde")
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
ALPHA = 0.05
CONTROL = "control"


# ---- data ---------------------------------------------------------------------------------------------------------

def _file(name: str) -> Path:
    from character.resources import data_path

    p = data_path("evals", "reasoning", name)
    if not p.is_file():
        raise CharacterError(f"{p}: reasoning data file missing; reinstall character or set CHARACTER_DATA")
    return p


def _yaml(name: str) -> dict:
    import yaml

    d = yaml.safe_load(_file(name).read_text(encoding="utf-8")) or {}
    if not isinstance(d, dict):
        raise CharacterError(f"{_file(name)}: expected a mapping")
    return d


def settings() -> dict:
    """personas.yaml: `templates` [{id, text with {persona}}] and `personas` [{id, group, text}]."""
    d, p = _yaml("personas.yaml"), _file("personas.yaml")
    for key, fields in (("templates", ("id", "text")), ("personas", ("id", "group", "text"))):
        rows = d.get(key)
        if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) and all(f in r for f in fields)
                                                              for r in rows):
            raise CharacterError(f"{p}: '{key}' must be a non-empty list of {{{', '.join(fields)}}}")
        ids = [r["id"] for r in rows]
        if len(set(ids)) != len(ids):
            raise CharacterError(f"{p}: '{key}' ids must be unique")
    for t in d["templates"]:
        if "{persona}" not in t["text"]:
            raise CharacterError(f"{p}: template '{t['id']}' must contain {{persona}}")
    return d


def prompts() -> dict:
    d = _yaml("prompts.yaml")
    for key in ("instruction_choice", "instruction_text", "abstention_patterns", "abstention_judge", "ensemble_judge"):
        if key not in d:
            raise CharacterError(f"{_file('prompts.yaml')}: missing '{key}'")
    try:
        d["abstention_regex"] = [re.compile(p, re.I) for p in d["abstention_patterns"]]
    except re.error as e:
        raise CharacterError(f"{_file('prompts.yaml')}: abstention pattern '{e.pattern}' is not a regex ({e})") from None
    return d


def _rows(name: str) -> list[dict]:
    from character.artifacts import read_jsonl

    return read_jsonl(_file(name))


def make_question(qid: str, category: str, text: str, choices: list[str] | None, answer, where: str) -> dict:
    """A question as the suite uses it. `kind` is `letter` (the answer is an option letter: listed `choices`, or
    options written into the text as "(A) ...", as BBH does) or `text` (a word or number, compared normalised)."""
    if choices is not None:
        if len(choices) < 2 or len(choices) > len(LETTERS):
            raise CharacterError(f"{where}: needs 2 to 26 choices")
        letters = LETTERS[:len(choices)]
        a = str(answer).strip()
        a = letters[int(a)] if a.isdigit() and int(a) < len(choices) else a.strip("()").upper()
        if a not in letters:
            raise CharacterError(f"{where}: answer '{answer}' is not one of the options {', '.join(letters)}")
        return {"id": qid, "category": category, "question": text, "choices": list(choices), "answer": a,
                "kind": "letter", "letters": letters}
    m = re.fullmatch(r"\(([A-Z])\)", str(answer).strip())
    if m:
        letters = "".join(dict.fromkeys(re.findall(r"^\s*\(([A-Z])\)", text, re.M))) or LETTERS
        return {"id": qid, "category": category, "question": text, "choices": None, "answer": m.group(1),
                "kind": "letter", "letters": letters}
    return {"id": qid, "category": category, "question": text, "choices": None, "answer": str(answer).strip(),
            "kind": "text", "letters": ""}


def shipped_questions() -> list[dict]:
    out = []
    for n, r in enumerate(_rows("questions.jsonl"), 1):
        where = f"{_file('questions.jsonl')}: row {n}"
        if not all(k in r for k in ("question", "choices", "answer")):
            raise CharacterError(f"{where}: each row needs question, choices (a list) and answer (a letter)")
        out.append(make_question(r.get("id", str(n)), r.get("category", "general"), r["question"], r["choices"],
                                 r["answer"], where))
    return out


def load_data(path: str, strict: bool = True) -> list[dict]:
    """Questions from official files: MMLU CSV (question, A, B, C, D, answer; a header row is skipped) and BBH JSON
    ({"examples": [{"input", "target"}]}), a file or the files of a directory (not searched below it: point at
    MMLU's data/test). Each file's name is its category. A file in neither layout is an error when `strict`, else
    skipped (another suite's file under a shared --data)."""
    root = Path(path).expanduser()
    if not root.exists():
        raise CharacterError(f"data '{path}': not found; give an MMLU .csv, a BBH .json or a directory of them")
    files = sorted(f for f in root.iterdir() if f.suffix in (".csv", ".json")) if root.is_dir() else [root]
    out: list[dict] = []
    for f in files:
        rows = _mmlu(f) if f.suffix == ".csv" else _bbh(f, strict)
        if rows is None and strict:
            raise CharacterError(f"data '{f}': not an MMLU CSV (question, A, B, C, D, answer) or BBH JSON "
                                 '({"examples": [{"input", "target"}]}) file')
        out += rows or []
    if strict and not out:
        raise CharacterError(f"data '{path}': no questions found; give MMLU .csv or BBH .json files")
    return out


def _mmlu(f: Path) -> list[dict]:
    import csv

    with f.open(encoding="utf-8", newline="") as fh:
        rows = [r for r in csv.reader(fh) if any(c.strip() for c in r)]
    if rows and rows[0][-1].strip().lower() == "answer":
        rows = rows[1:]
    category = re.sub(r"_(test|dev|val)$", "", f.stem)
    out = []
    for n, r in enumerate(rows, 1):
        if len(r) != 6:
            raise CharacterError(f"data '{f}': row {n} has {len(r)} fields; an MMLU CSV row is question, A, B, C, D, "
                                 "answer")
        out.append(make_question(f"{category}-{n}", category, r[0], r[1:5], r[5], f"data '{f}': row {n}"))
    return out


def _bbh(f: Path, strict: bool) -> list[dict] | None:
    import json

    try:
        d = json.loads(f.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CharacterError(f"data '{f}': not valid JSON ({e.msg}, line {e.lineno})") from None
    if not isinstance(d, dict) or not isinstance(d.get("examples"), list):
        return None
    out = []
    for n, ex in enumerate(d["examples"], 1):
        if not (isinstance(ex, dict) and isinstance(ex.get("input"), str) and isinstance(ex.get("target"), str)):
            raise CharacterError(f"data '{f}': example {n} needs string 'input' and 'target'")
        out.append(make_question(f"{f.stem}-{n}", f.stem, ex["input"], None, ex["target"], f"data '{f}': example {n}"))
    return out


def choose_questions(questions: list[dict], n: int, seed: int) -> list[dict]:
    """`n` questions (0 = all) spread over the categories: each category shuffled by the seed, then taken in turn."""
    import random

    if n <= 0 or n >= len(questions):
        return list(questions)
    rng = random.Random(seed)
    by_cat: dict[str, list[dict]] = {}
    for q in questions:
        by_cat.setdefault(q["category"], []).append(q)
    pools = [rng.sample(qs, len(qs)) for qs in by_cat.values()]
    out: list[dict] = []
    while len(out) < n:
        for pool in pools:
            if pool and len(out) < n:
                out.append(pool.pop())
    return out


def select(rows: list[dict], wanted: list[str], what: str, by_group: bool = False) -> list[dict]:
    """The rows named by id (or, for personas, by group); all when `wanted` is empty. Unknown names are errors."""
    from character.config import suggest

    if not wanted:
        return list(rows)
    known = [r["id"] for r in rows] + ([r["group"] for r in rows] if by_group else [])
    for w in wanted:
        if w not in known:
            raise CharacterError(f"reasoning: {what} '{w}' is unknown{suggest(w, known)}; known: "
                                 f"{', '.join(dict.fromkeys(known))}")
    return [r for r in rows if r["id"] in wanted or (by_group and r["group"] in wanted)]


# ---- reading replies ---------------------------------------------------------------------------------------------

_PHRASE = r"(?i:(?:final |correct |right |best )?(?:answer|option|choice)\s*(?:is|would be|will be|should be|=|:)\s*:?\s*" \
          r"(?:option |choice )?)"
_IN_PARENS = re.compile(_PHRASE + r"[*\"'`]*\(([A-Za-z])\)")
# a bare capital letter ("The answer is B.") only before punctuation or the end, so "the answer is A cat" is not A
_BARE = re.compile(_PHRASE + r"[*\"'`]*([A-Z])(?=[*\"'`]*(?:[.,;:!)\]]|\s*$|\s*\n|\s+\())", re.M)
_MARKER = re.compile(r"^\s*[*_]*\(?([A-Z])\)", re.M)  # a line opening with "(C)" or "C)"
_TEXT = re.compile(_PHRASE + r"(.+)")


def _norm(s: str) -> str:
    s = re.sub(r"[*_`\"]", "", s).strip().lower()
    s = re.split(r"\.\s|\n|, |;", s + " ")[0].strip().rstrip(".!").strip()
    if s.startswith("(") and s.endswith(")"):
        s = s[1:-1].strip()
    return re.sub(r"\s+", " ", s)


def extract_answer(reply: str, q: dict) -> str | None:
    """The final answer in a reply: a letter for `letter` questions, normalised text for `text` ones, or None.

    Letters, in this order: the last "answer is (X)" / "answer: X" / "the correct option is X" naming a valid
    option letter (placeholders like "(X)" are skipped); else the option named by every line that opens with an
    option marker, if they name one; else the option whose text follows "the answer is"."""
    if q["kind"] == "text":
        found = _TEXT.findall(reply)
        return (_norm(found[-1]) or None) if found else None
    valid = q["letters"]
    hits = [(m.start(), m.group(1).upper()) for rx in (_IN_PARENS, _BARE) for m in rx.finditer(reply)]
    hits = [h for h in sorted(hits) if h[1] in valid]
    if hits:
        return hits[-1][1]
    markers = {m.group(1) for m in _MARKER.finditer(reply)} & set(valid)
    if len(markers) == 1:
        return markers.pop()
    if q["choices"]:
        said = [_norm(t) for t in _TEXT.findall(reply)]
        options = [_norm(c) for c in q["choices"]]
        for s in reversed(said):
            match = [k for k, o in enumerate(options) if o and re.match(re.escape(o) + r"(?![a-z0-9])", s)]
            if match:
                best = max(match, key=lambda k: len(options[k]))
                if sum(len(options[k]) == len(options[best]) for k in match) == 1:
                    return valid[best]
    return None


def is_correct(extracted: str | None, q: dict) -> bool:
    if extracted is None:
        return False
    return extracted == (q["answer"] if q["kind"] == "letter" else _norm(q["answer"]))


def abstains(reply: str, patterns) -> bool:
    """Does the reply decline to answer? `patterns`: compiled regexes (prompts()["abstention_regex"])."""
    return any(p.search(reply) for p in patterns)


def question_text(q: dict, p: dict) -> str:
    body = q["question"].rstrip()
    if q["choices"]:
        body += "\n\nOptions:\n" + "\n".join(f"({q['letters'][k]}) {c}" for k, c in enumerate(q["choices"]))
    return f"{body}\n\n{p['instruction_choice'] if q['kind'] == 'letter' else p['instruction_text']}"


# ---- statistics --------------------------------------------------------------------------------------------------

def mcnemar(reference: list[bool], system: list[bool]) -> dict:
    """Exact McNemar test, paired by question: of the discordant questions (right for one side only), how many
    went to the reference; two-sided binomial p-value at 1/2."""
    if len(reference) != len(system):
        raise ValueError("mcnemar needs one answer per question from both sides")
    b = sum(r and not s for r, s in zip(reference, system))
    c = sum(s and not r for r, s in zip(reference, system))
    n = b + c
    p = 1.0 if n == 0 else min(1.0, 2 * sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2 ** n)
    return {"reference_only": b, "system_only": c, "p_value": p}


def drop(reference: list[bool], system: list[bool], n_boot: int, seed: int) -> dict:
    """System minus reference accuracy, and the relative drop (ref - sys) / ref, each with a paired-bootstrap 95%
    interval over questions (resamples where the reference scores 0 have no relative drop and are left out)."""
    import numpy as np

    from character.evaluation.scoring import interval

    r, s = np.asarray(reference, dtype=float), np.asarray(system, dtype=float)
    d, lo, hi = bootstrap_mean_diff(r, s, n_boot=n_boot, seed=seed)
    out = {"delta": {"delta": d, "ci95": [lo, hi]}, "relative_drop": None}
    if r.mean() > 0:
        idx = np.random.default_rng(seed).integers(0, len(r), (n_boot, len(r)))
        rm, sm = r[idx].mean(axis=1), s[idx].mean(axis=1)
        ratios = (rm[rm > 0] - sm[rm > 0]) / rm[rm > 0]
        rlo, rhi = interval(ratios)
        out["relative_drop"] = {"value": float((r.mean() - s.mean()) / r.mean()), "ci95": [float(rlo), float(rhi)]}
    return out


def scorer_check(name: str, correct: list[bool], labels: list, chance: float | None = None) -> dict:
    """A scorer's accuracy on a labelled set; chance is the share of its most common label unless given."""
    from collections import Counter

    n, k = len(correct), sum(correct)
    if n == 0:
        raise CharacterError(f"reasoning: the labelled set for the {name} check is empty")
    chance = chance if chance is not None else Counter(map(str, labels)).most_common(1)[0][1] / n
    lo, hi = wilson(k, n)
    return {"check": name, "cases": n, "correct": k, "accuracy": k / n, "ci95": [lo, hi], "chance": chance,
            "at_chance": bool(lo <= chance)}


def labelled_question(row: dict) -> dict:
    """The question a labelled reply answers: its options (letters) or its free-form target."""
    if row.get("choices"):
        return make_question("labelled", "labelled", "", row["choices"], "A", "labelled_replies.jsonl")
    return make_question("labelled", "labelled", "", None, row["target"], "labelled_replies.jsonl")


def reader_checks(p: dict) -> dict:
    """The extractor and the abstention patterns on the labelled replies."""
    rows = _rows("labelled_replies.jsonl")
    got = [extract_answer(r["reply"], labelled_question(r)) for r in rows]
    want = [r["extracted"] if r["extracted"] is None or r.get("choices") else _norm(r["extracted"]) for r in rows]
    flagged = [abstains(r["reply"], p["abstention_regex"]) for r in rows]
    return {"extraction": scorer_check("answer extraction", [g == w for g, w in zip(got, want)], want),
            "abstention_patterns": scorer_check("abstention patterns", [f == r["abstains"] for f, r in zip(flagged, rows)],
                                         [r["abstains"] for r in rows])}


# ---- the LLM judge's two questions -------------------------------------------------------------------------------

def _log_odds(scorer, texts: list[str], labels: list[str]) -> list[float]:
    """log p(labels[0]) - log p(labels[1]) as the judge's reply to each text."""
    from character.engine.base import Request

    if not texts:
        return []
    scores = scorer.score([Request(messages=[{"role": "user", "content": t}]) for t in texts], [labels] * len(texts))
    return [s[0] - s[1] for s in scores]


def llm_abstains(scorer, template: str, replies: list[str]) -> list[bool]:
    """Yes/no check per reply, calibrated: the Yes-No log-odds of an empty reply is subtracted."""
    odds = _log_odds(scorer, [template.format(reply=r) for r in replies] + [template.format(reply="")], ["Yes", "No"])
    base = odds.pop()
    return [o - base > 0 for o in odds]


def judge_orders(scorer, template: str, questions: list[str], first: list[str], second: list[str]):
    """Per case, the log-odds for `first` shown as solution A, and for `first` shown as B (sign flipped back)."""
    fmt = template.format
    a = [fmt(question=q, solution_a=x, solution_b=y) for q, x, y in zip(questions, first, second)]
    b = [fmt(question=q, solution_a=y, solution_b=x) for q, x, y in zip(questions, first, second)]
    odds = _log_odds(scorer, a + b, ["A", "B"])
    n = len(a)
    return [(odds[i], -odds[n + i]) for i in range(n)]


def ensemble_judge_check(scorer, template: str, p: dict, n: int, seed: int) -> dict:
    """The ensemble judge on `n` shipped questions: a one-line right solution against a wrong one."""
    import random

    rng = random.Random(seed)
    qs = rng.sample(shipped_questions(), n)
    right, wrong = [], []
    for q in qs:
        k = q["letters"].index(q["answer"])
        w = rng.choice([j for j in range(len(q["choices"])) if j != k])
        right.append(f"The answer is ({q['letters'][k]}) {q['choices'][k]}.")
        wrong.append(f"The answer is ({q['letters'][w]}) {q['choices'][w]}.")
    orders = judge_orders(scorer, template, [question_text(q, p) for q in qs], right, wrong)
    return scorer_check("ensemble judge", [a + b > 0 for a, b in orders], [], chance=0.5)


# ---- the run -----------------------------------------------------------------------------------------------------

@dataclass
class Arm:
    """One row of the results: a system, or a persona played through the templates in turn."""

    name: str
    kind: str  # reference, trained, constitution, persona
    systems: list = field(default_factory=list)  # one System, or one per template
    group: str | None = None
    persona: str | None = None
    offset: int = 0
    templates: list[str] = field(default_factory=list)

    def system(self, i: int):
        return self.systems[(i + self.offset) % len(self.systems)]

    def template(self, i: int) -> str | None:
        return self.templates[(i + self.offset) % len(self.templates)] if self.templates else None


def arms(systems: list, constitution_prompt: tuple[str, str] | None, personas: list[dict],
         templates: list[dict]) -> list[Arm]:
    """The reference (systems[0]), the trained systems, the constitution prompted on the reference's model, and
    each persona through every template."""
    from character.evaluation.systems import System

    ref = systems[0]
    out = [Arm(ref.name, "reference", [ref])] + [Arm(s.name, "trained", [s]) for s in systems[1:]]
    if constitution_prompt:
        name, text = constitution_prompt
        out.append(Arm(f"prompted:{name}", "constitution", [System(f"prompted:{name}", ref.model,
                                                                   system_prompt=text)]))
    for j, p in enumerate(personas):
        prompted = [System(f"persona:{p['id']}", ref.model, system_prompt=t["text"].format(persona=p["text"]))
                    for t in templates]
        out.append(Arm(f"persona:{p['id']}", "persona", prompted, group=p["group"], persona=p["text"], offset=j,
                       templates=[t["id"] for t in templates]))
    return out


def run(engines, arm_list: list[Arm], questions: list[dict], sampling, p: dict, n_boot: int, seed: int) -> dict:
    """Generate, read and score every arm's answers; returns the section without the checks and the ensemble,
    plus `_replies` and `_correct` (per arm, in question order) for them."""
    texts_q = [question_text(q, p) for q in questions]
    n = len(questions)
    items = [(a.system(i), a.system(i).request(texts_q[i])) for a in arm_list for i in range(n)]
    replies = engines.generate(items, sampling, label="reasoning")
    ref = arm_list[0]
    by_arm = {a.name: replies[k * n:(k + 1) * n] for k, a in enumerate(arm_list)}
    extracted = {name: [extract_answer(r, q) for r, q in zip(rs, questions)] for name, rs in by_arm.items()}
    correct = {name: [is_correct(e, q) for e, q in zip(ex, questions)] for name, ex in extracted.items()}
    out: dict = {"reference": ref.name, "systems": {}}
    for a in arm_list:
        c, ex = correct[a.name], extracted[a.name]
        abst = sum(abstains(r, p["abstention_regex"]) for r in by_arm[a.name])
        unparsed = sum(e is None for e in ex)
        entry = {"kind": a.kind, "group": a.group, "persona": a.persona, "answers": n, "correct": sum(c),
                 "accuracy": sum(c) / n, "ci95": list(wilson(sum(c), n)), "unparseable": unparsed,
                 "unparseable_rate": unparsed / n, "abstentions": abst, "abstention_rate": abst / n,
                 "abstention_ci95": list(wilson(abst, n))}
        if a is not ref:
            entry.update(drop(correct[ref.name], c, n_boot, seed))
            entry["mcnemar"] = mcnemar(correct[ref.name], c)
        out["systems"][a.name] = entry
    personas = [a for a in arm_list if a.kind == "persona" and a.group != CONTROL]
    if personas:
        adjusted = holm([out["systems"][a.name]["mcnemar"]["p_value"] for a in personas])
        worse = []
        for a, ph in zip(personas, adjusted):
            e = out["systems"][a.name]
            e["p_holm"] = ph
            e["significantly_worse"] = bool(ph < ALPHA and e["delta"]["delta"] < 0)
            if e["significantly_worse"]:
                worse.append(a.name)
        out["personas_significantly_worse"] = {"count": len(worse), "of": len(personas),
                                               "share": len(worse) / len(personas), "systems": worse, "alpha": ALPHA}
    out["by_template"] = _by_template(arm_list, correct, n)
    out["_replies"], out["_correct"] = by_arm, correct
    return out


def _by_template(arm_list: list[Arm], correct: dict, n: int) -> dict:
    """Accuracy of all persona answers given under each template (Wilson 95%)."""
    pooled: dict[str, list[bool]] = {}
    for a in arm_list:
        for i in range(n):
            if a.template(i):
                pooled.setdefault(a.template(i), []).append(correct[a.name][i])
    return {t: {"answers": len(c), "accuracy": sum(c) / len(c), "ci95": list(wilson(sum(c), len(c)))}
            for t, c in pooled.items()}


def ensemble(scorer, template: str, questions: list[dict], p: dict, replies: dict, correct: dict,
             reference: str, n_boot: int, seed: int) -> dict:
    """Jekyll & Hyde per system: where its answer and the reference's differ, the judge picks one (summed log-odds
    of both orders); accuracy of the picks, gain over the system alone and over the reference (paired bootstrap),
    the oracle (right when either side is), and how often the two orders agreed."""
    texts_q = [question_text(q, p) for q in questions]
    ref_ex = [extract_answer(r, q) for r, q in zip(replies[reference], questions)]
    todo = []  # (system, question index)
    for name, rs in replies.items():
        if name != reference:
            todo += [(name, i) for i, (r, q) in enumerate(zip(rs, questions)) if extract_answer(r, q) != ref_ex[i]]
    orders = judge_orders(scorer, template, [texts_q[i] for _, i in todo], [replies[s][i] for s, i in todo],
                          [replies[reference][i] for _, i in todo])
    verdict = {key: o for key, o in zip(todo, orders)}
    out: dict = {}
    ref_c = correct[reference]
    for name in replies:
        if name == reference:
            continue
        mine = correct[name]
        picks, agree, judged = [], 0, 0
        for i in range(len(questions)):
            o = verdict.get((name, i))
            if o is None:
                picks.append(mine[i])
                continue
            judged += 1
            agree += (o[0] > 0) == (o[1] > 0)
            picks.append(mine[i] if o[0] + o[1] > 0 else ref_c[i])
        n = len(picks)
        g, glo, ghi = bootstrap_mean_diff(mine, picks, n_boot=n_boot, seed=seed)
        r, rlo, rhi = bootstrap_mean_diff(ref_c, picks, n_boot=n_boot, seed=seed)
        oracle = sum(a or b for a, b in zip(mine, ref_c))
        out[name] = {"accuracy": sum(picks) / n, "ci95": list(wilson(sum(picks), n)),
                     "gain_vs_system": {"delta": g, "ci95": [glo, ghi]},
                     "gain_vs_reference": {"delta": r, "ci95": [rlo, rhi]},
                     "oracle": oracle / n, "oracle_ci95": list(wilson(oracle, n)), "judged": judged,
                     "orders_agree": agree}
    return out


# ---- the suite ---------------------------------------------------------------------------------------------------

def questions_for(cfg) -> tuple[list[dict], str]:
    qs = load_data(cfg.data_for("reasoning"), strict=True) if cfg.data_for("reasoning") else []
    if qs:
        return qs, str(Path(cfg.data_for("reasoning")).expanduser().resolve())
    return shipped_questions(), "evals/reasoning/questions.jsonl"


def check_config(cfg) -> None:
    """Everything that can fail before an engine starts: counts, persona and template names, data files."""
    if cfg.reasoning_questions < 0 or cfg.reasoning_max_tokens < 1:
        raise CharacterError("reasoning_questions must be >= 0 and reasoning_max_tokens >= 1")
    s = settings()
    select(s["personas"], cfg.reasoning_personas, "persona", by_group=True)
    select(s["templates"], cfg.reasoning_templates, "template")
    prompts()
    questions_for(cfg)


def run_suite(ctx) -> dict:
    import dataclasses

    from character.evaluation.robustness import persona_prompt

    cfg = ctx.cfg
    s, p = settings(), prompts()
    personas = select(s["personas"], cfg.reasoning_personas, "persona", by_group=True)
    templates = select(s["templates"], cfg.reasoning_templates, "template")
    pool, source = questions_for(cfg)
    questions = choose_questions(pool, cfg.reasoning_questions, cfg.seed)
    const = ctx.constitution
    cprompt = (const.name, persona_prompt(const, cfg.persona_prompt)) if const is not None else None
    arm_list = arms(ctx.systems, cprompt, personas, templates)
    # greedy, as the paper decodes: one answer per question and system, the same on every rerun
    sampling = dataclasses.replace(ctx.sampling, temperature=0.0, max_tokens=cfg.reasoning_max_tokens, n=1)
    n_boot = max(cfg.bootstrap, 1000)
    section = run(ctx.engines, arm_list, questions, sampling, p, n_boot, cfg.seed)
    replies, correct = section.pop("_replies"), section.pop("_correct")
    categories: dict[str, int] = {}
    for q in questions:
        categories[q["category"]] = categories.get(q["category"], 0) + 1
    chance = sum(1 / len(q["letters"]) if q["kind"] == "letter" else 0.0 for q in questions) / len(questions)
    head = {"paper": PAPER, "source": source, "questions": len(questions), "pool": len(pool),
            "categories": categories, "chance": chance, "max_tokens": cfg.reasoning_max_tokens,
            "templates": [t["id"] for t in templates], "judge": cfg.judge}
    section = {**head, **section}
    checks = reader_checks(p)
    judge = ctx.llm_judge() if cfg.judge == "llm" or cfg.reasoning_ensemble else None
    if cfg.judge == "llm":
        rows = _rows("labelled_replies.jsonl")
        said = llm_abstains(judge.engine, p["abstention_judge"], [r["reply"] for r in rows])
        checks["abstention_llm"] = scorer_check("LLM abstention", [a == r["abstains"] for a, r in zip(said, rows)],
                                                [r["abstains"] for r in rows])
        names = list(replies)
        flat = llm_abstains(judge.engine, p["abstention_judge"], [r for nm in names for r in replies[nm]])
        n = len(questions)
        for k, nm in enumerate(names):
            a = sum(flat[k * n:(k + 1) * n])
            section["systems"][nm].update({"abstention_llm_rate": a / n, "abstention_llm_ci95": list(wilson(a, n))})
    if cfg.reasoning_ensemble:
        section["ensemble_judge_model"] = getattr(judge, "model", None)
        checks["ensemble_judge"] = ensemble_judge_check(judge.engine, p["ensemble_judge"], p,
                                                        min(60, len(shipped_questions())), cfg.seed)
        section["ensemble"] = ensemble(judge.engine, p["ensemble_judge"], questions, p, replies, correct,
                                       section["reference"], n_boot, cfg.seed)
    section["checks"] = checks
    weak = [c for c in checks.values() if c["at_chance"]]
    section["inconclusive"] = bool(weak)
    section["inconclusive_reason"] = "; ".join(
        f"the {c['check']} check scored {c['accuracy']:.2f} [{c['ci95'][0]:.2f}, {c['ci95'][1]:.2f}] on its "
        f"labelled set, not above chance ({c['chance']:.2f})" for c in weak) or None
    return section


# ---- report and plot ---------------------------------------------------------------------------------------------

def _ci(ci, nd: int = 2) -> str:
    return f"[{ci[0]:.{nd}f}, {ci[1]:.{nd}f}]"


def report_section(sec: dict, results: dict) -> list[str]:
    L = ["", "## Reasoning under personas", "",
         f"{sec['questions']} questions from {sec['source']} ({', '.join(f'{k} {v}' for k, v in sec['categories'].items())}"
         f"), answered greedily with chain of thought (at most {sec['max_tokens']} new tokens), the final answer read "
         f"from \"The answer is (X)\" and its variants; unparseable replies count as wrong. Chance: "
         f"{sec['chance']:.2f}. Personas play through the templates {', '.join(sec['templates'])} in turn. After "
         f"{sec['paper']}.", ""]
    for c in sec["checks"].values():
        L.append(f"- {c['check']}: accuracy {c['accuracy']:.2f} {_ci(c['ci95'])} on {c['cases']} labelled cases "
                 f"(chance {c['chance']:.2f})" + (" **at chance**" if c["at_chance"] else ""))
    llm = any("abstention_llm_rate" in e for e in sec["systems"].values())
    L += ["", f"Difference = system minus `{sec['reference']}` (no persona) and relative drop = (reference - system) / "
          "reference, each with a paired bootstrap over questions; McNemar: exact, "
          "paired by question (p, and Holm-adjusted over the personas); abstention: replies that decline "
          "(pattern list" + (", then the LLM yes/no check" if llm else "") + ").", "",
          "| system | kind | accuracy | 95% CI | difference | 95% CI | relative drop | abstention | unparseable | "
          "McNemar p | Holm p |" + (" LLM abstention |" if llm else ""),
          "|---|---|---:|---|---:|---|---:|---:|---:|---:|---:|" + ("---:|" if llm else "")]
    for name, e in sec["systems"].items():
        d = e.get("delta")
        rel = e.get("relative_drop")
        kind = e["kind"] + (f" ({e['group']})" if e.get("group") else "")
        worse = " **worse**" if e.get("significantly_worse") else ""
        row = (f"| {name}{worse} | {kind} | {e['accuracy']:.2f} | {_ci(e['ci95'])} | "
               + (f"{d['delta']:+.2f} | {_ci(d['ci95'])} | " if d else "(reference) | | ")
               + (f"{rel['value']:+.0%} [{rel['ci95'][0]:+.0%}, {rel['ci95'][1]:+.0%}] | " if rel else "n/a | ")
               + f"{e['abstention_rate']:.2f} | {e['unparseable_rate']:.2f} | "
               + (f"{e['mcnemar']['p_value']:.3f} | " if "mcnemar" in e else " | ")
               + (f"{e['p_holm']:.3f} |" if "p_holm" in e else " |"))
        if llm:
            row += f" {e['abstention_llm_rate']:.2f} |"
        L.append(row)
    w = sec.get("personas_significantly_worse")
    if w:
        L += ["", f"Personas significantly worse than no persona (Holm-adjusted McNemar p < {w['alpha']}): "
              f"**{w['count']} of {w['of']}**" + (f" ({', '.join(w['systems'])})." if w["systems"] else ".")]
    if sec.get("by_template"):
        L += ["", "Persona answers by template: " + "; ".join(
            f"`{t}` {v['accuracy']:.2f} {_ci(v['ci95'])} (n={v['answers']})" for t, v in sec["by_template"].items())
            + "."]
    ens = sec.get("ensemble")
    if ens:
        L += ["", f"### Ensemble with the no-persona answer (Jekyll & Hyde; judge `{sec.get('ensemble_judge_model')}`)",
              "", "| system | ensemble accuracy | 95% CI | gain vs system | 95% CI | gain vs reference | 95% CI | "
              "oracle | judged | orders agree |", "|---|---:|---|---:|---|---:|---|---:|---:|---:|"]
        for name, e in ens.items():
            g, r = e["gain_vs_system"], e["gain_vs_reference"]
            L.append(f"| {name} | {e['accuracy']:.2f} | {_ci(e['ci95'])} | {g['delta']:+.2f} | {_ci(g['ci95'])} | "
                     f"{r['delta']:+.2f} | {_ci(r['ci95'])} | {e['oracle']:.2f} | {e['judged']} | "
                     f"{e['orders_agree']} |")
    if "reasoning_drops.png" in results.get("plots", []):
        L += ["", "![reasoning drops](reasoning_drops.png)"]
    return L


def plots(sec: dict, out: Path, plt) -> list[str]:
    """Each system's accuracy minus the reference's with its 95% interval, largest drop at the bottom."""
    rows = sorted(((n, e) for n, e in sec["systems"].items() if e.get("delta")), key=lambda r: r[1]["delta"]["delta"],
                  reverse=True)
    if not rows:
        return []
    colours = {"trained": "tab:red", "constitution": "tab:orange", "persona": "tab:blue"}
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(rows) + 1.6))
    y = list(range(len(rows)))[::-1]
    d = [e["delta"]["delta"] for _, e in rows]
    err = [[v - e["delta"]["ci95"][0] for v, (_, e) in zip(d, rows)],
           [e["delta"]["ci95"][1] - v for v, (_, e) in zip(d, rows)]]
    ax.barh(y, d, xerr=err, capsize=2, color=[colours.get(e["kind"], "tab:gray") if e.get("group") != CONTROL
                                               else "tab:gray" for _, e in rows])
    ax.set_yticks(y, [n + (" *" if e.get("significantly_worse") else "") for n, e in rows], fontsize=8)
    ax.axvline(0, color="black", lw=0.8)
    reach = max([0.25] + [abs(v) for _, e in rows for v in e["delta"]["ci95"]])
    ax.set_xlim(-1.1 * reach, 1.1 * reach)
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color=c, label=k) for k, c in colours.items()] + [Patch(color="tab:gray", label=CONTROL)],
              fontsize=7, loc="best")
    ax.set_xlabel(f"accuracy minus `{sec['reference']}` (95% paired bootstrap CI); * = significantly worse (Holm)")
    ax.set_title(f"Reasoning: {sec['questions']} questions, reference accuracy "
                 f"{sec['systems'][sec['reference']]['accuracy']:.2f} (chance {sec['chance']:.2f})", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "reasoning_drops.png", dpi=110)
    plt.close(fig)
    return ["reasoning_drops.png"]
