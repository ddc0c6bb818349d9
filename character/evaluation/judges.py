"""Judges: which of two traits does an answer express, and which of two answers is more coherent.

- `EmbeddingJudge` (default, offline, CPU): MiniLM embeds the answer and a short text per trait
  ("<trait>: <description>"); the trait whose text is closer (cosine) wins. Nothing to parse, nothing fails.
- `LLMJudge`: any model served by the engine. In `logprob` mode the verdict is read from the log-probabilities
  the judge gives to each option as its reply (`Engine.score`), asked in both option orders and summed so the
  judge's preference for the first-listed option cancels; it always yields a verdict. In `tags` mode the judge
  writes a reply (greedy) and the option it names is parsed; a reply naming neither or both is counted as failed.
- `reliability`: a judge's accuracy on evals/judge_labelled.jsonl (answers written to show a known trait, each
  pitted against distractor traits), so a report can say how far to trust the verdicts.
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
        return [1 if m >= 0 else 2 for m in self.margins(cases)]


_WORD = re.compile(r"[a-z][a-z\-]*")


class LLMJudge:
    name = "llm"

    def __init__(self, engine, mode: str = "logprob", trait_template: str | None = None,
                 coherence_template: str | None = None, adapter: str | None = None):
        from character.evaluation import data

        if mode not in ("logprob", "tags"):
            raise CharacterError(f"judge mode '{mode}': use logprob or tags")
        t = data.preference_templates()
        self.engine, self.mode, self.adapter = engine, mode, adapter
        self.trait_template = trait_template or t["judge_template"]
        self.coherence_template = coherence_template or t["coherence_judge_template"]

    def _request(self, text: str):
        from character.engine.base import Request

        return Request(messages=[{"role": "user", "content": text}], adapter=self.adapter)

    def _choose(self, texts_ab: list[str], texts_ba: list[str], options: list[tuple[str, str]]) -> list[int | None]:
        """Verdicts for prompts asked in both orders; options[i] = (first option, second option) of texts_ab[i]."""
        if self.mode == "logprob":
            reqs = [self._request(t) for t in texts_ab] + [self._request(t) for t in texts_ba]
            conts = [[a, b] for a, b in options] + [[b, a] for a, b in options]
            scores = self.engine.score(reqs, conts)
            n = len(texts_ab)
            out: list[int | None] = []
            for i in range(n):
                ab, ba = scores[i], scores[n + i]
                margin = (ab[0] - ab[1]) + (ba[1] - ba[0])  # option 1 minus option 2, both orders
                out.append(1 if margin >= 0 else 2)
            return out
        from character.engine.base import Sampling

        sampling = Sampling(temperature=0.0, max_tokens=16, seed=0)
        comps = self.engine.generate([self._request(t) for t in texts_ab], sampling)
        return [parse_choice(c.texts[0], a, b) for c, (a, b) in zip(comps, options)]

    def judge(self, cases: Sequence[TraitCase]) -> list[int | None]:
        if not cases:
            return []
        fmt = self.trait_template.format
        ab = [fmt(prompt=c.prompt, answer=c.answer, trait_1=c.trait_1, trait_2=c.trait_2) for c in cases]
        ba = [fmt(prompt=c.prompt, answer=c.answer, trait_1=c.trait_2, trait_2=c.trait_1) for c in cases]
        return self._choose(ab, ba, [(c.trait_1, c.trait_2) for c in cases])

    def compare(self, prompts: Sequence[str], answers_a: Sequence[str], answers_b: Sequence[str]) -> list[int | None]:
        """Coherence, asked once per order: per prompt (verdict with A first, verdict with B first), each 1 (A
        better), 2 (B better) or None (tags mode, unparsed). Consistent means both name the same answer."""
        fmt = self.coherence_template.format
        first = [fmt(prompt=p, answer_a=a, answer_b=b) for p, a, b in zip(prompts, answers_a, answers_b)]
        second = [fmt(prompt=p, answer_a=b, answer_b=a) for p, a, b in zip(prompts, answers_a, answers_b)]
        if self.mode == "logprob":
            reqs = [self._request(t) for t in first + second]
            scores = self.engine.score(reqs, [["A", "B"]] * len(reqs))
            v = [1 if s[0] >= s[1] else 2 for s in scores]
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


def reliability(judge, n_distractors: int = 5, seed: int = 0, rows: list[dict] | None = None) -> dict:
    """Accuracy of `judge` on the labelled set: each answer against `n_distractors` other labelled traits, the
    true trait placed first or second at random. Returns accuracy, Wilson interval, counts, per-trait accuracy."""
    import random

    from character.evaluation import data
    from character.evaluation.scoring import wilson

    rows = rows if rows is not None else data.judge_labelled()
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
    verdicts = judge.judge(cases)
    correct = [v == t for v, t in zip(verdicts, truth)]
    per: dict[str, list[bool]] = {}
    for o, c in zip(owner, correct):
        per.setdefault(o, []).append(c)
    k = sum(correct)
    lo, hi = wilson(k, len(cases))
    return {
        "judge": judge.name, "cases": len(cases), "correct": k, "accuracy": k / max(1, len(cases)),
        "ci95": [lo, hi], "failed": sum(v is None for v in verdicts),
        "per_trait": {t: sum(v) / len(v) for t, v in sorted(per.items())},
    }
