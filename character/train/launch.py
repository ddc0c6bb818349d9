"""Run a training command through `accelerate launch` with one of the shipped configs.

`character train dpo --launcher cpu --num_processes 2 ...` re-executes itself as

    accelerate launch --config_file character/train/accelerate/cpu.yaml --num_processes 2 \
        -m character train dpo --config OUT/.launch-config.yaml

The resolved config travels as a YAML file, so every worker sees exactly the settings of the first call; the
environment variable CHARACTER_LAUNCHED stops the workers from launching again. Configs: single, ddp, zero2,
zero3 (DeepSpeed), fsdp (PyTorch FSDP 2; GPUs only: without CUDA the trainer runs data-parallel, `MULTI_CPU`)
and cpu (several processes on CPU over gloo).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from character.artifacts import atomic_write_text
from character.config import suggest, to_dict
from character.errors import CharacterError

LAUNCHERS = ("none", "single", "ddp", "zero2", "zero3", "fsdp", "cpu")
ENV_FLAG = "CHARACTER_LAUNCHED"


def config_file(name: str) -> Path:
    if name not in LAUNCHERS or name == "none":
        raise CharacterError(f"launcher '{name}': unknown{suggest(name, LAUNCHERS)}; use one of {', '.join(LAUNCHERS)}")
    return Path(__file__).resolve().parent / "accelerate" / f"{name}.yaml"


def should_launch(cfg) -> bool:
    return cfg.launcher != "none" and os.environ.get(ENV_FLAG) != "1"


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def launch(cfg, command: str) -> Path:
    """Re-run `character train COMMAND` under accelerate; returns the output dir once all workers finished."""
    import yaml

    out = Path(cfg.out)
    spec = out / ".launch-config.yaml"
    # replaced whole, never rewritten in place: on several nodes each node's launch writes it while the workers
    # another node started may be reading it from the shared file system
    atomic_write_text(spec, yaml.safe_dump(to_dict(cfg), sort_keys=False))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_file(cfg.launcher))]
    processes = cfg.num_processes
    if not processes and cfg.launcher in ("ddp", "zero2", "zero3", "fsdp"):
        import torch  # one process per visible GPU of this node

        processes = torch.cuda.device_count() or 0
    if processes:
        cmd += ["--num_processes", str(processes)]
    cmd += shlex.split(cfg.launcher_args)
    cmd += ["-m", "character", "train", command, "--config", str(spec)]
    env = {**os.environ, ENV_FLAG: "1"}
    print(f"launching: {shlex.join(cmd)}", file=sys.stderr, flush=True)
    rc = subprocess.run(cmd, env=env).returncode
    if rc == 2:  # a worker already printed the one-line error
        sys.exit(2)
    if rc != 0:
        raise CharacterError(f"accelerate launch ({cfg.launcher}) failed with exit code {rc}; see the log above")
    return out
