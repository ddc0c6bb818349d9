"""The config loader and the command builder: YAML + flags, type conversion (incl. fire's guesses), repeated
and aliased flags, unknown keys, hashing."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import pytest

from character.config import argv_values, build, command, config_hash, field, load
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


def _fire(monkeypatch, cls, *argv, **options):
    """Build a command of `cls` and run it the way `character` does (fire over sys.argv); returns the config
    it ran with and its help text."""
    import fire

    seen = []
    cmd = command(cls, seen.append, "demo", **options)
    monkeypatch.setattr(sys, "argv", ["character", *argv])
    fire.Fire(cmd, command=list(argv), name="character")
    return seen[0], cmd.__doc__


def test_fire_type_guesses_are_converted(monkeypatch):
    # fire turns "1e3" into 1000.0 and "2024-01-01" into something else; the typed text wins for str fields
    cfg, _ = _fire(monkeypatch, Demo, "--run_name", "1e3", "--steps", "1e3", "--model=2024-01-01")
    assert cfg.run_name == "1e3" and cfg.steps == 1000 and cfg.model == "2024-01-01"
    assert build(Demo, {"betas": "0.8,0.9", "limit": "none", "targets": "a,b"}).betas == (0.8, 0.9)


@dataclass
class Extra:
    partition: str = field("", help="where")
    sets: list[str] = field(help="overrides", factory=list, split=False)


@dataclass
class WithExtra:
    target: str = field("", help="the positional one")
    from_stage: str | None = field(None, help="first stage (--from)")
    targets: list[str] = field(help="modules", factory=list)
    settings: dict = field(help="Extra's flags", factory=dict)


def test_command_positional_repeated_aliases_nested(monkeypatch, tmp_path):
    options = dict(positional="target", config=None, nested={"settings": Extra}, aliases={"from": "from_stage"})
    cfg, doc = _fire(monkeypatch, WithExtra, "p.yaml", "--targets", "a", "--targets=b,c", "--from", "x",
                     "--partition", "1e3", "--sets", "s.k=[1,2]", "--sets", "t=3", **options)
    assert cfg.target == "p.yaml" and cfg.targets == ["a", "b", "c"] and cfg.from_stage == "x"
    assert cfg.settings == {"partition": "1e3", "sets": ["s.k=[1,2]", "t=3"]}
    assert "--from: first stage" in doc and "partition: where" in doc
    with pytest.raises(CharacterError, match=r"unknown option --target_s \(did you mean 'targets'"):
        _fire(monkeypatch, WithExtra, "p.yaml", "--target_s", "a", **options)


def test_command_config_file_then_flags(monkeypatch, tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("steps: 20\nrun_name: fromfile\n")
    cfg, _ = _fire(monkeypatch, Demo, str(p), "--steps", "30")
    assert cfg.steps == 30 and cfg.run_name == "fromfile"
    assert argv_values("steps", ["--steps", "1", "--steps=2", "--other", "3"]) == ["1", "2"]


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
