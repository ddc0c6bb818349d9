"""Judges: which of two traits does an answer express, and which of two answers is more coherent.

Every trait judge has `margins(cases)`: a signed number per case, > 0 when trait_1 wins, None when undecided;
`judge(cases)` is its sign (1 or 2). The size of a margin says how sure the judge was; `reliability` reports the
labelled-set accuracy by bins of it.

- `EmbeddingJudge` (default, offline, CPU): MiniLM embeds the answer and a short text per trait
  ("<trait>: <description>"); the trait whose text is closer (cosine) wins. Nothing to parse, nothing fails.
- `LLMJudge`: any model served by the engine. In `logprob` mode the traits are shown under the labels A and B
  and the verdict is read from the log-probabilities of those two label tokens as the judge's reply, so a trait
  spelt with four tokens is not handicapped against one spelt with one. Each (trait pair, order) is also scored
  with a content-free answer and its A-B log-odds subtracted (contextual calibration, Zhao et al. 2021,
  "Calibrate Before Use"): what is left is what the answer itself moved. Asked in both orders and summed, so a
  preference for a position cancels too. In `tags` mode the judge writes a reply (greedy) and the trait it names
  is parsed; a reply naming neither or both is undecided (margin None).
- `reliability`: a judge's accuracy on evals/judge_labelled.jsonl (answers written to show a known trait, each
  pitted against distractor traits), overall and by margin, so a report can say how far to trust the verdicts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from character.errors import CharacterError


@dataclass
class TraitCase:
    """One judgement: did `answer` (to `prompt`) express trait_1 or trait_2?"""

    prompt: str
    answer: str
    trait_1: str
    trait_2: str


def verdicts(margins: Sequence[float | None]) -> list[int | None]:
    """1 (trait_1) for a margin >= 0, 2 for < 0, None for undecided."""
    return [None if m is None else 1 if m >= 0 else 2 for m in margins]


class EmbeddingJudge:
    name = "embedding"

    def __init__(self, model: str = "minilm", descriptions: dict[str, str] | None = None):
        from character.evaluation import data
        from character.models import resolve

        self.model_path = resolve(model)
        self.descriptions = descriptions if descriptions is not None else data.traits()
        self._encoder = None
        self._trait_vecs: dict[str, object] = {}

    def encode(self, texts: Sequence[str]):
        """Unit-norm embeddings (numpy, one row per text)."""
        if self._encoder is None:
            import os

            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer

            self._encoder = SentenceTransformer(self.model_path, device="cpu")
        return self._encoder.encode(list(texts), batch_size=64, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=False)

    def trait_text(self, trait: str) -> str:
        desc = self.descriptions.get(trait)
        return f"{trait}: {desc}" if desc else trait

    def _trait_matrix(self, names: Sequence[str]):
        import numpy as np

        todo = [t for t in dict.fromkeys(names) if t not in self._trait_vecs]
        if todo:
            for t, v in zip(todo, self.encode([self.trait_text(t) for t in todo])):
                self._trait_vecs[t] = v
        return np.stack([self._trait_vecs[t] for t in names])

    def margins(self, cases: Sequence[TraitCase]) -> list[float]:
        """cos(answer, trait_1) - cos(answer, trait_2) per case; > 0 means trait_1 wins."""
        if not cases:
            return []
        import numpy as np

        unique = list(dict.fromkeys(c.answer for c in cases))  # the labelled set pits one answer against several
        where = {a: i for i, a in enumerate(unique)}
        ans = self.encode(unique)[np.array([where[c.answer] for c in cases])]
        t1 = self._trait_matrix([c.trait_1 for c in cases])
        t2 = self._trait_matrix([c.trait_2 for c in cases])
        return [float(x) for x in ((ans * t1).sum(1) - (ans * t2).sum(1))]

    def judge(self, cases: Sequence[TraitCase]) -> list[int | None]:
        """1 or 2 per case (the trait expressed)."""
        return verdicts(self.margins(cases))


_WORD = re.compile(r"[a-z][a-z\-]*")
LABELS = ["A", "B"]  # one token each in the tokenizers we ship; scoring them reads the judge's next-token choice


class LLMJudge:
    name = "llm"

    def __init__(self, engine, mode: str = "logprob", trait_template: str | None = None,
                 coherence_template: str | None = None, adapter: str | None = None,
                 content_free: str | None = ""):
        """`content_free` replaces the user message and the answer(s) in the calibration prompt (empty: with
        smollm2-135m it leaves ~0.3 nats of position lean per order on an empty answer, "N/A" ~0.7); None turns
        calibration off. `trait_template` defaults to `label_judge_template` (logprob) or `judge_template` (tags)."""
        from character.evaluation import data

        if mode not in ("logprob", "tags"):
            raise CharacterError(f"judge mode '{mode}': use logprob or tags")
        t = data.preference_templates()
        key = "label_judge_template" if mode == "logprob" else "judge_template"
        if trait_template is None and key not in t:
            raise CharacterError(f"evals/preferences.yaml: missing '{key}' (the {mode} judge's prompt)")
        self.engine, self.mode, self.adapter, self.content_free = engine, mode, adapter, content_free
        self.trait_template = trait_template or t[key]
        self.coherence_template = coherence_template or t["coherence_judge_template"]

    def _request(self, text: str):
        from character.engine.base import Request

        return Request(messages=[{"role": "user", "content": text}], adapter=self.adapter)

    def _log_odds(self, texts: Sequence[str]) -> list[float]:
        """log p(A) - log p(B) for the judge's reply to each text: only the two label tokens are scored."""
        if not texts:
            return []
        scores = self.engine.score([self._request(t) for t in texts], [LABELS] * len(texts))
        return [s[0] - s[1] for s in scores]

    def _trait_prompt(self, prompt: str, answer: str, first: str, second: str) -> str:
        return self.trait_template.format(prompt=prompt, answer=answer, trait_1=first, trait_2=second)

    def _trait_baseline(self, shown: Sequence[tuple[str, str]]) -> dict[tuple[str, str], float]:
        """A-B log-odds with a content-free answer, once per distinct (first trait, second trait) shown."""
        keys = list(dict.fromkeys(shown))
        if self.content_free is None:
            return dict.fromkeys(keys, 0.0)
        cf = self.content_free
        return dict(zip(keys, self._log_odds([self._trait_prompt(cf, cf, a, b) for a, b in keys])))

    def order_margins(self, cases: Sequence[TraitCase]) -> list[tuple[float, float]]:
        """logprob mode: per case, the calibrated log-odds for trait_1 with trait_1 shown as A (first order) and
        with trait_1 shown as B (second order). Their sum is the case's margin."""
        if self.mode != "logprob":
            raise CharacterError("order_margins reads label log-probabilities: use judge mode logprob")
        if not cases:
            return []
        first = [self._trait_prompt(c.prompt, c.answer, c.trait_1, c.trait_2) for c in cases]
        second = [self._trait_prompt(c.prompt, c.answer, c.trait_2, c.trait_1) for c in cases]
        raw = self._log_odds(first + second)
        base = self._trait_baseline([(c.trait_1, c.trait_2) for c in cases] + [(c.trait_2, c.trait_1) for c in cases])
        n = len(cases)
        # in the second order trait_1 is B, so its log-odds is B - A: the sign flips
        return [(raw[i] - base[(c.trait_1, c.trait_2)], -(raw[n + i] - base[(c.trait_2, c.trait_1)]))
                for i, c in enumerate(cases)]

    def margins(self, cases: Sequence[TraitCase]) -> list[float | None]:
        """> 0 means trait_1. logprob: calibrated label log-odds summed over both orders (nats); tags: +1 or -1
        from the parsed reply, None when it names neither or both traits."""
        if not cases:
            return []
        if self.mode == "logprob":
            return [a + b for a, b in self.order_margins(cases)]
        from character.engine.base import Sampling

        texts = [self._trait_prompt(c.prompt, c.answer, c.trait_1, c.trait_2) for c in cases]
        greedy = Sampling(temperature=0.0, max_tokens=16, seed=0)
        comps = self.engine.generate([self._request(t) for t in texts], greedy)
        choice = [parse_choice(r.texts[0], c.trait_1, c.trait_2) for r, c in zip(comps, cases)]
        return [None if v is None else 1.0 if v == 1 else -1.0 for v in choice]

    def judge(self, cases: Sequence[TraitCase]) -> list[int | None]:
        return verdicts(self.margins(cases))

    def compare(self, prompts: Sequence[str], answers_a: Sequence[str], answers_b: Sequence[str]) -> list[int | None]:
        """Coherence, asked once per order: per prompt (verdict with A first, verdict with B first), each 1 (A
        better), 2 (B better) or None (tags mode, unparsed). Consistent means both name the same answer.
        logprob mode subtracts the A-B log-odds of one content-free comparison (the same for every prompt)."""
        fmt = self.coherence_template.format
        first = [fmt(prompt=p, answer_a=a, answer_b=b) for p, a, b in zip(prompts, answers_a, answers_b)]
        second = [fmt(prompt=p, answer_a=b, answer_b=a) for p, a, b in zip(prompts, answers_a, answers_b)]
        if self.mode == "logprob":
            cf = self.content_free
            texts = first + second + ([fmt(prompt=cf, answer_a=cf, answer_b=cf)] if cf is not None else [])
            odds = self._log_odds(texts)
            base = odds.pop() if cf is not None else 0.0
            v = [1 if o - base >= 0 else 2 for o in odds]
        else:
            from character.engine.base import Sampling

            comps = self.engine.generate([self._request(t) for t in first + second],
                                         Sampling(temperature=0.0, max_tokens=8, seed=0))
            v = [parse_choice(c.texts[0], "A", "B", case=True) for c in comps]
        n = len(first)
        # in the second order "A" is answer b: map back so 1 always means answer_a
        return [(v[i], None if v[n + i] is None else 3 - v[n + i]) for i in range(n)]


