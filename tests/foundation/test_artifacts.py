"""Finished work survives reruns: settings that change nothing keep it, a run of other settings replaces it only
when complete, and a changed shard size does not re-cut shards already written (issue 13, item 6).

    pytest tests/foundation/test_artifacts.py
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from character.artifacts import StageDir
from character.config import config_hash
from character.stages.common import run_sharded
from character.stages.distill import TeacherConfig
from character.train.dpo import DPOTrainConfig


def rows_of(items, offset):
    return [{"i": offset + k, "item": x} for k, x in enumerate(items)]


def finished(path, cfg_hash="A", items=("a", "b", "c")) -> StageDir:
    out = StageDir(path, "teacher")
    out.begin({"v": cfg_hash}, cfg_hash, {"in": "1"})
    run_sharded(out, list(items), 2, rows_of, "teacher")
    out.finish(counts={"rows": len(items)})
    return out


def test_settings_that_change_no_output_are_not_in_the_hash():
    base = TeacherConfig(out="x", prompts="p", constitution="sarcasm")
    h = config_hash(base)
    same = [("shard_size", 7), ("max_model_len", 8192), ("enable_prefix_caching", False), ("batch_size", 3),
            ("out", "y"), ("tensor_parallel_size", 2), ("kv_cache_gib", 4.0), ("trust_remote_code", True)]
    for name, value in same:
        assert config_hash(dataclasses.replace(base, **{name: value})) == h, name
    for name, value in [("temperature", 0.3), ("max_tokens", 17), ("seed", 5), ("model", "other"),
                        ("dtype", "float32"), ("answer_hint", "Be brief.")]:
        assert config_hash(dataclasses.replace(base, **{name: value})) != h, name
    train = DPOTrainConfig(data="d", out="o")
    for name, value in [("per_device_batch_size", 2), ("save_steps", 3), ("resume", False), ("launcher", "ddp")]:
        assert config_hash(dataclasses.replace(train, **{name: value})) == config_hash(train), name


def test_a_run_of_other_settings_works_beside_the_finished_result_until_it_finishes(tmp_path):
    path = tmp_path / "teacher"
    finished(path, "A")
    before = sorted(p.name for p in path.iterdir())

    out = StageDir(path, "teacher")
    assert not out.is_complete("B", {"in": "1"})
    out.begin({"v": "B"}, "B", {"in": "1"})
    assert out.path == out.next and out.path != path
    out.shard_size(2)
    out.write_shard(0, [{"i": 0, "item": "new0"}, {"i": 1, "item": "new1"}])
    # "killed" here: the finished result of A is untouched and still complete
    assert sorted(p.name for p in path.iterdir()) == before
    assert StageDir(path, "teacher").is_complete("A", {"in": "1"})

    rerun = StageDir(path, "teacher")
    rerun.begin({"v": "B"}, "B", {"in": "1"})
    assert rerun.done_shards() == {0}  # the replacement resumes where it was killed
    run_sharded(rerun, ["x", "y", "z"], 2, rows_of, "teacher")
    assert json.loads(rerun.shard_path(0).read_text().splitlines()[0])["item"] == "new0"
    rerun.finish(counts={"rows": 3})
    assert rerun.path == path and not rerun.next.exists() and not rerun.old.exists()
    assert StageDir(path, "teacher").is_complete("B", {"in": "1"})
    assert [r["item"] for r in StageDir(path, "teacher").rows()] == ["new0", "new1", "z"]


def test_unfinished_shards_of_other_settings_are_dropped(tmp_path):
    out = StageDir(tmp_path / "s", "teacher")
    out.begin({}, "A", {})
    out.write_shard(0, [{"i": 0}])
    other = StageDir(tmp_path / "s", "teacher")
    other.begin({}, "B", {})
    assert other.path == other.final and other.done_shards() == set()


def test_a_changed_shard_size_keeps_the_shards_on_disk(tmp_path, capsys):
    items = [f"p{i}" for i in range(7)]
    out = StageDir(tmp_path / "s", "teacher")
    out.begin({}, "A", {})
    calls = []

    def dies_after_two(batch, offset):
        if len(calls) == 2:
            raise KeyboardInterrupt  # a kill after two shards
        calls.append(offset)
        return rows_of(batch, offset)

    with pytest.raises(KeyboardInterrupt):
        run_sharded(out, items, 2, dies_after_two, "teacher")
    assert out.done_shards() == {0, 1}

    rerun = StageDir(tmp_path / "s", "teacher")
    rerun.begin({}, "A", {})  # same hash: shard_size is not in it
    timings = run_sharded(rerun, items, 5, rows_of, "teacher")
    assert "cut at 2 items" in capsys.readouterr().err
    assert timings["shards"] == 4 and timings["shards_resumed"] == 2
    assert [r["i"] for r in rerun.rows()] == list(range(7))  # no row lost, none repeated


def test_an_interrupted_swap_is_completed(tmp_path):
    path = tmp_path / "teacher"
    # as if killed between the two renames of a swap: the old result moved aside, the complete new one not yet in
    finished(tmp_path / "a", "A").final.rename(tmp_path / ".teacher.old")
    finished(tmp_path / "b", "B", ("q",)).final.rename(tmp_path / ".teacher.next")
    assert not path.exists()
    recovered = StageDir(path, "teacher")
    assert path.is_dir() and not recovered.next.exists() and not recovered.old.exists()
    assert recovered.is_complete("B", {"in": "1"}) and [r["item"] for r in recovered.rows()] == ["q"]
