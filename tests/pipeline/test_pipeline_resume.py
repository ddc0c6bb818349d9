"""A killed `character run` resumes where it was, with no flag (issue 13, item 5): SIGKILL during train-dpo after
a checkpoint; the same command again skips the finished stages and continues training from that checkpoint to
the step count of an uninterrupted run.

    pytest tests/pipeline/test_pipeline_resume.py
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow]

STEPS = 6
REPO = Path(__file__).resolve().parents[2]


def test_killed_pipeline_resumes_training_at_its_checkpoint(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "character", "run", "pipelines/tiny.yaml", "--out", str(out), "--until", "train-dpo",
           "--set", f"train-dpo.max_steps={STEPS}"]  # tiny.yaml saves a checkpoint at every step
    stage = out / "sarcasm" / "train-dpo"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None:
            if (stage / "checkpoints" / "checkpoint-2" / "trainer_state.json").is_file():
                break
            time.sleep(0.2)
        assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert json.loads((stage / "manifest.json").read_text())["status"] == "running"

    second = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    log = second.stdout + second.stderr
    assert "[sarcasm] ran: train-dpo\n" in log  # the finished stages were skipped
    metrics = json.loads((stage / "metrics.json").read_text())
    assert metrics["global_step"] == STEPS  # as an uninterrupted run
    resumed = int(metrics["resumed_from"].rsplit("-", 1)[1])
    assert resumed >= 2
    assert [e["step"] for e in metrics["log_history"] if "loss" in e] == list(range(1, STEPS + 1))
    assert log.count("{'loss'") == STEPS - resumed  # only the steps after the checkpoint were trained again