def parse_choice(reply: str, a: str, b: str, case: bool = False) -> int | None:
    """1 if the reply names option a only, 2 if b only, else None."""
    text = reply if case else reply.lower()
    a_, b_ = (a, b) if case else (a.lower(), b.lower())
    if case:
        words = re.findall(r"\b[A-Za-z]+\b", text)
        has_a, has_b = a_ in words, b_ in words
    else:
        words = set(_WORD.findall(text))
        has_a, has_b = a_ in words, b_ in words
    if has_a and not has_b:
        return 1
    if has_b and not has_a:
        return 2
    return None


def labelled_cases(rows: list[dict], n_distractors: int, seed: int) -> tuple[list[TraitCase], list[int], list[str]]:
    """Each labelled answer against `n_distractors` other labelled traits, the true trait placed first or second at
    random. Returns (cases, the true side 1 or 2 per case, the true trait per case)."""
    import random

    rng = random.Random(seed)
    pool = sorted({r["trait"] for r in rows})
    cases, truth, owner = [], [], []
    for r in rows:
        others = [t for t in pool if t != r["trait"]]
        for d in rng.sample(others, min(n_distractors, len(others))):
            if rng.random() < 0.5:
                cases.append(TraitCase(r["prompt"], r["answer"], r["trait"], d))
                truth.append(1)
            else:
                cases.append(TraitCase(r["prompt"], r["answer"], d, r["trait"]))
                truth.append(2)
            owner.append(r["trait"])
    return cases, truth, owner


