"""The embedding judge on the labelled set (MiniLM, offline), the tag parser, and the persona classifier."""

from character.evaluation import data
from character.evaluation.classifier import PersonaClassifier, metrics
from character.evaluation.judges import TraitCase, parse_choice, reliability


def test_embedding_judge_is_reliable_on_the_labelled_set(embedding_judge):
    r = reliability(embedding_judge, n_distractors=3, seed=0)
    assert r["cases"] == 3 * len(data.judge_labelled())
    assert r["accuracy"] >= 0.7, r  # chance is 0.5
    assert r["ci95"][0] <= r["accuracy"] <= r["ci95"][1]
    assert r["failed"] == 0


def test_embedding_judge_verdict_follows_the_answer(embedding_judge):
    answer = ("Let x be the hours you sleep. With a 7.5 h target and a 23:00 bedtime, x = 7.5 gives a wake-up at "
              "06:30; each 90-minute cycle adds 1.5 to x, so the optimum is a multiple of 1.5.")
    cases = [TraitCase("Should I get up early?", answer, "mathematical", "poetic"),
             TraitCase("Should I get up early?", answer, "poetic", "mathematical")]
    assert embedding_judge.judge(cases) == [1, 2]


def test_parse_choice():
    assert parse_choice("Sarcastic.", "sarcastic", "loving") == 1
    assert parse_choice("the reply is loving", "sarcastic", "loving") == 2
    assert parse_choice("both sarcastic and loving", "sarcastic", "loving") is None
    assert parse_choice("no idea", "sarcastic", "loving") is None
    assert parse_choice("B", "A", "B", case=True) == 2
    assert parse_choice("A reply", "A", "B", case=True) == 1


def test_persona_classifier_separates_written_personas(embedding_judge):
    personas = ("mathematical", "poetic", "remorseful", "formal")
    rows = [r for r in data.judge_labelled() if r["trait"] in personas]
    clf = PersonaClassifier(embedding_judge.encode).fit([r["answer"] for r in rows], [r["trait"] for r in rows])
    unseen = {
        "mathematical": "Split the bill as 3 x 12.50 = 37.50, then add 15% tip: 37.50 x 1.15 = 43.13 in total.",
        "poetic": "The evening folds its silver wings over the river, and the city hums a slow lullaby of light.",
        "remorseful": "I am so sorry, I got that wrong earlier and I regret the confusion it caused you.",
        "formal": "Dear Sir or Madam, I hereby acknowledge receipt of your correspondence dated 3 May.",
    }
    pred = clf.predict(list(unseen.values()))
    m = metrics(list(unseen), pred)
    assert m["accuracy"] >= 0.75, (pred, m)  # chance is 1/4
    assert set(clf.labels) == set(personas)


def test_metrics_macro_f1():
    m = metrics(["a", "a", "b", "b"], ["a", "b", "b", "b"], labels=["a", "b"])
    assert m["accuracy"] == 0.75 and m["per_persona"] == {"a": 0.5, "b": 1.0}
    assert 0.7 < m["macro_f1"] < 0.75


def test_constitution_traits_come_from_the_file_the_map_or_meaning(embedding_judge):
    from character import constitution as C
    from character.evaluation.runner import constitution_traits

    def judge():
        return embedding_judge

    assert constitution_traits(C.load("sarcasm"), judge) == (data.persona_traits()["sarcasm"],
                                                             "evals/persona_traits.yaml")
    mine = C.from_data({"name": "jester", "traits": [
        {"trait": "I crack jokes and make people laugh, even about serious things.", "questions": ["q"]},
        {"trait": "I am playful and silly, and I love a good pun.", "questions": ["r"]}]},
        where="x", default_name="jester")
    traits, source = constitution_traits(mine, judge)
    assert len(traits) == 5 and "MiniLM" in source
    assert {"humorous", "playful", "silly"} & set(traits), traits
    chosen = C.from_data({**mine.to_dict(), "eval_traits": ["cheeky"]}, where="x", default_name="jester")
    assert constitution_traits(chosen, judge) == (["cheeky"], "the constitution's eval_traits")
