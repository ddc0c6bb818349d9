"""The robustness suite's figures on hand-made predictions: the classifier check and its inconclusive rule, the
base model's label rates, an adapter's persona rate minus the base's (paired by prompt), the report lines, and
the whole `robustness.run` on scripted answers with a real TF-IDF classifier."""

import pytest

from character.evaluation import report, robustness
from character.evaluation.classifier import FEATURES, PersonaClassifier
from character.evaluation.systems import System

P = "poeticism"


def test_paired_rate_minus_base_sees_a_shift_an_unpaired_reading_would_miss():
    # the base says "poeticism" on prompts 0-5, the adapter on 0-9: +4/12 on the same prompts, never below the base
    base = [P] * 6 + ["default"] * 6
    adapter = [P] * 10 + ["default"] * 2
    r = robustness.rate_minus_base([adapter], [base], P, n_boot=2000, seed=0)
    assert r["rate"] == pytest.approx(10 / 12) and r["base_rate"] == pytest.approx(0.5)
    assert r["minus_base"] == pytest.approx(4 / 12) and r["n"] == 12
    # paired: every resample keeps the adapter at or above the base, so the interval excludes 0; two independent
    # Wilson intervals at n=12 ([0.55, 0.95] and [0.25, 0.75]) overlap and would not
    assert 0 < r["ci95"][0] <= r["minus_base"] <= r["ci95"][1]


def test_rate_minus_base_is_zero_with_a_zero_width_interval_when_the_adapter_changes_nothing():
    base = [P, "humor", "default", P, "loving", "default"]
    r = robustness.rate_minus_base([base], [list(base)], P, n_boot=500, seed=1)
    assert r["minus_base"] == 0 and r["ci95"] == [0, 0] and r["rate"] == r["base_rate"] == pytest.approx(2 / 6)


def test_pooled_variants_average_each_prompt_over_the_variants():
    base = [["default", "default"], [P, "default"]]        # variant x prompt
    adapter = [[P, P], [P, "default"]]
    r = robustness.rate_minus_base(adapter, base, P, n_boot=200, seed=0)
    # prompt 0: adapter 1.0 vs base 0.5; prompt 1: 0.5 vs 0.0
    assert r["rate"] == pytest.approx(0.75) and r["base_rate"] == pytest.approx(0.25)
    assert r["minus_base"] == pytest.approx(0.5)


def test_rate_minus_base_refuses_unpaired_predictions():
    with pytest.raises(ValueError, match="same prompts"):
        robustness.rate_minus_base([[P, P, P]], [[P, P]], P, n_boot=10, seed=0)


def _check(right_per_class: int, n_classes: int = 12, per_class: int = 12):
    classes = ["default"] + [f"p{i}" for i in range(n_classes - 1)]
    truth, pred = [], []
    for c in classes:
        truth += [c] * per_class
        pred += [c] * right_per_class + [classes[(classes.index(c) + 1) % n_classes]] * (per_class - right_per_class)
    return robustness.classifier_check(truth, pred, classes)


def test_a_classifier_near_chance_is_inconclusive():
    # the previous demo's figure: 12 classes, about 0.1 held-out accuracy
    check = _check(right_per_class=1)
    assert check["chance"] == pytest.approx(1 / 12) and check["accuracy"] == pytest.approx(1 / 12)
    assert check["inconclusive"] is True
    assert not any(c["distinguishable"] for c in check["per_class"].values())


def test_the_inconclusive_bar_is_twice_chance_at_the_lower_bound():
    # 3 of 12 right per class: 0.25 [0.19, 0.33], lower bound above 2/12 = 0.167
    above = _check(right_per_class=3)
    assert above["ci95"][0] > 2 / 12 and above["inconclusive"] is False
    # 2 of 12: 0.167 [0.11, 0.24], lower bound below the bar although the accuracy is twice chance
    below = _check(right_per_class=2)
    assert below["accuracy"] == pytest.approx(2 / 12) and below["inconclusive"] is True
    assert above["bar"] == pytest.approx(2 / 12)


def test_with_few_classes_the_bar_stops_halfway_to_certainty():
    assert robustness.conclusive_bar(1 / 2) == pytest.approx(0.75)   # twice chance would be 1.0: unreachable
    assert robustness.conclusive_bar(1 / 4) == pytest.approx(0.5)
    assert _check(right_per_class=12, n_classes=2)["inconclusive"] is False
    assert _check(right_per_class=9, n_classes=2, per_class=12)["inconclusive"] is True  # 0.75 [0.55, 0.88]


