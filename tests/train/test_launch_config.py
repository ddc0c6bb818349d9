"""`.launch-config.yaml`, which every accelerate worker reads: replaced whole, never rewritten in place.

    pytest tests/train/test_launch_config.py
"""

from __future__ import annotations

from types import SimpleNamespace

import yaml

from character.train import launch
from character.train.dpo import DPOTrainConfig


def test_launch_config_is_replaced_whole_while_a_reader_holds_the_old_one(tmp_path, monkeypatch):
    spec = tmp_path / ".launch-config.yaml"
    spec.write_text("beta: 0.5\n")
    calls = []
    monkeypatch.setattr(launch.subprocess, "run", lambda cmd, env: calls.append(cmd) or SimpleNamespace(returncode=0))
    cfg = DPOTrainConfig(data="d.jsonl", out=str(tmp_path), launcher="cpu", num_processes=2, beta=0.25)
    # a worker on another node that opened the file just before this node's launch rewrites it
    with open(spec, encoding="utf-8") as reader:
        assert launch.launch(cfg, "dpo") == tmp_path
        # in place, the reader would see the file truncated (or the new text); replaced, it reads the old one whole
        assert reader.read() == "beta: 0.5\n"
    written = yaml.safe_load(spec.read_text())
    assert written["beta"] == 0.25 and written["launcher"] == "cpu"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".launch-config.yaml"], "a temporary file was left"
    assert calls and calls[0][-2:] == ["--config", str(spec)]


def test_launch_creates_the_output_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(launch.subprocess, "run", lambda cmd, env: SimpleNamespace(returncode=0))
    out = tmp_path / "a" / "b"
    launch.launch(DPOTrainConfig(data="d.jsonl", out=str(out), launcher="cpu", num_processes=2), "dpo")
    assert yaml.safe_load((out / ".launch-config.yaml").read_text())["out"] == str(out)
