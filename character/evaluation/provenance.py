"""Where a trained system came from: follow the manifests of an adapter (or merged model) back through the
stages that made it, to the data it was trained on.

Every stage directory holds a manifest.json whose `config` names the directories it read (`adapters`, `data`,
`chosen`, `rejected`, `reflection`, `interaction`, `prompts`, ...). `trace(path)` walks those links and returns the
stage directories it found by stage name; `training_prompts` collects the user messages of every data set a
training stage read, so `character eval` can say how many of its evaluation prompts a model was trained on
(`contamination`), and the eval can read the DPO data's persona separation (`dpo-data` manifest).

A path written relative to another working directory is looked up beside the manifest's own directory too (the
pipeline's layout: OUT/<constitution>/<stage>/), so a run directory can be moved or evaluated from elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from character.artifacts import MANIFEST, read_jsonl, read_manifest

# config fields that never name an input directory
_NOT_INPUTS = frozenset({"out", "model", "constitution", "student_model", "teacher", "student", "judge_model",
                         "embedding_model", "tokenizer", "baseline", "control"})
# stages whose output a training stage reads as its data
TRAINING_STAGES = ("train-dpo", "train-sft")


@dataclass
class Lineage:
    """The stage directories behind one system, by stage name (the nearest one when a name repeats)."""

    root: Path
    stages: dict[str, Path] = field(default_factory=dict)
    training_data: list[Path] = field(default_factory=list)

    @property
    def traced(self) -> bool:
        return any(s in self.stages for s in TRAINING_STAGES)

    def stage(self, name: str) -> Path | None:
        return self.stages.get(name)


def _resolve(value: str, beside: Path) -> Path | None:
    p = Path(value).expanduser()
    if p.exists():
        return p.resolve()
    sibling = beside.parent / p.name  # OUT/<constitution>/<stage> moved or read from another directory
    return sibling.resolve() if p.name and sibling.exists() else None


def _input_paths(manifest: dict, where: Path) -> list[Path]:
    out = []
    for key, value in (manifest.get("config") or {}).items():
        if key in _NOT_INPUTS or not value:
            continue
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, str) and ("/" in v or Path(v).exists()):
                p = _resolve(v, where)
                if p is not None and p != where:
                    out.append(p)
    return out


def trace(path: str | Path, max_depth: int = 12) -> Lineage:
    """The lineage of an adapter or model directory; empty when it has no manifest (not made by this toolkit)."""
    root = Path(path).expanduser().resolve()
    lineage = Lineage(root)
    todo, seen = [(root, 0)], set()
    while todo:
        where, depth = todo.pop(0)
        if where in seen or depth > max_depth:
            continue
        seen.add(where)
        m = read_manifest(where) if where.is_dir() else None
        if not m:
            continue
        stage = m.get("stage")
        if stage:
            lineage.stages.setdefault(stage, where)
        inputs = _input_paths(m, where)
        if stage in TRAINING_STAGES:
            data = (m.get("config") or {}).get("data")
            p = _resolve(data, where) if isinstance(data, str) else None
            if p is not None:
                lineage.training_data.append(p)
        todo += [(p, depth + 1) for p in inputs]
    return lineage


def _user_texts(row: dict) -> list[str]:
    texts = []
    for key in ("prompt", "messages"):
        v = row.get(key)
        if isinstance(v, str):
            texts.append(v)
        elif isinstance(v, list):
            texts += [m.get("content", "") for m in v if isinstance(m, dict) and m.get("role") == "user"]
    return [t for t in texts if isinstance(t, str) and t.strip()]


def training_prompts(lineage: Lineage) -> list[str]:
    """Distinct user messages of every data set the lineage's training stages read (in first-seen order)."""
    seen: dict[str, None] = {}
    for data in lineage.training_data:
        files = [data] if data.is_file() else sorted(p for p in data.rglob("*.jsonl") if p.name != MANIFEST)
        for f in files:
            for row in read_jsonl(f):
                for t in _user_texts(row):
                    seen.setdefault(t, None)
    return list(seen)


def contamination(adapters: dict[str, str], eval_prompts: list[str]) -> dict:
    """How many evaluation prompts each trained system saw in training, by exact match after normalisation
    (case, spacing, punctuation) and by a shared word 8-gram. `checked` is False for a system whose lineage
    cannot be traced (no manifests: made elsewhere)."""
    from character.evaluation.overlap import ngrams, normalise

    norm_eval = [normalise(p) for p in eval_prompts]
    per: dict[str, dict] = {}
    union_train: set[str] = set()
    union_overlap: set[int] = set()
    for name, path in adapters.items():
        lineage = trace(path)
        if not lineage.traced:
            per[name] = {"checked": False, "reason": f"{path} has no training manifests to follow"}
            continue
        train = {normalise(t) for t in training_prompts(lineage)}
        grams = set().union(*(ngrams(t) for t in train)) if train else set()
        exact = [i for i, p in enumerate(norm_eval) if p in train]
        near = [i for i, p in enumerate(eval_prompts) if i not in set(exact) and ngrams(p) & grams]
        per[name] = {"checked": True, "training_prompts": len(train), "overlap": len(exact),
                     "shared_8gram": len(near), "examples": [eval_prompts[i] for i in exact[:5]],
                     "stages": {k: str(v) for k, v in lineage.stages.items()}}
        union_train |= train
        union_overlap.update(exact)
    checked = bool(per) and all(v["checked"] for v in per.values())
    return {"checked": checked, "eval_prompts": len(eval_prompts), "training_prompts": len(union_train),
            "overlap": len(union_overlap), "systems": per}
