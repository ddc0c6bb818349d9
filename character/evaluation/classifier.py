"""Persona classifier for the robustness suite: MiniLM sentence embeddings + multinomial logistic regression.

Trained on plain answers of several personas (and of the model with no persona, class "default"), it names the
persona behind an answer. If a character survives an adversarial suffix, its answers are still classified as
that persona. Deterministic: fixed solver, no randomness in training.
"""

from __future__ import annotations

from collections.abc import Sequence


class PersonaClassifier:
    def __init__(self, embed, c: float = 1.0):
        """`embed(texts) -> unit-norm numpy rows` (e.g. EmbeddingJudge.encode); `c`: inverse L2 strength."""
        self.embed = embed
        self.c = c
        self.model = None

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> PersonaClassifier:
        from sklearn.linear_model import LogisticRegression

        if len(set(labels)) < 2:
            raise ValueError("the persona classifier needs answers of at least two personas")
        self.model = LogisticRegression(C=self.c, max_iter=2000)
        self.model.fit(self.embed(list(texts)), list(labels))
        return self

    @property
    def labels(self) -> list[str]:
        return [str(x) for x in self.model.classes_]

    def predict(self, texts: Sequence[str]) -> list[str]:
        if not texts:
            return []
        return [str(x) for x in self.model.predict(self.embed(list(texts)))]


def metrics(truth: Sequence[str], pred: Sequence[str], labels: Sequence[str] | None = None) -> dict:
    """Accuracy, macro-F1 over the personas present in `truth`, and per-persona recall."""
    from sklearn.metrics import f1_score

    n = len(truth)
    if n == 0:
        return {"n": 0, "accuracy": None, "macro_f1": None, "per_persona": {}}
    present = sorted(set(truth)) if labels is None else list(labels)
    per = {}
    for p in sorted(set(truth)):
        idx = [i for i, t in enumerate(truth) if t == p]
        per[p] = sum(pred[i] == p for i in idx) / len(idx)
    f1 = f1_score(list(truth), list(pred), labels=present, average="macro", zero_division=0)
    return {"n": n, "accuracy": sum(t == p for t, p in zip(truth, pred)) / n, "macro_f1": float(f1),
            "per_persona": per}
