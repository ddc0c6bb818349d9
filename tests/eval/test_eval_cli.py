"""`character eval`: help lists the options; bad input gives one line and exit code 2 before any engine starts."""

import pytest

from character.config import load
from character.errors import CharacterError
from character.evaluation.runner import EvalConfig, prepare_systems


def test_help_lists_options(cli):
    r = cli("eval", "--help")
    out = r.stdout + r.stderr
    for opt in ("SUITE", "--adapter", "--judge", "--constitution", "--comparisons", "--out", "--model"):
        assert opt in out, opt


@pytest.mark.parametrize("args, needle", [
    (["bogus", "--model", "tiny-random-llama"], "must be one of"),
    (["prefs", "--model", "tiny-random-llama"], "did you mean 'prefill'"),
    (["preferences", "--model", "tiny-random-llama", "--adapter", "/nonexistent/adapter"], "directory not found"),
    (["robustness", "--model", "tiny-random-llama", "--suffixes", "stop_roleplai"], "did you mean 'stop_roleplay'"),
    (["preferences", "--model", "tiny-random-llama", "--judge", "gpt"], "must be one of"),
    (["preferences,robustnes", "--model", "tiny-random-llama"], "did you mean 'robustness'"),
    (["all,apc", "--model", "tiny-random-llama"], "give it alone"),
    (["preferences,robustness", "--model", "tiny-random-llama", "--data", "x.csv"], "say which suite reads it"),
])
def test_bad_input_is_one_line_exit_2(cli, args, needle):
    r = cli("eval", *args, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_adapter_for_another_base_is_rejected(cli, tiny_adapters, smollm2_path):
    r = cli("eval", "preferences", "--model", "smollm2-135m", "--adapter", tiny_adapters[0], timeout=120)
    assert r.returncode == 2
    assert "was trained on" in r.stderr and "Traceback" not in r.stderr


def test_repeated_adapter_flags_become_a_list(tiny_adapters, tiny_llama_path, monkeypatch):
    import sys

    from character.config import argv_values

    monkeypatch.setattr(sys, "argv", ["character", "eval", "all", "--adapter", "a", "--adapter=b"])
    assert argv_values("adapter") == ["a", "b"]
    cfg = load(EvalConfig, None, suite="preferences", model="tiny-random-llama", adapter=",".join(tiny_adapters))
    base, systems = prepare_systems(cfg)
    assert [s.name for s in systems] == ["base", "sarcasm-a", "humor-b"]
    assert all(s.model == base for s in systems) and systems[0].adapter is None


def test_config_rejects_contradictions():
    with pytest.raises(CharacterError, match="comparisons"):
        load(EvalConfig, None, comparisons=0)
    with pytest.raises(CharacterError, match="did you mean 'comparisons'"):
        load(EvalConfig, None, comparison=5)


def test_another_suites_options_do_not_change_the_hash():
    from character.config import config_hash
    from character.evaluation.suites import SUITES, others_options

    a = load(EvalConfig, None, suite="preferences")
    b = load(EvalConfig, None, suite="preferences", roleid_prompts=3)
    skip = others_options(a, ["preferences"])
    assert "roleid_prompts" in skip and "comparisons" not in skip and not any(s.startswith("preferences") for s in skip)
    assert config_hash(a, skip) == config_hash(b, skip) and config_hash(a) != config_hash(b)
    assert "roleid_prompts" not in others_options(a, list(SUITES))  # `all` hashes every option


def test_several_suites_comma_separated_run_in_registry_order():
    from character.evaluation.suites import selected

    cfg = load(EvalConfig, None, suite="robustness, preferences", model="tiny-random-llama")
    assert selected(cfg.suite, cfg) == ["preferences", "robustness"]
    assert load(EvalConfig, None, suite=" all", model="tiny-random-llama").suite == "all"  # not an empty selection
    assert selected("apc", cfg) == ["apc"]
    cfg = load(EvalConfig, None, suite="preferences,apc", data=["apc=statement/"], model="tiny-random-llama")
    assert cfg.data_for("apc") == "statement/" and cfg.data_for("preferences") is None