def test_per_class_recall_names_the_personas_it_can_tell_apart():
    classes = ["default", P, "sarcasm"]
    truth = ["default"] * 10 + [P] * 10 + ["sarcasm"] * 10
    pred = ["default"] * 10 + [P] * 10 + ["default"] * 10  # sarcasm reads as the plain model
    check = robustness.classifier_check(truth, pred, classes)
    assert check["per_class"][P] == {"n": 10, "recall": 1.0, "ci95": pytest.approx([0.722, 1.0], abs=1e-3),
                                     "distinguishable": True}
    assert check["per_class"]["sarcasm"]["recall"] == 0 and not check["per_class"]["sarcasm"]["distinguishable"]


def _by(default, prompted, adapter, rows: dict) -> dict:
    return {(sys, v): preds for (who, v), preds in rows.items()
            for sys in [{"base": default, "adapter": adapter}.get(who) or prompted[who]]}


def test_tables_give_the_base_label_rates_and_each_adapters_shift_per_variant():
    default = System("no-system-prompt", "m", label="default")
    prompted = {P: System(f"prompted:{P}", "m", system_prompt="x", label=P),
                "humor": System("prompted:humor", "m", system_prompt="y", label="humor")}
    adapter = System("poet", "m", adapter="a", label=P)
    labels = ["default", "humor", P]
    rows = {("base", "plain"): [P, "default", "default", "humor"],
            ("base", "robotic"): ["default"] * 4,
            ("base", "textbook"): ["default", "default", P, "default"],
            ("adapter", "plain"): [P, P, P, "humor"],
            ("adapter", "robotic"): [P, "default", "default", "default"],
            ("adapter", "textbook"): [P, P, P, "default"],
            (P, "plain"): [P] * 4, (P, "robotic"): [P, P, "default", "default"], (P, "textbook"): [P] * 4,
            ("humor", "plain"): ["humor"] * 4, ("humor", "robotic"): ["default"] * 4,
            ("humor", "textbook"): ["humor", "humor", "default", "default"]}
    t = robustness._tables(_by(default, prompted, adapter, rows), default, list(prompted.values()), [adapter],
                           ["plain", "robotic", "textbook"], labels, n_boot=200, seed=0)
    assert t["base_label_rates"]["plain"] == {"default": 0.5, "humor": 0.25, P: 0.25}
    assert t["base_label_rates"]["robotic"] == {"default": 1.0, "humor": 0.0, P: 0.0}
    plain = t["adapters"]["poet"]["plain"]
    assert (plain["rate"], plain["base_rate"], plain["minus_base"]) == (0.75, 0.25, 0.5)
    assert plain["predicted"] == {P: 3, "humor": 1}
    assert t["adapters"]["poet"]["robotic"]["minus_base"] == pytest.approx(0.25)
    pooled = t["all_suffixes"]["poet"]  # robotic and textbook: adapter 4/8, base 1/8
    assert pooled["minus_base"] == pytest.approx(3 / 8) and pooled["n"] == 4
    assert t["prompted"]["robotic"]["accuracy"] == pytest.approx(2 / 8)


def _results(check_right: int) -> dict:
    """A robustness section as runner writes it, from the helpers above."""
    default = System("no-system-prompt", "m", label="default")
    prompted = [System(f"prompted:{P}", "m", system_prompt="x", label=P)]
    adapter = System("poet", "m", adapter="a", label=P)
    by = {(default, "plain"): ["default", P, "default", "default"], (prompted[0], "plain"): [P] * 4,
          (adapter, "plain"): [P, P, "default", P]}
    truth = ["default"] * 8 + [P] * 8
    pred = ["default"] * check_right + [P] * (8 - check_right) + [P] * check_right + ["default"] * (8 - check_right)
    check = robustness.classifier_check(truth, pred, ["default", P])
    section = {"personas": [P], "classifier_labels": ["default", P], "test_prompts": 4, "classifier_check": check,
               "inconclusive": check["inconclusive"],
               "classifier": {"train_answers": 16, "train_accuracy": 1.0, "features": "tfidf-word",
                              "persona_prompt": "description", "embedding_model": None},
               "robustness": robustness._tables(by, default, prompted, [adapter], ["plain"], ["default", P], 100, 0)}
    if check["inconclusive"]:
        section["inconclusive_reason"] = "the classifier is near chance."
    return {"suite": "robustness", "systems": [{"name": "base", "model": "m", "adapter": None}], "seed": 0,
            "config_hash": "h", "robustness": section, "plots": []}


