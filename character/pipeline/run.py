"""Running a resolved pipeline: stage after stage, each skipping itself when finished, sharing one engine between
consecutive generating stages, optionally each in its own process; `pipeline.json` records what ran."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from character.config import to_dict
from character.engine.lazy import SharedEngine
from character.errors import CharacterError
from character.pipeline.config import PipelineConfig, resolve, selected, stage_dir
from character.pipeline.stages import STAGE_NAMES, Stage


def _finished_at(path: Path) -> str | None:
    from character.artifacts import read_manifest

    m = read_manifest(path)
    return m.get("finished_at") if m and m.get("status") == "complete" else None


def _check_earlier(cfg: PipelineConfig, stages: list[Stage], names: list[str]) -> None:
    """With --from, the stages before it must have finished: their directories are the inputs."""
    first = STAGE_NAMES.index(stages[0].name)
    needed = {src for s in stages for _, srcs in s.inputs for src in srcs if STAGE_NAMES.index(src) < first}
    for c in names:
        missing = [src for src in sorted(needed, key=STAGE_NAMES.index) if _finished_at(stage_dir(cfg, c, src)) is None]
        if missing:
            what = f"stage '{missing[0]}' has" if len(missing) == 1 else \
                f"stages {', '.join(repr(m) for m in missing)} have"
            raise CharacterError(f"--from {stages[0].name}: {what} no finished output in {stage_dir(cfg, c, '')}; "
                                 f"run from '{missing[0]}' (or without --from) first")


def run_stage(stage: Stage, stage_cfg, isolate: bool, shared: SharedEngine | None = None) -> None:
    """Run one stage: in this process (a generating stage gets a view of the shared engine), or with `isolate` in
    a fresh interpreter, whose memory (GPU included) goes away with it."""
    if not isolate:
        fn = stage.load()[1]
        if shared is not None and stage.uses_engine:
            from character.engine.base import EngineConfig, subset

            fn(stage_cfg, engine=shared.view(subset(stage_cfg, EngineConfig)))
        else:
            if shared is not None:
                shared.close()
            fn(stage_cfg)
        return
    import subprocess
    import tempfile

    # a fresh interpreter: whatever the stage leaves in (GPU) memory goes away with it
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(to_dict(stage_cfg), f)
    try:
        rc = subprocess.run([sys.executable, "-m", "character.pipeline", stage.name, f.name]).returncode
    finally:
        Path(f.name).unlink(missing_ok=True)
    if rc == 2:
        raise CharacterError(f"stage '{stage.name}' stopped on the error above")
    if rc != 0:
        raise RuntimeError(f"stage '{stage.name}' failed with exit code {rc}; its output is above")


def _run_plan(cfg: PipelineConfig, plan, summary: dict, shared: SharedEngine) -> None:
    for (c, _), s, sc in plan:
        out = stage_dir(cfg, c, s.name)
        before = _finished_at(out)
        print(f"[{c}] {s.name} -> {out}", flush=True)
        t = time.time()
        run_stage(s, sc, cfg.isolate, shared)
        after = _finished_at(out)
        took = time.time() - t
        status = "skipped (up to date)" if before is not None and before == after else f"done in {took:.0f} s"
        print(f"[{c}] {s.name}: {status}", flush=True)
        summary.setdefault(c, {})[s.name] = {"status": "skipped" if status.startswith("skipped") else "ran",
                                             "seconds": round(took, 1), "out": str(out)}


def run_pipeline(cfg: PipelineConfig) -> Path:
    from character.artifacts import atomic_write_json

    stages = selected(cfg)
    plan = resolve(cfg, stages)
    names = list(dict.fromkeys(c[0] for c, _, _ in plan))
    if cfg.dry_run:
        import yaml

        for (c, _), s, sc in plan:
            print(f"# {c} / {s.name}  ({s.module}.{s.function})")
            print(yaml.safe_dump(to_dict(sc), sort_keys=False).rstrip() + "\n")
        return Path(cfg.out)
    _check_earlier(cfg, stages, names)
    summary: dict[str, dict] = {}
    t_all = time.time()
    shared = SharedEngine()
    try:
        _run_plan(cfg, plan, summary, shared)
    finally:
        shared.close()
    print(f"pipeline finished in {time.time() - t_all:.0f} s")
    for c in names:
        record = Path(cfg.out) / c / "pipeline.json"
        previous = json.loads(record.read_text()) if record.is_file() else {}
        atomic_write_json(record, {"stages": {**previous.get("stages", {}), **summary[c]},
                                   "pipeline": to_dict(cfg)})
        ran = [n for n, v in summary[c].items() if v["status"] == "ran"]
        print(f"[{c}] ran: {', '.join(ran) or 'nothing (all up to date)'}")
        report = stage_dir(cfg, c, "eval") / "report.md"
        if report.is_file():
            print(f"[{c}] report: {report}")
    return Path(cfg.out)