def margin_bins(margins: Sequence[float | None], correct: Sequence[bool], n_bins: int = 4) -> list[dict]:
    """Accuracy by quantile bins of |margin| over the decided cases (equal counts as far as ties allow: a tie is
    never split, so tags mode's +-1 gives one bin). Each bin: lo and hi (its smallest and largest |margin|),
    cases, accuracy, Wilson ci95."""
    import numpy as np

    from character.evaluation.scoring import wilson

    decided = [(abs(m), c) for m, c in zip(margins, correct) if m is not None]
    if not decided:
        return []
    size = np.array([s for s, _ in decided])
    hit = np.array([c for _, c in decided], dtype=bool)
    groups: list[list[int]] = []
    for part in np.array_split(np.argsort(size, kind="stable"), min(n_bins, len(size))):
        if groups and size[part[0]] == size[groups[-1][-1]]:
            groups[-1].extend(part)
        else:
            groups.append(list(part))
    out = []
    for g in groups:
        right = int(hit[g].sum())
        lo, hi = wilson(right, len(g))
        out.append({"lo": float(size[g].min()), "hi": float(size[g].max()), "cases": len(g),
                    "accuracy": right / len(g), "ci95": [lo, hi]})
    return out


def reliability(judge, n_distractors: int = 5, seed: int = 0, rows: list[dict] | None = None) -> dict:
    """Accuracy of `judge` on the labelled set (see `labelled_cases`). Returns accuracy with its Wilson interval,
    counts, per-trait accuracy, `by_margin` (accuracy by quartile of |margin| over the decided cases) and
    `chance_in_ci` (the interval contains 0.5: the judge is not shown to beat a coin)."""
    from character.evaluation import data
    from character.evaluation.scoring import wilson

    rows = rows if rows is not None else data.judge_labelled()
    cases, truth, owner = labelled_cases(rows, n_distractors, seed)
    margins = judge.margins(cases)
    correct = [v == t for v, t in zip(verdicts(margins), truth)]
    per: dict[str, list[bool]] = {}
    for o, c in zip(owner, correct):
        per.setdefault(o, []).append(c)
    k = sum(correct)
    lo, hi = wilson(k, len(cases))
    return {
        "judge": judge.name, "cases": len(cases), "correct": k, "accuracy": k / max(1, len(cases)),
        "ci95": [lo, hi], "chance_in_ci": bool(lo <= 0.5 <= hi), "failed": sum(m is None for m in margins),
        "by_margin": margin_bins(margins, correct),
        "per_trait": {t: sum(v) / len(v) for t, v in sorted(per.items())},
    }
