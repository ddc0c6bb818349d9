"""Persona classifier for the robustness suite: text features + multinomial logistic regression.

Trained on plain answers of several personas (and of the model with no persona, class "default"), it names the
persona behind an answer. If a character survives an adversarial suffix, its answers are still classified as
that persona. Features (`FEATURES`): MiniLM sentence embeddings, TF-IDF word 1-2-grams, TF-IDF char 2-5-grams
(within words), or MiniLM and both TF-IDF sets side by side. Word and character n-grams catch what a small model's
personas change in its answers (rhymes, "my dear", exclamation marks), which a sentence embedding of the topic
mostly averages away; bench/robustness_classifier.py measures each option's held-out accuracy. Deterministic:
fixed solver, no randomness in training.
"""

from __future__ import annotations

from collections.abc import Sequence

FEATURES = ("minilm", "tfidf-word", "tfidf-char", "minilm+tfidf")


class PersonaClassifier:
    def __init__(self, embed=None, c: float = 1.0, features: str = "minilm"):
        """`embed(texts) -> unit-norm numpy rows` (e.g. EmbeddingJudge.encode; needed for the MiniLM features);
        `c`: inverse L2 strength; `features`: one of FEATURES."""
        if features not in FEATURES:
            raise ValueError(f"features must be one of {', '.join(FEATURES)}, not {features!r}")
        if "minilm" in features and embed is None:
            raise ValueError(f"features {features!r} need an `embed` function")
        self.embed = embed
        self.c = c
        self.features = features
        self.vectorizers: list = []
        self.model = None

    def _matrix(self, texts: list[str], fit: bool):
        import numpy as np
        from scipy import sparse

        if fit:
            self.vectorizers = _vectorizers(self.features)
        blocks = [v.fit_transform(texts) if fit else v.transform(texts) for v in self.vectorizers]
        if "minilm" in self.features:
            blocks.append(sparse.csr_matrix(np.asarray(self.embed(texts))))
        return blocks[0] if len(blocks) == 1 else sparse.hstack(blocks, format="csr")

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> PersonaClassifier:
        from sklearn.linear_model import LogisticRegression

        if len(set(labels)) < 2:
            raise ValueError("the persona classifier needs answers of at least two personas")
        self.model = LogisticRegression(C=self.c, max_iter=2000)
        self.model.fit(self._matrix(list(texts), fit=True), list(labels))
        return self

    @property
    def labels(self) -> list[str]:
        return [str(x) for x in self.model.classes_]

    def predict(self, texts: Sequence[str]) -> list[str]:
        if not texts:
            return []
        return [str(x) for x in self.model.predict(self._matrix(list(texts), fit=False))]


def _vectorizers(features: str) -> list:
    from sklearn.feature_extraction.text import TfidfVectorizer

    out = []
    if features in ("tfidf-word", "minilm+tfidf"):
        out.append(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True))
    if features in ("tfidf-char", "minilm+tfidf"):
        out.append(TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True))
    return out


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
