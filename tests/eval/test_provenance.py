"""Contamination: `character eval` follows an adapter's manifests back to the prompts it was trained on; and the
generation stages refuse the held-out evaluation set."""

from __future__ import annotations

import os

import pytest

from character.artifacts import StageDir
from character.errors import CharacterError
from character.evaluation import provenance


def stage(path, name: str, config: dict, rows: list[dict] | None = None):
    sd = StageDir(path, name)
    sd.begin(config, "h", {})
    if rows is not None:
        sd.write_shard(0, rows)
    sd.finish()
    return path


def pair(prompt: str) -> dict:
    return {"prompt": [{"role": "user", "content": prompt}], "chosen": [{"role": "assistant", "content": "a"}],
            "rejected": [{"role": "assistant", "content": "b"}]}


@pytest.fixture
def lineage(tmp_path):
    """OUT/persona/{dpo-data, train-dpo, sft-data, train-sft, merge}, linked by their manifests' configs."""
    root = tmp_path / "run" / "persona"
    dpo = stage(root / "dpo-data", "dpo-data", {"chosen": str(root / "teacher"), "rejected": str(root / "student")},
                [pair("How do tides work?"), pair("Name a good book about  the sea!")])
    t1 = stage(root / "train-dpo", "train-dpo", {"data": str(dpo), "model": "smollm2-135m"})
    sft = stage(root / "sft-data", "sft-data", {}, [{"messages": [
        {"role": "system", "content": "x"}, {"role": "user", "content": "Who are you, really?"},
        {"role": "assistant", "content": "me"}]}])
    t2 = stage(root / "train-sft", "train-sft", {"data": str(sft), "adapter": str(t1)})
    merge = stage(root / "merge", "merge", {"adapters": [str(t1), str(t2)], "out": str(root / "merge")})
    return root, merge


def test_contamination_counts_trained_prompts_through_the_manifests(lineage):
    root, merge = lineage
    evals = ["how do tides work", "What is a prime number?", "Who are you, really?", "Name a good book about the sea"]
    c = provenance.contamination({"merged": str(merge)}, evals)
    sys = c["systems"]["merged"]
    assert c["checked"] and sys["checked"]
    # case, spacing and punctuation do not hide a trained prompt
    assert c["overlap"] == 3 and c["training_prompts"] == 3 and c["eval_prompts"] == 4
    assert set(sys["stages"]) >= {"merge", "train-dpo", "train-sft", "dpo-data", "sft-data"}
    assert provenance.contamination({"merged": str(merge)}, ["What is a prime number?"])["overlap"] == 0


def test_a_moved_run_is_still_traced(lineage, tmp_path):
    root, _ = lineage
    moved = tmp_path / "elsewhere"
    os.rename(root.parent, moved)  # the manifests still name the old absolute paths
    c = provenance.contamination({"m": str(moved / "persona" / "merge")}, ["How do tides work?"])
    assert c["checked"] and c["overlap"] == 1


def test_a_model_made_elsewhere_is_reported_unchecked(tmp_path):
    (tmp_path / "adapter").mkdir()
    c = provenance.contamination({"a": str(tmp_path / "adapter")}, ["How do tides work?"])
    assert c["checked"] is False and "no training manifests" in c["systems"]["a"]["reason"]


def test_generation_refuses_the_held_out_set():
    from character.resources import data_path
    from character.stages.common import load_prompt_source

    with pytest.raises(CharacterError, match="held-out evaluation set"):
        load_prompt_source(str(data_path("evals", "prompts", "eval.jsonl")))
    assert load_prompt_source("builtin")  # the training set is what generation reads