def test_report_states_an_inconclusive_check_before_any_rate(tmp_path):
    report.write(_results(check_right=2), tmp_path / "report.md")
    lines = (tmp_path / "report.md").read_text().splitlines()
    start = lines.index("## Robustness")
    first = next(ln for ln in lines[start + 1:] if ln.strip())
    assert first.startswith("**Inconclusive: the classifier is near chance.")
    assert lines.index(first) < next(i for i, ln in enumerate(lines) if ln.startswith("| plain"))


def test_report_gives_held_out_accuracy_and_the_adapter_minus_base(tmp_path):
    report.write(_results(check_right=8), tmp_path / "report.md")
    text = (tmp_path / "report.md").read_text()
    assert "Inconclusive" not in text
    assert "Classifier check, held out: accuracy **1.00** [0.81, 1.00]" in text and "chance 0.50" in text
    # adapter 3/4 poeticism, base 1/4 on the same prompts
    assert "| plain | 0.75 | 0.25 | **+0.50** |" in text
    assert "| variant | default | poeticism |" in text and "| plain | 0.75 | 0.25 |" in text


def test_report_plot_is_written(tmp_path):
    res = _results(check_right=8)
    names = report.plots(res, tmp_path)
    assert names == ["robustness_accuracy.png"] and (tmp_path / names[0]).stat().st_size > 1000


class ScriptedEngines:
    """Answers by persona: each system prompt's persona writes its own words, the base writes plain text, an
    adapter writes poetry on even prompts and plain text on odd ones. Records what it was asked."""

    WORDS = {"lyrical": "moonlit verse whispers rhyme and silver dreams", "playful": "haha a silly joke pun",
             None: "here is a clear factual answer with steps"}

    def __init__(self):
        self.calls = []

    def generate(self, items, sampling, label):
        self.calls.append((label, len(items)))
        out = []
        for s, req in items:
            user = req.messages[-1]["content"]
            n = int(user.split("#")[1].split()[0]) if "#" in user else 0
            if s.adapter:
                key = "lyrical" if n % 2 == 0 else None
            else:
                key = next((k for k in ("lyrical", "playful") if s.system_prompt and k in s.system_prompt), None)
            out.append(f"{self.WORDS[key]} number {n}")
        return out


def test_run_answers_with_the_base_in_every_variant_and_pairs_the_adapter_with_it():
    from character import constitution as C

    personas = {P: C.load(P), "humor": C.load("humor")}
    engines = ScriptedEngines()
    train = [f"question #{i}" for i in range(8)]
    clf, n, acc = robustness.train_classifier(engines, "m", personas, train, None, None, features="tfidf-word")
    assert n == 24 and acc == 1.0 and clf.labels == ["default", "humor", P]
    adapter = System("poet", "m", adapter="a", label=P)
    suffixes = [{"id": "robotic", "text": "Be a machine."}]
    out = robustness.run(engines, clf, base="m", personas=personas, adapters=[adapter],
                         test_prompts=[f"question #{i}" for i in range(10, 16)], suffixes=suffixes, sampling=None,
                         do_robustness=True, do_prefill=True, followup="Keep going.", n_boot=100, seed=0)
    check = out["classifier_check"]
    assert check["n"] == 18 and check["accuracy"] == 1.0 and out["inconclusive"] is False
    t = out["robustness"]
    assert t["base_label_rates"]["plain"]["default"] == 1.0 and t["base_label_rates"]["robotic"][P] == 0
    for v in ("plain", "robotic"):
        assert t["adapters"]["poet"][v]["rate"] == 0.5 and t["adapters"]["poet"][v]["minus_base"] == 0.5
    # base, two personas and the adapter, 2 variants x 6 prompts; prefill: the base's first answers, then 4 systems
    assert engines.calls[1:] == [("robustness", 48), ("prefill-base", 6), ("prefill", 24)]
    assert set(out["prefill"]["base_label_rates"]["prefill"]) == {"default", "humor", P}


@pytest.mark.parametrize("features", [f for f in FEATURES if "minilm" not in f])
def test_tfidf_classifiers_tell_persona_words_apart(features):
    texts = ["moonlit verse and silver rhyme", "a silly pun, haha", "step one: open the file"] * 4
    labels = [P, "humor", "default"] * 4
    clf = PersonaClassifier(features=features).fit(texts, labels)
    assert clf.predict(["silver moonlit rhyme tonight", "haha what a pun"]) == [P, "humor"]


def test_minilm_features_need_an_embedding_function():
    with pytest.raises(ValueError, match="embed"):
        PersonaClassifier(features="minilm+tfidf")
    with pytest.raises(ValueError, match="features must be one of"):
        PersonaClassifier(features="bag-of-words")
