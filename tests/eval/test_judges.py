"""The judges: the embedding judge on the labelled set (MiniLM, offline); the LLM judge's label scoring with
contextual calibration against the old summed trait-word scoring (smollm2-135m through the hf engine); margins
and accuracy by margin; the tag parser; the persona classifier."""

import pytest

from character.errors import CharacterError
from character.evaluation import data
from character.evaluation.classifier import PersonaClassifier, metrics
from character.evaluation.judges import TraitCase, margin_bins, parse_choice, reliability


def test_embedding_judge_is_reliable_on_the_labelled_set(embedding_judge):
    r = reliability(embedding_judge, n_distractors=3, seed=0)
    assert r["cases"] == 3 * len(data.judge_labelled())
    assert r["accuracy"] >= 0.7, r  # chance is 0.5
    assert r["ci95"][0] <= r["accuracy"] <= r["ci95"][1]
    assert r["failed"] == 0 and r["chance_in_ci"] is False
    bins = r["by_margin"]
    assert len(bins) == 4 and sum(b["cases"] for b in bins) == r["cases"]
    assert sum(round(b["accuracy"] * b["cases"]) for b in bins) == r["correct"]
    assert all(a["lo"] <= a["hi"] < b["lo"] for a, b in zip(bins, bins[1:]))
    # measured 0.59 in the lowest quartile of |margin|, 0.94 in the highest: a wide margin is a surer verdict
    assert bins[-1]["accuracy"] > bins[0]["accuracy"] + 0.2, bins


def test_margin_bins_are_quartiles_of_the_decided_cases():
    margins = [0.1, -0.2, 0.3, -0.4, 0.5, -0.6, 0.7, -0.8, None]
    correct = [False, False, True, True, True, True, True, True, False]
    bins = margin_bins(margins, correct)
    assert [b["cases"] for b in bins] == [2, 2, 2, 2]  # the undecided case is in no bin
    assert [(b["lo"], b["hi"]) for b in bins] == [(0.1, 0.2), (0.3, 0.4), (0.5, 0.6), (0.7, 0.8)]
    assert [b["accuracy"] for b in bins] == [0.0, 1.0, 1.0, 1.0]
    assert bins[0]["ci95"][1] < 0.7 and bins[1]["ci95"][0] > 0.3


def test_margin_bins_never_split_a_tie():
    # tags mode: every decided margin is +1 or -1, so there is one bin
    bins = margin_bins([1.0, -1.0, 1.0, None], [True, False, True, False])
    assert bins == [{"lo": 1.0, "hi": 1.0, "cases": 3, "accuracy": 2 / 3, "ci95": bins[0]["ci95"]}]
    assert [b["cases"] for b in margin_bins([0.1, 0.2, 0.2, 0.2, 0.3, 0.4], [True] * 6)] == [4, 1, 1]
    assert margin_bins([None], [False]) == []


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

    def pick(const, separation=None):
        got = constitution_traits(const, judge, separation)
        return got["traits"], got["source"]

    assert pick(C.load("sarcasm")) == (data.persona_traits()["sarcasm"], "evals/persona_traits.yaml")
    mine = C.from_data({"name": "jester", "traits": [
        {"trait": "I crack jokes and make people laugh, even about serious things.", "questions": ["q"]},
        {"trait": "I am playful and silly, and I love a good pun.", "questions": ["r"]}]},
        where="x", default_name="jester")
    traits, source = pick(mine)  # no DPO data to follow: the nearest traits, and the report says so
    assert len(traits) == 5 and "MiniLM" in source and "could not be checked" in source
    assert {"humorous", "playful", "silly"} & set(traits), traits
    # with the DPO data's direction (as the eval reads it from the adapter's dpo-data manifest), only traits the
    # data moves toward are marked
    toward = {"humorous": 0.05, "playful": 0.04, "silly": -0.02}
    sep = {"systems": {"adapter": {"checked": True, "classifier": {"accuracy": 0.9}, "near_chance": False,
                                   "trait_direction": {t: {"mean": m, "ci95": [m - 0.01, m + 0.01]}
                                                       for t, m in toward.items()}}}}
    traits, source = pick(mine, sep)
    assert "humorous" in traits and "playful" in traits and "silly" not in traits and "DPO data" in source
    chosen = C.from_data({**mine.to_dict(), "eval_traits": ["cheeky"]}, where="x", default_name="jester")
    assert pick(chosen) == (["cheeky"], "the constitution's eval_traits")


# -- the LLM judge: label log-probs with contextual calibration, against the old summed trait-word scoring --------

KIDS = "How do I get my kids to clean their rooms?"
SHORT, LONG = "good", "sycophantic"  # 1 and 4 SmolLM2 tokens (checked below)


@pytest.fixture(scope="module")
def smollm2_engine(smollm2_path):
    from character.engine.base import EngineConfig, make_engine

    with make_engine(EngineConfig(model=smollm2_path, backend="hf", dtype="float32", batch_size=8)) as engine:
        yield engine


def summed_trait_margins(engine, cases: list[TraitCase]) -> list[tuple[float, float]]:
    """The old logprob judge, per case and order: log p(trait_1 word) - log p(trait_2 word) as the whole reply to
    the trait-word prompt, each word's tokens summed; (trait_1 first, trait_1 second)."""
    from character.engine.base import Request

    template = data.preference_templates()["judge_template"]
    reqs, conts = [], []
    for c in cases:
        for first, second in ((c.trait_1, c.trait_2), (c.trait_2, c.trait_1)):
            text = template.format(prompt=c.prompt, answer=c.answer, trait_1=first, trait_2=second)
            reqs.append(Request([{"role": "user", "content": text}]))
            conts.append([c.trait_1, c.trait_2])
    s = engine.score(reqs, conts)
    return [(s[2 * i][0] - s[2 * i][1], s[2 * i + 1][0] - s[2 * i + 1][1]) for i in range(len(cases))]


