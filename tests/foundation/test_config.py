"""The config loader: YAML + overrides, type conversion (incl. fire's guesses), unknown keys, hashing."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import pytest

from character.config import build, config_hash, field, load
from character.errors import CharacterError


@dataclass
class Demo:
    model: str = field("smollm2-135m", help="model")
    run_name: str = field("x", help="a name")
    steps: int = field(10, help="steps")
    lr: float = field(5e-5, help="learning rate")
    betas: tuple[float, float] = field((0.9, 0.98), help="adam betas")
    targets: list[str] = field(help="modules", factory=lambda: ["all-linear"])
    flag: bool = field(False, help="a switch")
    out: str = field("runs", help="output dir", hash=False)
    limit: int | None = field(None, help="optional")

    def __post_init__(self):
        if self.steps < 0:
            raise ValueError("steps must be >= 0")


def test_yaml_then_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("steps: 20\nlr: 1e-4\nflag: yes\ntargets: [q_proj, v_proj]\n")
    cfg = load(Demo, p, steps="30")
    assert cfg.steps == 30 and cfg.lr == 1e-4 and cfg.flag is True and cfg.targets == ["q_proj", "v_proj"]


def test_fire_type_guesses_are_converted(monkeypatch):
    # fire turns "1e3" into 1000.0 and "2024-01-01" into something else; the raw token wins for str fields
    monkeypatch.setattr(sys, "argv", ["character", "--run_name", "1e3", "--steps", "1e3"])
    cfg = build(Demo, {"run_name": 1000.0, "steps": 1000.0}, from_cli=True)
    assert cfg.run_name == "1e3" and cfg.steps == 1000
    assert build(Demo, {"betas": "0.8,0.9", "limit": "none", "targets": "a,b"}).betas == (0.8, 0.9)


def test_unknown_keys_and_bad_values_are_all_reported():
    with pytest.raises(CharacterError) as e:
        build(Demo, {"step": 3, "lr": "fast", "flag": "maybe"}, where="x.yaml")
    msg = str(e.value)
    assert "x.yaml" in msg and "did you mean 'steps'" in msg and "'lr'" in msg and "'flag'" in msg


def test_post_init_errors_become_character_errors():
    with pytest.raises(CharacterError, match="steps must be >= 0"):
        build(Demo, {"steps": -1})


def test_hash_ignores_paths_but_not_settings():
    a, b, c = build(Demo, {"out": "a"}), build(Demo, {"out": "b"}), build(Demo, {"lr": 1e-3})
    assert config_hash(a) == config_hash(b) != config_hash(c)
