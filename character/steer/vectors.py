"""Persona vectors from contrastive activations, how well each layer's vector separates the two sides, and the
files a `steer` directory holds.

Activations are one row per answer and layer: the layer's output averaged over the answer's tokens, for the same
prompts answered with the persona's system prompt (positive) and without (negative). Two methods, both per layer:
- `mean_diff` (persona vectors, Chen et al. 2025): mean(positive) - mean(negative);
- `pca` (repeng's `pca_center`, used by the Open Character Training code): each pair centred on its midpoint, the
  first principal direction of those centred rows, signed so that positives project higher in most pairs.
Both are stored at the scale of the data: the mean difference itself, and the PCA direction times the mean
difference's length along it. Strength 1 then adds the average persona-minus-plain difference once.

Files of a `steer` directory: `vectors.safetensors` (`mean_diff`, `pca`, `positive_mean`, `negative_mean`, each
(layers, hidden)), `separation.json` (per layer and method), `sweep.json` (the layer/strength sweep and the choice),
`pairs.jsonl` (the texts the activations were read from) and `manifest.json`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from character.errors import CharacterError

METHODS = ("mean_diff", "pca")
VECTORS = "vectors.safetensors"


def mean_diff(pos, neg):
    """(layers, hidden): mean positive minus mean negative activation; pos, neg: (pairs, layers, hidden)."""
    return pos.double().mean(0) - neg.double().mean(0)


def pca_center(pos, neg):
    """(layers, hidden): per layer, the first principal direction of the pair-centred rows (repeng `pca_center`),
    signed toward the positives, scaled by the mean pair difference's length along it. The centred rows are
    +-(pos - neg)/2, whose mean is 0, so the direction is the top right singular vector of the differences."""
    import torch

    diff = pos.double() - neg.double()  # (pairs, layers, hidden)
    out = torch.zeros(diff.shape[1:], dtype=torch.float64)
    for layer in range(diff.shape[1]):
        d = diff[:, layer]
        _, _, vh = torch.linalg.svd(d / 2, full_matrices=False)
        u = vh[0]
        along = d @ u
        if (along > 0).sum() < (along < 0).sum():  # repeng's sign rule: positives above negatives in most pairs
            u, along = -u, -along
        out[layer] = u * along.mean()
    return out


def compute(pos, neg) -> dict:
    """Every method's vectors and the two sides' means, float32 (layers, hidden) tensors by name."""
    if pos.shape != neg.shape or pos.ndim != 3 or pos.shape[0] < 2:
        raise CharacterError(f"steer: need at least 2 answer pairs of equal shape, got {tuple(pos.shape)} and "
                             f"{tuple(neg.shape)}; give more pairs (--pairs)")
    return {"mean_diff": mean_diff(pos, neg).float(), "pca": pca_center(pos, neg).float(),
            "positive_mean": pos.double().mean(0).float(), "negative_mean": neg.double().mean(0).float()}


def separation(pos, neg, vectors: dict, seed: int = 0) -> list[dict]:
    """Per layer: how well each method's direction separates positive from negative answers it was not made from.
    Two folds over pairs (seeded): the direction from one half, the threshold at the midpoint of that half's two
    projected means, accuracy on the other half's answers (Wilson interval over all held-out answers); Cohen's d
    of the held-out projections; the vector's norm; the cosine between the methods' directions."""
    import torch

    from character.evaluation.scoring import wilson

    n = pos.shape[0]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    folds = [order[: n // 2], order[n // 2:]]
    fitters = {"mean_diff": mean_diff, "pca": pca_center}
    rows = []
    for layer in range(pos.shape[1]):
        row: dict = {"layer": layer}
        for method, fit in fitters.items():
            right, total, ds = 0, 0, []
            for k in (0, 1):
                train, test = folds[k], folds[1 - k]
                u = unit_vector(fit(pos[train], neg[train])[layer])
                cut = ((pos[train, layer].double() @ u).mean() + (neg[train, layer].double() @ u).mean()) / 2
                p, q = pos[test, layer].double() @ u, neg[test, layer].double() @ u
                right += int((p > cut).sum() + (q <= cut).sum())
                total += 2 * len(test)
                sd = torch.cat([p - p.mean(), q - q.mean()]).pow(2).sum().div(max(1, 2 * len(test) - 2)).sqrt()
                ds.append(float((p.mean() - q.mean()) / sd) if sd > 0 else 0.0)
            lo, hi = wilson(right, total)
            u_all = unit_vector(vectors[method][layer].double())
            row[method] = {"accuracy": round(right / total, 4), "ci95": [round(lo, 4), round(hi, 4)],
                           "cohens_d": round(sum(ds) / 2, 4), "norm": round(float(vectors[method][layer].norm()), 4),
                           "positive_projection": round(float((pos[:, layer].double() @ u_all).mean()), 4),
                           "negative_projection": round(float((neg[:, layer].double() @ u_all).mean()), 4)}
        row["cosine_mean_diff_pca"] = round(float(unit_vector(vectors["mean_diff"][layer].double())
                                                  @ unit_vector(vectors["pca"][layer].double())), 4)
        rows.append(row)
    return rows


def unit_vector(v):
    n = v.norm()
    return v / n if n > 0 else v


def middle_layers(n_layers: int, k: int) -> list[int]:
    """`k` layers evenly spread over the middle 75% of the model (repeng's and the OCT code's band)."""
    lo, hi = round(n_layers * 0.125), max(round(n_layers * 0.875) - 1, round(n_layers * 0.125))
    if k <= 1:
        return [(lo + hi) // 2]
    return sorted({round(lo + (hi - lo) * j / (k - 1)) for j in range(k)})


def save(path: Path, tensors: dict, metadata: dict[str, str]) -> None:
    """vectors.safetensors, written atomically."""
    import os
    import tempfile

    from safetensors.torch import save_file

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def load(directory: str | Path) -> dict:
    """The tensors of a steer directory's vectors.safetensors."""
    from safetensors.torch import load_file

    f = Path(directory).expanduser() / VECTORS
    if not f.is_file():
        raise CharacterError(f"steer '{directory}': no {VECTORS}; build one with `character steer build "
                             f"--constitution NAME --model M --out {directory}`")
    return load_file(str(f))


