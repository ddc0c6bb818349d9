"""How a run names what it read: one identity for every input, recorded in each manifest's `inputs`.

A stage reruns when the identity of an input changes, and reuses its finished output when none did; training and
evaluation name a base model, an adapter or a data set the same way, so a result can be traced to exactly the
things it was computed from.

- `identity(ref)`: any input given by path or name.
    a file                              its SHA-256
    a stage directory (with a manifest) the output hash its manifest recorded (cheap: no re-reading)
    a model directory (config.json)     config.json, the other small files, and each weight file's size and
                                        bytes sampled at 32 places: cheap for an 8B checkpoint, and any
                                        fine-tuned or merged copy differs
    any other directory                 every file's SHA-256 (adapters from elsewhere, data sets)
    a name that is no path              the name itself (a hub id: the hub pins its content)
- `weights_identity(module)`: weights in memory (TRL's cache of reference log-probs), computed on the device.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from character.artifacts import files_hash, read_manifest, sha256_file

_SMALL = 1 << 20  # files below 1 MiB are hashed whole
_SAMPLES = 32
_SAMPLE_BYTES = 1 << 16


def identity(ref: str | Path) -> str:
    """The identity of a file, directory or name (see the module docstring)."""
    path = Path(ref).expanduser()
    if path.is_file():
        return sha256_file(path)
    if not path.is_dir():
        return str(ref)
    manifest = read_manifest(path)
    if manifest and manifest.get("status") == "complete" and manifest.get("output_hash"):
        return manifest["output_hash"]
    if (path / "config.json").is_file():
        return model_identity(path)
    return files_hash(path)


def model_identity(path: Path) -> str:
    """A model directory: small files whole, large (weight) files by size and 32 sampled 64 KiB blocks."""
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
        size = f.stat().st_size
        h.update(f"{f.relative_to(path)}:{size}:".encode())
        if size <= _SMALL:
            h.update(sha256_file(f).encode())
            continue
        with open(f, "rb") as fh:
            for i in range(_SAMPLES):
                fh.seek((size - _SAMPLE_BYTES) * i // (_SAMPLES - 1))
                h.update(fh.read(_SAMPLE_BYTES))
    return h.hexdigest()[:16]


_CHUNK = 1 << 24
_GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)  # odd, as a signed int64


def weights_identity(module) -> str:
    """SHA-256 of every tensor's name, dtype, shape and two 64-bit sums of its bits, computed where it lives.

    The bits are read as integers (no rounding), summed plainly and weighted by position, in 64-bit integers whose
    overflow wraps; integer sums do not depend on the reduction order, so a GPU and a CPU give the same digest. A
    changed, added or moved weight changes it. An 8B model on a GPU takes well under a second.
    """
    import hashlib

    import torch

    ints = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
    weights: dict[torch.device, torch.Tensor] = {}
    h = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in sorted(module.state_dict().items()):
            h.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
            flat = tensor.detach().contiguous().reshape(-1)
            size = flat.element_size()
            bits = flat.view(ints[size]) if size in ints else flat.view(torch.uint8)
            need = min(bits.numel(), _CHUNK)
            if bits.device not in weights or weights[bits.device].numel() < need:
                weights[bits.device] = torch.arange(need, dtype=torch.int64, device=bits.device) * _GOLDEN + 1
            w = weights[bits.device]
            plain = weighted = 0
            for start in range(0, bits.numel(), _CHUNK):
                x = bits[start:start + _CHUNK].to(torch.int64)
                s = int(x.sum())
                # weight of position start+i: (start+i)*G + 1 = (i*G + 1) + start*G
                plain += s
                weighted += int((x * w[:x.numel()]).sum()) + start * _GOLDEN * s
            h.update(f"{plain % (1 << 64)}|{weighted % (1 << 64)};".encode())
    return h.hexdigest()
