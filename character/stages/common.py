"""What every data stage shares: the config base, the stage lifecycle, prompt sources, sharded resumable
generation, summaries. Stages import from here, never from each other.

Every stage runs inside `stage_run`, which owns the skeleton (skip a finished result, begin, time, finish, print
the summary) so that a stage keeps only its own work::

    with stage_run(cfg, "teacher", inputs) as run:
        if run.done:                        # complete for these settings and inputs; nothing to do
            return run.path
        lazy = run.engine(engine)           # started on first use, closed and timed by stage_run
        timings = run_sharded(run.out, items, cfg.shard_size, work, "teacher")
        run.record(counts, timings, models={"teacher": cfg.model})
    return run.path                         # the final directory

A generating stage's config inherits every `EngineConfig` and `Sampling` field (so `--model`, `--backend`,
`--temperature`, `--max_tokens`, `--n`, `--seed` are flags of each) and adds its own. `run_sharded` walks the
work items in fixed shards: a shard already on disk is skipped, a missing one is generated and written atomically,
and seeds follow the item's global index, so a resumed run writes what an uninterrupted one would have.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

from character.artifacts import StageDir, read_jsonl
from character.config import config_hash, field, to_dict
from character.engine.base import Engine, EngineConfig, Sampling, subset
from character.engine.lazy import LazyEngine
from character.errors import CharacterError
from character.resources import data_path


@dataclasses.dataclass(kw_only=True)
class GenerateConfig(Sampling, EngineConfig):
    """Fields shared by the generating stages (plus every engine and sampling flag)."""

    out: str = field(help="output directory (shards + manifest.json)", hash=False)
    shard_size: int = field(64, help="prompts per shard: the unit of resume after a crash (a rerun keeps the size "
                            "its shards on disk were cut at)", hash=False)

    def __post_init__(self):
        Sampling.__post_init__(self)
        if self.shard_size < 1:
            raise ValueError("shard_size must be >= 1")


def stage_dir(cfg, name: str) -> StageDir:
    return StageDir(Path(cfg.out).expanduser(), name)


def engine_config(cfg) -> EngineConfig:
    return subset(cfg, EngineConfig)


def sampling_config(cfg, **changes) -> Sampling:
    return dataclasses.replace(subset(cfg, Sampling), **changes)


def require_finished(path: str | Path, stage: str) -> StageDir:
    """The finished output of `stage` at `path` (an input of a later stage); a one-line error if it is not one."""
    sd = StageDir(Path(path).expanduser(), stage)
    m = sd.manifest
    if not m or m.get("stage") != stage or m.get("status") != "complete":
        raise CharacterError(f"{stage} '{path}': not a finished {stage} stage directory; run "
                             f"`character generate {stage} --out {path}` first")
    return sd


@dataclasses.dataclass(slots=True)
class StageRun:
    """One run of a stage, as `stage_run` yields it. `done`: a finished result matches the settings and inputs, so
    the body returns `path` at once. Otherwise the body writes into `out` (only through `out.path`, which `begin`
    may point at a staging directory) and hands its results to `record`."""

    cfg: object
    out: StageDir
    done: bool
    counts: dict = dataclasses.field(default_factory=dict)
    timings: dict = dataclasses.field(default_factory=dict)
    summary: dict | None = None
    manifest: dict = dataclasses.field(default_factory=dict)
    lazy: LazyEngine | None = None

    @property
    def path(self) -> Path:
        return self.out.path

    def engine(self, engine: Engine | LazyEngine | None = None) -> LazyEngine:
        """The stage's engine, started on first use; `stage_run` closes it (unless it was given: a pipeline's
        shared engine outlives the stage) and records its start time."""
        if isinstance(engine, LazyEngine):
            self.lazy = engine
        else:
            self.lazy = LazyEngine(engine_config(self.cfg), engine=engine)
        return self.lazy

    def record(self, counts: dict, timings: dict | None = None, summary: dict | None = None, **manifest) -> None:
        """What `finish` writes: counts, timings (`total_s` is added) and other manifest fields; `summary`: the
        counts the closing line prints, when not all of them."""
        assert not self.done, "a finished stage has nothing to record: return when run.done"
        self.counts, self.timings, self.summary, self.manifest = counts, dict(timings or {}), summary, manifest


@contextlib.contextmanager
def stage_run(cfg, name: str, inputs: dict, fresh: bool = False) -> Iterator[StageRun]:
    """Run stage `name` into `cfg.out`: see the module docstring. `fresh`: drop shards a killed run of the same
    settings left (for stages that rebuild everything at once, whose filters are global)."""
    out = stage_dir(cfg, name)
    cfg_hash = config_hash(cfg)
    if out.is_complete(cfg_hash, inputs):
        print(f"{name}: {out.path} is complete for these settings and inputs; nothing to do", file=sys.stderr)
        yield StageRun(cfg, out, done=True)
        return
    t0 = time.time()
    out.begin(to_dict(cfg), cfg_hash, inputs)
    if fresh:
        for p in out.shards():
            p.unlink()
    run = StageRun(cfg, out, done=False)
    try:
        yield run
    finally:
        if run.lazy is not None:
            run.lazy.close()
    secs = time.time() - t0
    timings = {**run.timings, "total_s": round(secs, 2)}
    if run.lazy is not None:
        timings["engine_start_s"] = round(run.lazy.started_s, 2)
    out.finish(counts=run.counts, timings=timings, **run.manifest)
    summarize(name, run.counts if run.summary is None else run.summary, secs)


def run_sharded(out: StageDir, items: list, shard_size: int, work: Callable[[list, int], list[dict]],
                desc: str) -> dict:
    """Generate missing shards: `work(items_of_shard, global_offset) -> rows`. Returns per-shard timings."""
    from tqdm import tqdm

    shard_size = out.shard_size(shard_size)  # the size the shards on disk were cut at, if any
    n_shards = max(1, -(-len(items) // shard_size))
    for stale in out.path.glob(".*.tmp"):  # half-written files of a killed run (one writer per stage dir)
        stale.unlink(missing_ok=True)
    done = out.done_shards()
    todo = [i for i in range(n_shards) if i not in done]
    skipped = n_shards - len(todo)
    if skipped:
        print(f"{desc}: {skipped} of {n_shards} shards already on disk; resuming", file=sys.stderr)
    t0 = time.time()
    for i in tqdm(todo, desc=desc, unit="shard", disable=not todo):
        start = i * shard_size
        out.write_shard(i, work(items[start:start + shard_size], start))
    return {"generate_s": round(time.time() - t0, 2), "shards": n_shards, "shards_resumed": skipped}


def seeded(sampling: Sampling, offset: int) -> Sampling:
    """Sampling whose per-request seeds (seed + index in the call) continue at a global offset."""
    if sampling.seed is None:
        return sampling
    return dataclasses.replace(sampling, seed=sampling.seed + offset)


def summarize(stage: str, counts: dict, seconds: float) -> None:
    parts = ", ".join(f"{k} {v}" for k, v in counts.items())
    print(f"{stage}: {parts} ({seconds:.1f} s)", file=sys.stderr)


def problem_counts(rows: list[dict]) -> dict:
    c = Counter(r.get("problem") or "ok" for r in rows)
    return dict(sorted(c.items()))


# -- prompt sources ------------------------------------------------------------------------------------------

PROMPT_KEYS = ("prompt", "question", "instruction", "text", "input")
HELD_OUT = "eval.jsonl"  # evals/prompts/eval.jsonl: what `character eval` scores, disjoint from general.jsonl


def load_prompt_source(spec: str, limit: int = 0, seed: int = 0) -> list[str]:
    """User messages from `builtin` (evals/prompts/general.jsonl, the training set), `none`, a JSONL/CSV file, or
    `hf:org/name:split:column` (a dataset on the hub or in the local HF cache)."""
    spec = (spec or "").strip()
    if spec.lower() in ("", "none", "off"):
        return []
    if spec == "builtin":
        prompts = _from_jsonl(data_path("evals", "prompts", "general.jsonl"))
    elif spec.startswith("hf:"):
        prompts = _from_hf(spec)
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise CharacterError(f"general_prompts '{spec}': file not found; give 'builtin', 'none', a .jsonl or "
                                 f".csv file, or hf:org/name:split:column")
        if path.resolve() == data_path("evals", "prompts", HELD_OUT).resolve():
            raise CharacterError(f"general_prompts '{spec}': that is the held-out evaluation set, which generation "
                                 f"never reads (answers to it would be trained on); use 'builtin' or another file")
        prompts = _from_csv(path) if path.suffix.lower() == ".csv" else _from_jsonl(path)
    prompts = list(dict.fromkeys(p.strip() for p in prompts if p and p.strip()))
    if limit and len(prompts) > limit:
        prompts = random.Random(seed).sample(prompts, limit)
    return prompts


def _from_jsonl(path: Path) -> list[str]:
    out = []
    for n, row in enumerate(read_jsonl(path), 1):
        text = next((row[k] for k in PROMPT_KEYS if isinstance(row.get(k), str)), None)
        if text is None and isinstance(row.get("messages"), list) and row["messages"]:
            text = row["messages"][0].get("content")
        if not isinstance(text, str):
            raise CharacterError(f"{path}:{n}: no prompt text; give each row one of the keys {', '.join(PROMPT_KEYS)}")
        out.append(text)
    return out


def _from_csv(path: Path) -> list[str]:
    import csv

    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return []
    key = next((k for k in PROMPT_KEYS if k in rows[0]), None) or next(iter(rows[0]))
    return [r[key] for r in rows]


def _from_hf(spec: str) -> list[str]:
    parts = spec[3:].split(":")
    if len(parts) != 3 or not all(parts):
        raise CharacterError(f"general_prompts '{spec}': expected hf:org/name:split:column")
    name, split, column = parts
    try:
        from datasets import load_dataset

        ds = load_dataset(name, split=split)
    except Exception as e:  # noqa: BLE001 - offline, missing dataset, bad split: one line for the user
        raise CharacterError(f"general_prompts '{spec}': could not load the dataset ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}); check the name and split, or use a "
                             f"local file") from None
    if column not in ds.column_names:
        raise CharacterError(f"general_prompts '{spec}': no column '{column}'; columns: {', '.join(ds.column_names)}")
    return [str(x) for x in ds[column]]


# -- model names ---------------------------------------------------------------------------------------------

def model_display_name(model: str) -> str:
    """The name a model calls itself: from its chat template's default system prompt ("... named SmolLM"),
    else from the checkpoint's folder name."""
    from character import models

    try:
        path = Path(models.resolve(model))
    except CharacterError:
        path = Path(model)
    template = ""
    for f in ("chat_template.jinja", "tokenizer_config.json"):
        p = path / f
        if p.is_file():
            text = p.read_text(encoding="utf-8", errors="replace")
            template += json.loads(text).get("chat_template") or "" if f.endswith(".json") else text
    m = re.search(r"\bnamed ([A-Z][\w.-]*[\w])", str(template))
    if m:
        return m.group(1)
    stem = re.split(r"[-_]", path.name or str(model))[0]
    return stem[:1].upper() + stem[1:] if stem else "Assistant"