@dataclass(frozen=True)
class Steering:
    """A steered system's vector: a steer directory, which method's vector, at which layer, how strong. Frozen (a
    System holding it is a dict key); `vector()` reads the tensor."""

    path: str
    constitution: str
    method: str
    layer: int
    strength: float
    model: str = ""  # identity of the model the vector was built on

    def vector(self):
        return load(self.path)[self.method][self.layer]

    def unit(self):
        return unit_vector(self.vector().double()).float()


def open_dir(spec: str) -> Steering | None:
    """`DIR[@STRENGTH]` -> the Steering it names (the layer, method and, without @, the strength its sweep chose);
    None for the directory of a pipeline's steer stage that was left off."""
    from character.artifacts import read_manifest

    path, at, tail = spec.rpartition("@")
    strength = None
    if at and path:
        try:
            strength = float(tail)
        except ValueError:
            path = spec
    else:
        path = spec
    where = Path(path).expanduser().resolve()
    m = read_manifest(where)
    if not m or m.get("stage") != "steer" or m.get("status") != "complete":
        raise CharacterError(f"--steer '{spec}': not a finished steer directory; build one with `character steer "
                             f"build --constitution NAME --model M --out {path}`")
    if m.get("enabled") is False:
        return None
    chosen = m.get("chosen") or {}
    if not {"method", "layer", "strength"} <= set(chosen):
        raise CharacterError(f"--steer '{spec}': its manifest has no chosen layer and strength; rebuild it with "
                             "`character steer build`")
    return Steering(str(where), m.get("constitution_name", ""), chosen["method"], int(chosen["layer"]),
                    float(chosen["strength"] if strength is None else strength), m.get("inputs", {}).get("model", ""))
