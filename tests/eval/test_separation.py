"""Does the teacher play the persona: separation of chosen from rejected answers (MiniLM, offline), on hand-made
pairs and through the dpo-data stage's manifest."""

import sys

import numpy as np
import pytest
from personapairs import calm_pairs, same_pool_pairs

from character.evaluation import data
from character.evaluation.separation import check_pairs, fold_of_group, measure_separation, warning


def test_distinct_styles_separate_and_point_at_the_trait(embedding_judge):
    sep = measure_separation(calm_pairs(), embedding_judge.encode, data.traits(), seed=0)
    assert sep["checked"] and sep["pairs"] == 60 and sep["prompts"] == 30
    c = sep["classifier"]
    assert c["accuracy"] >= 0.9 and c["ci95"][0] > 0.6 and c["chance"] == 0.5 and c["folds"] == 5
    assert not sep["near_chance"]
    directions = sep["trait_direction"]
    assert set(directions) == set(data.traits())  # every vocabulary trait, not a chosen few
    patient = directions["patient"]
    assert patient["ci95"][0] > 0 and patient["ci95"][0] <= patient["mean"] <= patient["ci95"][1]
    assert patient["mean"] > directions["impatient"]["mean"] and directions["terse"]["mean"] < 0
    assert warning(sep) is None


@pytest.mark.parametrize("seed", [0, 1])
def test_answers_from_one_pool_are_near_chance(embedding_judge, seed):
    sep = measure_separation(same_pool_pairs(seed=seed), embedding_judge.encode, data.traits(), seed=seed)
    assert sep["checked"] and sep["near_chance"], sep["classifier"]
    assert sep["classifier"]["ci95"][0] <= 0.5 <= sep["classifier"]["ci95"][1]
    line = warning(sep)
    assert line.startswith("dpo-data: the teacher barely plays this persona") and "chance 0.50" in line


def test_seeded_and_reproducible(embedding_judge):
    a = measure_separation(calm_pairs(), embedding_judge.encode, data.traits(), seed=3)
    assert a == measure_separation(calm_pairs(), embedding_judge.encode, data.traits(), seed=3)


def test_too_few_pairs_are_not_checked_and_nothing_is_embedded():
    def no_encode(texts):
        raise AssertionError("nothing should be embedded for 5 pairs")

    sep = measure_separation(calm_pairs()[:5], no_encode, data.traits())
    assert sep == {"checked": False, "reason": "5 pairs; the check needs at least 10"}
    one_prompt = [dict(p, prompt_id="same") for p in calm_pairs()[:12]]
    assert "same prompt" in measure_separation(one_prompt, no_encode, data.traits())["reason"]


def test_folds_keep_the_answers_of_a_prompt_together():
    groups = np.repeat(np.arange(12), 3)  # 12 prompts, 3 pairs each
    fold, k = fold_of_group(groups, 5, seed=0)
    assert k == 5 and sorted(set(fold)) == list(range(5))
    for g in range(12):
        assert len(set(fold[groups == g])) == 1
    sizes = np.bincount(fold) // 3
    assert sizes.max() - sizes.min() <= 1
    assert fold_of_group(np.array([0, 0, 1, 1]), 5, seed=0)[1] == 2  # never more folds than prompts


def test_without_sentence_transformers_the_check_records_why(monkeypatch):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import fails as if not installed
    sep = check_pairs(calm_pairs())
    assert sep["checked"] is False and "could not embed the answers with minilm" in sep["reason"]


def _finished(path, stage, rows, **extra):
    from character.artifacts import StageDir

    sd = StageDir(path, stage)
    sd.begin({"model": "smollm2-135m"}, "h", {})
    sd.write_shard(0, rows)
    sd.finish(counts={}, **extra)
    return str(path)


def _stage_rows(pairs, side):
    return [{"id": f"{p['prompt_id']}-{k}", "prompt_id": p["prompt_id"], "sample": k, "trait": None,
             "source": "general", "prompt": p["prompt"], "completion": p[side], "finish_reason": "stop",
             "problem": None}
            for k, p in enumerate(pairs)]


@pytest.mark.parametrize("teacher_plays", [True, False])
def test_dpo_data_records_separation_in_its_manifest(tmp_path, capsys, smollm2_path, teacher_plays):
    from character.artifacts import read_manifest
    from character.config import load
    from character.stages.distill import DPODataConfig, run_dpo_data

    pairs = calm_pairs() if teacher_plays else same_pool_pairs()
    t = _finished(tmp_path / "t", "teacher", _stage_rows(pairs, "chosen"), teacher_name="Aria")
    s = _finished(tmp_path / "s", "student", _stage_rows(pairs, "rejected"))
    args = dict(chosen=t, rejected=s, student_model=smollm2_path)
    d = run_dpo_data(load(DPODataConfig, dict(args, out=str(tmp_path / "d"))))
    sep = read_manifest(d)["separation"]
    assert sep["checked"] and sep["near_chance"] is (not teacher_plays)
    warned = [ln for ln in capsys.readouterr().err.splitlines() if "barely plays this persona" in ln]
    assert len(warned) == (0 if teacher_plays else 1)
    assert not (d / "separation.json").exists()
    # the check changes no data: the same pairs hash the same without it
    plain = run_dpo_data(load(DPODataConfig, dict(args, out=str(tmp_path / "p"), separation=False)))
    assert "separation" not in read_manifest(plain)
    assert read_manifest(plain)["output_hash"] == read_manifest(d)["output_hash"]
    # a stage finished before the check existed gets it added when it is next run, the data untouched
    run_dpo_data(load(DPODataConfig, dict(args, out=str(tmp_path / "p"))))
    assert read_manifest(plain)["separation"] == sep
    assert read_manifest(plain)["output_hash"] == read_manifest(d)["output_hash"]
