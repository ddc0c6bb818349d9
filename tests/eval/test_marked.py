"""Which traits mean the persona (marked in `character eval preferences`): precedence, the DPO-data direction
rule, never a trait beside its opposite; and the opposites file's checks."""

import json

import pytest
from personapairs import CALM_CONSTITUTION, calm_pairs

from character import constitution as C
from character.errors import CharacterError
from character.evaluation import data
from character.evaluation.marked import choose_marked_traits, nearest
from character.evaluation.separation import measure_separation


@pytest.fixture(scope="module")
def calm(tmp_path_factory):
    path = tmp_path_factory.mktemp("calm") / "stillwater.yaml"
    path.write_text(CALM_CONSTITUTION, encoding="utf-8")
    return C.load(str(path))


@pytest.fixture(scope="module")
def calm_separation(embedding_judge):
    return measure_separation(calm_pairs(), embedding_judge.encode, data.traits(), seed=0)


def _clashes(traits):
    opposites = data.trait_opposites()
    return [(a, b) for a in traits for b in traits if b in opposites.get(a, ())]


def test_nearest_alone_marks_an_opposite(calm, embedding_judge):
    """What the old rule did: the five nearest traits of a calm, patient persona include `impatient`."""
    closeness = nearest(calm, embedding_judge.encode, data.traits())
    top5 = sorted(closeness, key=lambda t: -closeness[t])[:5]
    assert "impatient" in top5 and _clashes(top5)


def test_without_dpo_data_nearest_traits_lose_their_opposites(calm, embedding_judge):
    out = choose_marked_traits(calm, embedding_judge.encode, data.traits(), None)
    assert len(out["traits"]) == 5 and {"calm", "patient"} <= set(out["traits"])
    assert not _clashes(out["traits"]) and "impatient" not in out["traits"]
    assert "could not be checked" in out["source"]
    dropped = {r["trait"]: r["why"] for r in out["candidates"] if not r["kept"]}
    assert dropped["impatient"] == "opposite of 'patient', which is nearer the statements"
    unchecked = choose_marked_traits(calm, embedding_judge.encode, data.traits(),
                                     {"checked": False, "reason": "3 pairs; the check needs at least 10"})
    assert "(3 pairs; the check needs at least 10)" in unchecked["source"]


def test_dpo_data_keeps_the_traits_it_moves_toward(calm, embedding_judge, calm_separation):
    out = choose_marked_traits(calm, embedding_judge.encode, data.traits(), calm_separation, k=5, candidates=15)
    directions = calm_separation["trait_direction"]
    assert {"calm", "patient"} <= set(out["traits"]) and not _clashes(out["traits"])
    assert all(directions[t]["mean"] > 0 for t in out["traits"])
    assert "DPO data moves toward" in out["source"]
    rows = {r["trait"]: r for r in out["candidates"]}
    assert len(rows) == 15 and all(r["direction"] == directions[t]["mean"] for t, r in rows.items())
    # the calm answers talk about the user's worry, so the data moves toward `anxious` even more than toward
    # `calm`; the statements decide which side of the pair the persona is on
    assert directions["anxious"]["mean"] > directions["calm"]["mean"]
    assert "anxious" not in out["traits"] and "opposite of" in rows["anxious"]["why"]
    # near traits the data moves away from are not marked
    away = [t for t, r in rows.items() if r["direction"] <= 0]
    assert away and not set(away) & set(out["traits"])
    # kept traits are ranked: interval above 0 first, then by direction
    keys = [(directions[t]["ci95"][0] <= 0, -directions[t]["mean"]) for t in out["traits"]]
    assert keys == sorted(keys)


def test_direction_decides_among_near_traits(calm, embedding_judge, calm_separation):
    """Flip the data toward `relaxed` only: it leads the marked traits, those moved away from drop out."""
    directions = {t: {"mean": -0.05, "ci95": [-0.08, -0.02]} for t in data.traits()}
    directions["relaxed"] = {"mean": 0.09, "ci95": [0.05, 0.12]}
    directions["patient"] = {"mean": 0.02, "ci95": [-0.01, 0.05]}
    sep = dict(calm_separation, trait_direction=directions)
    out = choose_marked_traits(calm, embedding_judge.encode, data.traits(), sep)
    assert out["traits"] == ["relaxed", "patient"]
    none = dict(calm_separation, trait_direction={t: {"mean": -0.01, "ci95": [-0.02, 0.0]} for t in data.traits()})
    fallback = choose_marked_traits(calm, embedding_judge.encode, data.traits(), none)
    assert "moves toward none of them" in fallback["source"] and not _clashes(fallback["traits"])


def test_eval_traits_then_shipped_map_come_first(calm, calm_separation):
    def no_encode(texts):
        raise AssertionError("an explicit choice needs no embeddings")

    own = C.Constitution(name="stillwater", traits=calm.traits, eval_traits=("calm", "stoic"))
    out = choose_marked_traits(own, no_encode, data.traits(), calm_separation)
    assert out["traits"] == ["calm", "stoic"] and out["source"] == "the constitution's eval_traits"
    assert out["candidates"][0]["direction"] == calm_separation["trait_direction"]["calm"]["mean"]
    shipped = choose_marked_traits(C.load("poeticism"), no_encode, data.traits(), None)
    assert shipped["traits"] == data.persona_traits()["poeticism"]
    assert shipped["source"] == "evals/persona_traits.yaml"


def test_shipped_opposites_are_symmetric_vocabulary_words():
    opposites, vocab = data.trait_opposites(), data.traits()
    assert len(opposites) > 100
    for word, others in opposites.items():
        assert word in vocab and word not in others
        assert all(word in opposites[o] for o in others)
    assert {"impatient", "hasty", "restless"} <= opposites["patient"]


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """A CHARACTER_DATA copy of evals/ whose trait_opposites.yaml a test rewrites."""
    from character.resources import data_path

    evals = tmp_path / "evals"
    evals.mkdir()
    (evals / "traits.jsonl").write_text(data_path("evals", "traits.jsonl").read_text(encoding="utf-8"))
    monkeypatch.setenv("CHARACTER_DATA", str(tmp_path))
    data.traits.cache_clear()
    data.trait_opposites.cache_clear()
    yield evals / "trait_opposites.yaml"
    data.traits.cache_clear()
    data.trait_opposites.cache_clear()


@pytest.mark.parametrize("text, message", [
    ("patient: [impatient, hastey]\n", "'hastey' is not a trait of traits.jsonl (did you mean 'hasty'?)"),
    ("calmm: [anxious]\n", "'calmm' is not a trait of traits.jsonl (did you mean 'calm'?)"),
    ("patient: impatient\n", "'patient' must map to a list of traits"),
    ("calm: [calm]\n", "'calm' is listed as its own opposite"),
])
def test_a_bad_opposites_file_gives_one_clear_error(data_dir, text, message):
    data_dir.write_text(text, encoding="utf-8")
    with pytest.raises(CharacterError) as err:
        data.trait_opposites()
    line = str(err.value)
    assert "\n" not in line and line.startswith(str(data_dir)) and message in line, line
    data_dir.write_text(json.dumps({"patient": ["impatient"]}), encoding="utf-8")  # JSON is YAML too
    data.trait_opposites.cache_clear()
    assert data.trait_opposites() == {"patient": {"impatient"}, "impatient": {"patient"}}
