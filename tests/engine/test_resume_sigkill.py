"""Kill the teacher stage with SIGKILL midway, rerun it: exact row count, no duplicates, finished shards untouched."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from character.artifacts import StageDir

pytestmark = pytest.mark.slow


def test_teacher_resumes_after_sigkill(tmp_path, tiny_llama_path):
    out = tmp_path / "teacher"
    args = [sys.executable, "-m", "character", "generate", "teacher", "--constitution", "sarcasm",
            "--model", tiny_llama_path, "--backend", "hf", "--general_prompts", "none", "--n", "2",
            "--max_tokens", "24", "--shard_size", "2", "--out", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and not (out / "shard-00002.jsonl").exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert json.loads((out / "manifest.json").read_text())["status"] == "running"  # it really died midway
    finished = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("shard-*.jsonl")}
    n_shards = 25  # sarcasm: 50 questions, 2 per shard
    assert 3 <= len(finished) < n_shards

    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{len(finished)} of {n_shards} shards already on disk" in done.stderr
    rows = StageDir(out, "teacher").rows()
    ids = [r["id"] for r in rows]
    assert len(rows) == 50 * 2 and len(set(ids)) == len(ids)
    for name, stat in finished.items():
        p = out / name
        assert (p.stat().st_ino, p.stat().st_mtime_ns) == stat, f"{name} was regenerated"
    assert not list(out.glob(".*.tmp"))  # no half-written temp files left behind
    m = json.loads((out / "manifest.json").read_text())
    assert m["status"] == "complete" and m["counts"]["samples"] == 100