class SummedJudge:
    """The old logprob judge as a judge object, so `reliability` can measure it beside the new one."""

    name = "llm-summed"

    def __init__(self, engine):
        self.engine = engine

    def margins(self, cases):
        return [a + b for a, b in summed_trait_margins(self.engine, cases)]


@pytest.mark.slow
def test_empty_answer_is_a_coin_flip_between_a_one_token_and_a_four_token_trait(smollm2_engine):
    from character.evaluation.judges import LLMJudge

    tokens = [len(smollm2_engine.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in (SHORT, LONG)]
    assert tokens == [1, 4]
    case = TraitCase(KIDS, "", SHORT, LONG)  # nothing in the answer favours either trait
    judge = LLMJudge(smollm2_engine)  # calibrated on an empty user message and answer
    first, second = judge.order_margins([case])[0]
    # measured: +0.50 and -0.32 nats (p = 0.62 and 0.42 for the short trait), +0.19 both orders together
    assert abs(first) < 0.6 and abs(second) < 0.6 and abs(first + second) < 0.3, (first, second)
    assert judge.margins([case]) == [pytest.approx(first + second)]
    # the old scoring prefers the one-token word in both orders: measured +6.30 and +0.37, sum +6.67 (p > 0.99)
    old_first, old_second = summed_trait_margins(smollm2_engine, [case])[0]
    assert old_first + old_second > 3.0 and old_first > 3.0 and old_second > 0.0, (old_first, old_second)
    # uncalibrated labels still lean on position (A) by ~2 nats in each order; only the sum of orders cancels it
    raw_first, raw_second = LLMJudge(smollm2_engine, content_free=None).order_margins([case])[0]
    assert raw_first > 1.0 and raw_second < -1.0, (raw_first, raw_second)


MATH = ("Let x be the hours you sleep. With a 7.5 h target and a 23:00 bedtime, x = 7.5 gives a wake-up at "
        "06:30; each 90-minute cycle adds 1.5 to x, so the optimum is a multiple of 1.5.")


@pytest.mark.slow
def test_llm_margins_have_the_sign_of_the_verdict_and_flip_with_the_traits(smollm2_engine):
    from character.evaluation.judges import LLMJudge

    judge = LLMJudge(smollm2_engine)
    cases = [TraitCase("Should I get up early?", MATH, "mathematical", "poetic"),
             TraitCase("Should I get up early?", MATH, "poetic", "mathematical")]
    margins = judge.margins(cases)
    # measured +0.10: smollm2-135m leans to the mathematical reading, if barely
    assert margins[0] > 0 and margins[1] == pytest.approx(-margins[0], abs=1e-4), margins
    assert judge.judge(cases) == [1, 2]


@pytest.mark.slow
def test_tags_mode_margins_are_unit_or_undecided(smollm2_engine):
    from character.evaluation.judges import LLMJudge

    judge = LLMJudge(smollm2_engine, mode="tags")
    cases = [TraitCase("Should I get up early?", MATH, "mathematical", "poetic")]
    margins = judge.margins(cases)
    assert all(m in (1.0, -1.0, None) for m in margins)
    assert judge.judge(cases) == [None if m is None else 1 if m > 0 else 2 for m in margins]
    with pytest.raises(CharacterError, match="logprob"):
        judge.order_margins(cases)


class Recorded:
    """A judge that keeps the margins it last gave, so a test can pair two judges' verdicts case by case."""

    def __init__(self, judge):
        self.inner, self.name, self.last = judge, judge.name, []

    def margins(self, cases):
        self.last = self.inner.margins(cases)
        return self.last


@pytest.mark.slow
@pytest.mark.acceptance
def test_label_scoring_is_no_less_accurate_than_summed_words_on_the_labelled_set(smollm2_engine):
    """smollm2-135m judging the labelled set (each answer against 2 distractors, 132 cases, seed 0), measured:
    summed trait words 0.523 [0.438, 0.606]; calibrated labels 0.447 [0.365, 0.532]; uncalibrated labels 0.477
    [0.394, 0.562]; paired difference labels - words -0.076 [-0.182, +0.030]. A 135M model judges traits at chance
    either way; what must hold is that the new scoring is not significantly worse. Here: 1 distractor, 66 cases."""
    from character.evaluation.judges import LLMJudge, labelled_cases
    from character.evaluation.scoring import bootstrap_mean_diff

    new_judge, old_judge = Recorded(LLMJudge(smollm2_engine)), Recorded(SummedJudge(smollm2_engine))
    new = reliability(new_judge, n_distractors=1, seed=0)
    old = reliability(old_judge, n_distractors=1, seed=0)
    _, truth, _ = labelled_cases(data.judge_labelled(), 1, 0)
    assert new["cases"] == old["cases"] == len(truth) and new["failed"] == 0
    assert sum(b["cases"] for b in new["by_margin"]) == new["cases"]
    right_new = [int((1 if m >= 0 else 2) == t) for m, t in zip(new_judge.last, truth)]
    right_old = [int((1 if m >= 0 else 2) == t) for m, t in zip(old_judge.last, truth)]
    assert sum(right_new) == new["correct"] and sum(right_old) == old["correct"]
    delta, lo, hi = bootstrap_mean_diff(right_old, right_new, n_boot=5000, seed=0)
    print(f"labels {new['accuracy']:.3f} {new['ci95']}, summed words {old['accuracy']:.3f} {old['ci95']}, "
          f"paired delta {delta:+.3f} [{lo:+.3f}, {hi:+.3f}]")
    assert hi >= 0.0, (new, old, delta, lo, hi)
