"""`character steer project` on the tiny random Llama: every system's projection with intervals, the adapter and
the persona-prompted base beside the base; bad input is one line and exit code 2."""

import json

import pytest

from character.steer.project import ProjectConfig, run_project


@pytest.mark.slow
def test_project_reports_each_system_with_intervals(tmp_path, tiny_llama_path, tiny_adapter, steer_dir_factory):
    d = steer_dir_factory(tmp_path / "v", tiny_llama_path, layer=1)
    result = run_project(ProjectConfig(model=tiny_llama_path, adapter=[tiny_adapter], vector=d, prompts=6,
                                       max_tokens=4, bootstrap=100, dtype="float32", out=str(tmp_path / "p")))
    assert result["layer"] == 1 and result["prompts"] == 6
    rows = result["answer_tokens"]
    assert list(rows) == ["base", "poetic-adapter", "persona-prompted"]
    for name, r in rows.items():
        assert r["n"] == 6 and r["ci95"][0] <= r["projection"] <= r["ci95"][1]
        assert ("minus_reference" in r) == (name != "base")
    assert rows["poetic-adapter"]["minus_reference"] != 0  # the adapter changes the activations read
    saved = json.loads((tmp_path / "p" / "projection.json").read_text())
    assert saved["answer_tokens"] == rows and set(saved["last_prompt_token"]) == set(rows)


def test_project_without_a_vector_dir_is_one_line(cli, tmp_path):
    r = cli("steer", "project", "--model", "tiny-random-llama", "--vector", str(tmp_path / "none"))
    assert r.returncode == 2, r.stderr
    assert "not a finished steer directory" in r.stderr and "Traceback" not in r.stderr
