"""A training run's output directory: skip when done, resume from checkpoints, publish the adapter, metrics.

The output directory of a training run is a PEFT adapter directory (loadable by vLLM's LoRARequest and by
PeftModel) plus tokenizer files, `config.resolved.json`, `metrics.json` and `manifest.json`. Checkpoints go to
`OUT/checkpoints/`; a rerun of the same settings and data continues from the last complete one (`--resume false`
starts over). The adapter files appear only when training has finished (moved in, `adapter_config.json` last), and
`manifest.json` says `complete` only after that. A finished adapter is replaced only by a finished one: a run with
other settings or data trains in `.OUT.next/` beside it and the two are swapped when it publishes.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

from character.artifacts import StageDir, atomic_write_json, matches, read_manifest
from character.config import config_hash, to_dict
from character.errors import CharacterError
from character.train.config import TrainConfig, world_size
from character.train.launch import is_main_process

PUBLISHED = ("adapter_config.json", "adapter_model.safetensors", "metrics.json", "config.resolved.json")


def last_checkpoint(out: Path) -> str | None:
    """The newest checkpoint that was written completely (a kill can interrupt a save)."""
    ckpts = []
    for d in (out / "checkpoints").glob("checkpoint-*"):
        if (d / "trainer_state.json").is_file() and (d / "adapter_model.safetensors").is_file():
            try:
                ckpts.append((int(d.name.split("-")[1]), d))
            except ValueError:
                continue
    return str(max(ckpts)[1]) if ckpts else None


class Run:
    """One training run's output directory: skip if done, resume, publish beside a finished adapter, manifest.

    `final` is where the adapter lives; `out` is where this run works: the same directory, or `.NAME.next/` beside
    a finished adapter of other settings or data, which stays in place until this run publishes."""

    def __init__(self, cfg: TrainConfig, stage: str, inputs: dict[str, str]):
        self.cfg = cfg
        self.final = Path(cfg.out).expanduser()
        self.out = self.final
        self.dir = StageDir(self.final, stage)
        self.hash = config_hash(cfg)
        self.inputs = inputs
        self.started = time.time()
        self.resume_from: str | None = None

    def done(self) -> bool:
        return self.dir.is_complete(self.hash, self.inputs) and (self.final / "adapter_config.json").is_file()

    def start(self, command: str) -> bool:
        """True: train in this process, from checkpoint `self.resume_from` (None: from scratch). False: nothing to
        do here, because a finished adapter matches, or because the launcher ran `character train COMMAND` under
        `accelerate launch` to the end. Called after the input checks: bad input and finished runs cost no
        accelerate start-up."""
        from character.train.launch import launch, should_launch

        if self.done():
            print(f"{self.final}: already trained with these settings and data; skipping")
            return False
        if should_launch(self.cfg):
            launch(self.cfg, command)
            return False
        self.resume_from = self.begin()
        return True

    def begin(self) -> str | None:
        """Prepare the directory; returns the checkpoint to resume from (None: start fresh).

        Every process of a launch decides the same way: `StageDir.work_dir` reads only the final manifest, and
        the working directory's manifest is written by the main process only, after deciding."""
        work = self.dir.work_dir(self.hash, self.inputs)
        replacing = work != self.final
        same = matches(read_manifest(work), self.hash, self.inputs)
        resume_from = last_checkpoint(work) if self.cfg.resume and same else None
        if resume_from:
            print(f"{work}: resuming from {Path(resume_from).name} (same settings and data)", file=sys.stderr)
        elif not same and last_checkpoint(work):
            print(f"{work}: its checkpoints come from a run with other settings or data; starting from step 0",
                  file=sys.stderr)
        if is_main_process():
            work.mkdir(parents=True, exist_ok=True)
            if not replacing:  # an unfinished run's adapter files must not make this run look done
                for name in PUBLISHED:
                    (work / name).unlink(missing_ok=True)
            if resume_from is None and (work / "checkpoints").exists():
                shutil.rmtree(work / "checkpoints")
            self.dir.begin(to_dict(self.cfg), self.hash, self.inputs)
            assert self.dir.path == work, (self.dir.path, work)
        self.out = work
        return resume_from

    @property
    def staging(self) -> Path:
        return self.out / ".publish.tmp"

    def save(self, trainer) -> None:
        """Write the trained adapter and tokenizer to the staging directory. Call on every process: through the
        trainer, DeepSpeed ZeRO-3 and FSDP gather the adapter's partitioned weights before the main process
        writes them (a plain `model.save_pretrained` there would write its own shard only). Adapters the model
        carries frozen (SFT's started-from one) are not part of the result."""
        if is_main_process() and self.staging.exists():
            shutil.rmtree(self.staging)
        trainer.accelerator.wait_for_everyone()
        trainer.save_model(str(self.staging))
        if is_main_process():
            for sub in self.staging.iterdir():  # PEFT writes each non-default adapter in a subdirectory
                if sub.is_dir() and (sub / "adapter_config.json").is_file():
                    shutil.rmtree(sub)
            (self.staging / "training_args.bin").unlink(missing_ok=True)  # a pickle; the config is in JSON
            if not (self.staging / "adapter_model.safetensors").is_file():
                raise CharacterError(f"{self.out}: the trainer saved no adapter_model.safetensors; the training "
                                     f"finished but its adapter was not written")

    def publish(self, metrics: dict) -> None:
        """Main process, after `save`: metrics and config join the adapter; the adapter config is moved in last,
        the manifest after it, and a run working beside a finished adapter is swapped in for it."""
        staging = self.staging
        atomic_write_json(staging / "metrics.json", {**metrics, "resumed_from": self.resume_from})
        atomic_write_json(staging / "config.resolved.json", to_dict(self.cfg))
        names = sorted(p.name for p in staging.iterdir())
        for name in [n for n in names if n != "adapter_config.json"] + ["adapter_config.json"]:
            os.replace(staging / name, self.out / name)
        staging.rmdir()
        if not self.cfg.keep_checkpoints:
            shutil.rmtree(self.out / "checkpoints", ignore_errors=True)
        (self.out / ".launch-config.yaml").unlink(missing_ok=True)
        self.dir.finish(counts=metrics.get("counts", {}), timings={"train_s": round(time.time() - self.started, 1)})
        self.out = self.final
        print(f"saved adapter to {self.out}", flush=True)


def summarize(trainer, counts: dict, keys: tuple[str, ...]) -> dict:
    """metrics.json: first/last values of the logged series plus the full log history."""
    history = trainer.state.log_history
    series: dict[str, list[float]] = {}
    for entry in history:
        for k, v in entry.items():
            if isinstance(v, (int, float)) and (k in keys or k == "loss"):
                series.setdefault(k, []).append(float(v))
    final = next((e for e in reversed(history) if "train_runtime" in e), {})
    return {
        "global_step": trainer.state.global_step,
        "world_size": world_size(),
        "distributed": str(trainer.accelerator.distributed_type).rsplit(".", 1)[-1],  # e.g. FSDP, DEEPSPEED
        "counts": counts,
        "first": {k: v[0] for k, v in series.items()},
        "last": {k: v[-1] for k, v in series.items()},
        "mean": {k: sum(v) / len(v) for k, v in series.items()},
        "train_runtime_s": final.get("train_runtime"),
        "train_loss": final.get("train_loss"),
        "log_history": history,
    }
