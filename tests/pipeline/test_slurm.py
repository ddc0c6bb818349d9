"""The pipeline on a real Slurm cluster (this machine, one node): the chain of job arrays, then a requeue.

    pytest -m slurm tests/pipeline/test_slurm.py

The fixture installs slurm-wlm and munge when missing and starts munged, slurmctld and slurmd (see
slurm_cluster.py). The chain runs pipelines/tiny.yaml on tiny-chat-llama for three constitutions, a shipped one, a
file from outside the repo, and one whose train-dpo fails on purpose: five job arrays linked task to task
(aftercorr). The first two finish; the third stops at train-dpo and its later tasks are cancelled, not left
pending. Then the finished outputs are checked from outside Slurm: a local `character run` over them does nothing,
and a changed DPO setting reruns from train-dpo on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from character.artifacts import read_jsonl, read_manifest
from character.pipeline import STAGE_NAMES
from character.resources import data_path

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
TINY = data_path("pipelines", "tiny.yaml")
CONSTITUTIONS = ("sarcasm", "wry")  # wry: a new persona in a file of its own
DOOMED = "doomed"  # a third persona, whose train-dpo fails on purpose


def run_character(*args, env: dict | None = None, cwd: Path, timeout: float = 600):
    return subprocess.run([sys.executable, "-m", "character", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def _submit(cluster, out: Path, *flags: str) -> list[str]:
    r = run_character("slurm", "submit", TINY, "--gpus", "0", "--out", out / "runs", "--logs", out / "logs",
                      *flags, env={"SLURM_CONF": cluster.env["SLURM_CONF"]}, cwd=out, timeout=300)
    assert r.returncode == 0, r.stderr
    return [line.split()[0] for line in r.stdout.splitlines() if line[:1].isdigit()]


def _persona(out: Path, name: str) -> Path:
    path = out / "personas" / f"{name}.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(data_path("constitutions", "humor.yaml").read_text().replace("name: humor", f"name: {name}", 1))
    return path


@pytest.fixture(scope="module")
def chain(slurm_cluster, tmp_path_factory):
    out = tmp_path_factory.mktemp("chain")
    wry, doomed = _persona(out, "wry"), _persona(out, DOOMED)
    # a file where train-dpo's output directory goes: that stage, and only that one, fails for this persona
    (out / "runs" / DOOMED).mkdir(parents=True)
    (out / "runs" / DOOMED / "train-dpo").write_text("in the way on purpose\n")
    ids = _submit(slurm_cluster, out, "--constitution", f"sarcasm,{wry},{doomed}")
    # a task pending on a dependency that can never be met would wait forever: report it instead of timing out
    states = slurm_cluster.wait(ids, timeout=900, never_after=20)
    return out, ids, states


def _tasks(slurm_cluster, job: str) -> dict[int, dict[str, str]]:
    return {int(r["ArrayTaskId"]): r for r in slurm_cluster.jobs(job) if r.get("ArrayTaskId", "").isdigit()}


def test_chain_of_job_arrays_completes_with_every_output(chain, slurm_cluster):
    out, ids, states = chain
    assert len(ids) == 5
    pending = {k: v for k, v in states.items() if v.startswith("PENDING")}
    assert not pending, f"left pending forever: {pending}"
    assert len(states) == 5 * (len(CONSTITUTIONS) + 1), states
    logs = "\n".join(p.read_text()[-1500:] for p in sorted((out / "logs").glob("*.out")))
    failed = {k: v for k, v in states.items() if v != "COMPLETED" and not k.endswith("_2")}
    assert not failed, f"{failed}\n{logs}"
    # task to task (aftercorr): each constitution's task started after its own task in the job before had ended
    tasks = {j: _tasks(slurm_cluster, j) for j in ids}
    for prev, nxt in zip(ids, ids[1:]):
        for i in range(len(CONSTITUTIONS)):
            assert tasks[nxt][i]["StartTime"] >= tasks[prev][i]["EndTime"], (prev, nxt, i)
    for c in CONSTITUTIONS:
        for stage in STAGE_NAMES:
            m = read_manifest(out / "runs" / c / stage)
            assert m and m["status"] == "complete", f"{c}/{stage}: {m}"
        assert (out / "runs" / c / "merge" / "adapter_config.json").is_file()
        assert (out / "runs" / c / "eval" / "report.md").is_file()
    # the doomed persona ran generate-dpo and failed in train-dpo: two logs more, none for what never ran
    assert len(list((out / "logs").glob("character-*-*_*.out"))) == 5 * len(CONSTITUTIONS) + 2
    assert json.loads((out / "runs" / "slurm" / "jobs.json").read_text())["eval"] == ids[-1]


def test_a_persona_that_fails_stops_alone_and_its_later_tasks_are_cancelled(chain, slurm_cluster):
    out, ids, states = chain
    doomed = {job: states.get(f"{job}_2") for job in ids}
    logs = "\n".join(p.read_text()[-1500:] for p in sorted((out / "logs").glob("*_2.out")))
    assert doomed[ids[0]] == "COMPLETED", logs
    assert doomed[ids[1]] == "FAILED", logs
    assert "train-dpo" in (out / "logs" / f"character-train-dpo-{ids[1]}_2.out").read_text()
    # not pending forever on a dependency that can never be met (afterok left every persona's later jobs so)
    assert [doomed[j] for j in ids[2:]] == ["CANCELLED"] * 3, states
    for job in ids[2:]:
        assert _tasks(slurm_cluster, job)[2]["Reason"] == "DependencyNeverSatisfied"
    assert read_manifest(out / "runs" / DOOMED / "dpo-data")["status"] == "complete"
    for stage in ("reflection", "interaction", "sft-data", "train-sft", "merge", "eval"):
        assert not (out / "runs" / DOOMED / stage).exists(), stage


def _ran(out: Path, c: str) -> set[str]:
    stages = json.loads((out / "runs" / c / "pipeline.json").read_text())["stages"]
    return {name for name, v in stages.items() if v["status"] == "ran"}


def test_local_rerun_of_the_finished_chain_does_nothing(chain):
    out, _, _ = chain
    r = run_character("run", TINY, "--constitution", "sarcasm", "--out", out / "runs", cwd=out)
    assert r.returncode == 0, r.stderr
    assert "ran: nothing (all up to date)" in r.stdout
    assert _ran(out, "sarcasm") == set()


def test_changed_dpo_setting_reruns_from_train_dpo_on(chain):
    out, _, _ = chain
    before = {s: read_manifest(out / "runs" / "wry" / s)["finished_at"] for s in STAGE_NAMES}
    time.sleep(1)  # manifests record seconds
    r = run_character("run", TINY, "--constitution", out / "personas" / "wry.yaml", "--out", out / "runs", "--set",
                      "train-dpo.beta=0.3", cwd=out)
    assert r.returncode == 0, r.stderr
    ran = _ran(out, "wry")
    first = STAGE_NAMES.index("train-dpo")
    assert not ran & set(STAGE_NAMES[:first]), ran
    assert {"train-dpo", "train-sft", "merge", "eval"} <= ran, ran
    after = {s: read_manifest(out / "runs" / "wry" / s)["finished_at"] for s in STAGE_NAMES}
    assert all(after[s] == before[s] for s in STAGE_NAMES[:first])


def test_requeued_job_resumes_without_losing_or_repeating_rows(slurm_cluster, tmp_path):
    # the teacher stage alone, 62 prompts in shards of 2: long enough to interrupt after a few shards
    ids = _submit(slurm_cluster, tmp_path, "--constitution", "sarcasm", "--until", "teacher",
                  "--set", "teacher.shard_size=2", "--set", "teacher.general_limit=12")
    job = ids[0]
    teacher = tmp_path / "runs" / "sarcasm" / "teacher"
    deadline = time.time() + 240
    while len(list(teacher.glob("shard-*.jsonl"))) < 3:
        assert time.time() < deadline, slurm_cluster.logs()
        assert slurm_cluster.states(job).get(f"{job}_0") not in ("FAILED", "COMPLETED"), "finished too early"
        time.sleep(0.2)
    slurm_cluster.run("scontrol", "requeue", f"{job}_0")
    early = {p.name: p.stat().st_ino for p in teacher.glob("shard-*.jsonl")}
    assert read_manifest(teacher)["status"] == "running", "the job ended before the requeue; nothing was tested"
    states = slurm_cluster.wait([job], timeout=300)
    log = "\n".join(p.read_text() for p in (tmp_path / "logs").glob("*.out"))
    assert states == {f"{job}_0": "COMPLETED"}, log
    assert "restart 1" in log and "already on disk; resuming" in log
    [rec] = slurm_cluster.jobs(job)
    assert rec["Restarts"] == "1"
    m = read_manifest(teacher)
    assert m["status"] == "complete"
    rows = [r for p in sorted(teacher.glob("shard-*.jsonl")) for r in read_jsonl(p)]
    ids_seen = [(r["prompt_id"], r["sample"]) for r in rows]
    assert len(ids_seen) == len(set(ids_seen)), "a row was written twice"
    assert len(rows) == m["counts"]["samples"] == m["counts"]["prompts"], m["counts"]
    # the shards finished before the requeue were kept as they were, not written again
    for name, inode in early.items():
        assert (teacher / name).stat().st_ino == inode, f"{name} was rewritten after the requeue"
