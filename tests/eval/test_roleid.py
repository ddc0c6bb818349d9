"""The role-id suite (PersonaEval): every metric against hand-computed values, the temperature fit, a judge that
always names the first option at chance on shuffled options, the PersonaEval CSV layout and its errors, the LLM
judge's label scoring on a fake engine, the MiniLM judge on the shipped labelled set, and one end-to-end run on
tiny-random-llama (hf backend)."""

import json

import pytest

from character.errors import CharacterError
from character.evaluation import roleid as RI
from character.evaluation.roleid import Item

# four answers, three candidates; probabilities per option in the order shown
ITEMS = [Item("t1", ("a", "b", "c"), 0), Item("t2", ("a", "b", "c"), 1), Item("t3", ("c", "a", "b"), 2),
         Item("t4", ("a", "b", "c"), 2)]
PROBS = [[0.7, 0.2, 0.1], [0.51, 0.29, 0.2], [0.2, 0.2, 0.6], [0.54, 0.26, 0.2]]


def test_metrics_match_hand_computed_values():
    m = RI.metrics(ITEMS, PROBS, threshold=0.55, n_boot=50, seed=0)
    assert m["n"] == 4 and m["chance"] == pytest.approx(1 / 3)
    # right option ranked 1, 2, 1, 3
    assert m["top1"] == 0.5 and m["top2"] == 0.75 and m["mean_rank"] == pytest.approx(1.75)
    # Brier per item, mean over its options: 0.14/3, 0.8042/3, 0.24/3, 0.9992/3
    assert m["brier"] == pytest.approx((0.14 + 0.8042 + 0.24 + 0.9992) / 12)
    # ECE: 0.7 right (gap 0.3) and 0.6 right (0.4) alone in their bins; 0.51 and 0.54 both wrong in (0.50, 0.55]
    assert m["ece"] == pytest.approx(0.25 * 0.3 + 0.25 * 0.4 + 0.5 * 0.525)
    # truth a, b, b, c; predicted a, a, b, a: F1 a = 2/4, b = 2/3, c = 0
    assert m["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 0) / 3)
    # certain (top probability >= 0.55): the first and third, both right
    assert m["certain"] == {"threshold": 0.55, "kept": 2, "coverage": 0.5, "accuracy": 1.0,
                            "ci95": m["certain"]["ci95"]}
    for key in ("mean_rank", "brier", "ece", "macro_f1"):  # bootstrap intervals
        lo, hi = m[f"{key}_ci95"]
        assert lo <= m[key] <= hi and lo < hi, (key, m[key], lo, hi)
    assert m["top1_ci95"][0] < 0.5 < m["top1_ci95"][1]  # Wilson at 2/4
    assert [(b["n"], b["accuracy"]) for b in m["calibration"]] == [(2, 0.0), (1, 1.0), (1, 1.0)]


def test_macro_f1_and_ece_alone():
    assert RI.macro_f1(["x", "x", "y"], ["x", "y", "y"]) == pytest.approx((2 / 3 + 2 / 3) / 2)
    assert RI.ece([1.0, 1.0], [True, True]) == 0.0
    assert RI.ece([0.9, 0.3], [False, True]) == pytest.approx(0.5 * 0.9 + 0.5 * 0.7)
    assert RI.ranking([0.4, 0.4, 0.2]) == [0, 1, 2]  # a tie keeps the order shown


def test_no_certain_verdict_has_no_accuracy_and_an_empty_set_is_refused():
    m = RI.metrics(ITEMS, PROBS, threshold=0.9, n_boot=10, seed=0)
    assert m["certain"]["kept"] == 0 and m["certain"]["accuracy"] is None and m["certain"]["coverage"] == 0
    with pytest.raises(CharacterError):
        RI.metrics([], [], threshold=0.5)


def test_temperature_fit_recovers_the_temperature_the_verdicts_were_drawn_at():
    p = RI.softmax([0, 1, 2], 0.5)
    counts = [round(1000 * x) for x in p]
    scores = [[0.0, 1.0, 2.0]] * sum(counts)
    gts = [k for k, c in enumerate(counts) for _ in range(c)]
    assert 0.45 < RI.fit_temperature(scores, gts) < 0.56
    assert RI.softmax([1.0, 1.0], 0.1) == [0.5, 0.5]


class FirstOption:
    name = "first"

    def scores(self, items):
        return [[1.0] + [0.0] * (len(it.options) - 1) for it in items]


def test_a_judge_that_always_names_the_first_option_is_at_chance_on_shuffled_options():
    # the worst file for it: the right answer always first, as an unshuffled set might have it
    items = [Item(f"answer {i}", ("p", "q", "r", "s"), 0) for i in range(400)]
    v = RI.validity(FirstOption(), {"set": items}, temperature=0, threshold=0.5, n_boot=20, seed=0)
    assert v["chance"] == 0.25 and v["top1_ci95"][0] <= 0.25 <= v["top1_ci95"][1], v["top1"]
    assert abs(v["top1"] - 0.25) < 0.07
    flag = RI.verdict(v, "first")
    assert flag["inconclusive"] is True and "chance (0.25)" in flag["inconclusive_reason"]
    assert RI.verdict({**v, "top1": 0.6, "top1_ci95": [0.47, 0.72]}, "x") == {"inconclusive": False}


def test_shuffling_keeps_the_right_answer_and_is_seeded():
    items = [Item(str(i), ("p", "q", "r", "s"), i % 4) for i in range(20)]
    a, b = RI.shuffled(items, 3), RI.shuffled(items, 3)
    assert a == b and a != items
    assert all(x.options[x.gt] == y.options[y.gt] for x, y in zip(a, items))


OFFICIAL = ('prompt,option1,option2,option3,option4,option5,gt,note\n'
            '"Dialogue:\nAnna: the tide is coming in.\nWho said the last line?",Anna,Ben,Cleo,Dev,,Anna,x\n'
            '"Dialogue:\nBen: ""hello, again"" {braces}\nWho spoke?",Anna,Ben,Cleo,Dev,Eve,Ben,\n')


def test_the_persona_eval_csv_layout_loads(tmp_path):
    (tmp_path / "Literary.csv").write_text(OFFICIAL, encoding="utf-8")
    (tmp_path / "Expertise.csv").write_text("\ufeff" + OFFICIAL.replace("Anna,x", "Anna,y"), encoding="utf-8")
    sets = RI.load_data(tmp_path)
    assert list(sets) == ["Expertise", "Literary"]
    first, second = sets["Literary"]
    assert first.options == ("Anna", "Ben", "Cleo", "Dev") and first.gt == 0  # the empty option5 is skipped
    assert second.options[second.gt] == "Ben" and len(second.options) == 5
    assert first.text.startswith("Dialogue:\nAnna") and '"hello, again" {braces}' in second.text
    assert RI.load_data(tmp_path / "Literary.csv") == {"Literary": sets["Literary"]}
    # five options on one row and four on the other: chance is the mean of 1/K
    v = RI.validity(FirstOption(), sets, temperature=1.0, threshold=0.5, n_boot=10, seed=0)
    assert v["chance"] == pytest.approx((1 / 4 + 1 / 5) / 2) and set(v["per_set"]) == {"Expertise", "Literary"}
    assert v["temperature"] == 1.0 and v["temperature_fit"] == {"fixed": 1.0}


@pytest.mark.parametrize("text,needle", [
    ("prompt,option1,option2,answer\nhi,a,b,a\n", "no column gt"),
    ("prompt,option1,option2,gt\nhi,a,b,c\n", "gt 'c' is none of its options"),
    ("prompt,option1,option2,gt\nhi,a,,a\n", "at least two options"),
    ("prompt,option1,option2,gt\nhi,a,a,a\n", "the same"),
    ("prompt,option1,option2,gt\n", "no rows"),
    ("", "no column"),
])
def test_a_malformed_csv_is_one_line(tmp_path, text, needle):
    f = tmp_path / "bad.csv"
    f.write_text(text, encoding="utf-8")
    with pytest.raises(CharacterError) as e:
        RI.load_csv(f)
    msg = str(e.value)
    assert needle in msg and str(f) in msg and "\n" not in msg


def test_missing_data_is_one_line(tmp_path):
    with pytest.raises(CharacterError, match="not found"):
        RI.load_data(tmp_path / "nope.csv")
    with pytest.raises(CharacterError, match="no .csv files"):
        RI.load_data(tmp_path)


def test_the_shipped_labelled_set_is_in_the_persona_eval_layout():
    from character import constitution as C

    items = RI.load_data(None)["labelled"]
    assert len(items) == 55
    shipped = set(C.available())
    assert all(len(it.options) == 4 and set(it.options) <= shipped for it in items)
    assert all(it.text.startswith("User: ") and "\nAssistant: " in it.text for it in items)
    per = {}
    for it in items:
        per[it.options[it.gt]] = per.get(it.options[it.gt], 0) + 1
    assert len(per) == 11 and set(per.values()) == {5}


class FakeEngine:
    def __init__(self, rows):
        self.rows, self.seen = rows, []

    def score(self, requests, continuations):
        self.seen.append((requests, continuations))
        return self.rows


def test_llm_judge_reads_the_option_letters():
    engine = FakeEngine([[-0.2, -2.0, -3.0]])
    judge = RI.LabelRoleJudge(engine, RI.Personas())
    it = Item("User: hi\nAssistant: Roses unfold.", ("poeticism", "Zed", "sarcasm"), 0)
    assert RI.judge_scores(judge, [it]) == [[-0.2, -2.0, -3.0]]
    (req,), conts = engine.seen[0][0], engine.seen[0][1]
    assert conts == [["A", "B", "C"]]
    text = req.messages[0]["content"]
    assert text.startswith("User: hi\nAssistant: Roses unfold.")
    assert "A. poeticism: A lyrical assistant" in text and "\nB. Zed\n" in text and "C. sarcasm: " in text
    engine.rows = [[-0.2, float("-inf"), -3.0]]
    with pytest.raises(CharacterError, match="no usable score"):
        RI.judge_scores(judge, [it])


def test_embedding_judge_beats_chance_on_the_shipped_set(embedding_judge):
    judge = RI.EmbeddingRoleJudge(embedding_judge.encode, RI.Personas())
    v = RI.validity(judge, RI.load_data(None), temperature=0, threshold=0.5, n_boot=50, seed=0)
    # measured 0.60 [0.47, 0.72] (chance 0.25)
    assert v["top1_ci95"][0] > v["chance"] and RI.verdict(v, "embedding")["inconclusive"] is False
    assert 0.01 < v["temperature"] < 1


def test_check_refuses_bad_settings(tmp_path):
    from character.evaluation.runner import EvalConfig

    bad = tmp_path / "bad.csv"
    bad.write_text("prompt,gt\nx,y\n", encoding="utf-8")
    for kw, needle in [({"roleid_threshold": 0.0}, "roleid_threshold"), ({"roleid_personas": ["poeticism"]},
                                                                           "candidate personas"),
                       ({"roleid_personas": ["nosuch"]}, "not found"), ({"data": [f"role-id={bad}"]}, "no column")]:
        with pytest.raises(CharacterError, match=needle):
            RI.check(EvalConfig(**kw))


@pytest.mark.slow
def test_suite_end_to_end_on_a_tiny_model(tiny_llama_path, tiny_adapters, tmp_path):
    from character.config import load
    from character.evaluation.runner import EvalConfig, run_eval

    cfg = load(EvalConfig, None, suite="role-id", model=tiny_llama_path, backend="hf", adapter=tiny_adapters[:1],
               constitution="humor", roleid_prompts=3, max_tokens=8, bootstrap=20, seed=1, out=str(tmp_path / "e"))
    out = run_eval(cfg)
    sec = json.loads((out / "results.json").read_text())["role-id"]
    d = sec["distinctiveness"]
    assert d["candidates"] == ["poeticism", "sarcasm", "loving", "mathematical", "humor"]
    assert d["prompted"]["n"] == 15 and set(d["prompted"]["per_persona"]) == set(d["candidates"])
    a = d["adapters"]["sarcasm-a"]
    assert a["persona"] == "humor" and a["n"] == 3 and a["minus_reference"]["n"] == 3
    assert sec["validity"]["n"] == 55 and isinstance(sec["inconclusive"], bool)
    report = (out / "report.md").read_text()
    assert "## Role identification (PersonaEval)" in report and "![role-id](roleid.png)" in report
    assert (out / "roleid.png").is_file()



def test_llm_judge_scores_letters_on_a_real_engine(tiny_llama_path):
    from character.engine.base import EngineConfig, make_engine

    items = RI.shuffled(RI.load_data(None)["labelled"][:3], 0)
    with make_engine(EngineConfig(model=tiny_llama_path, backend="hf", dtype="float32")) as engine:
        scores = RI.judge_scores(RI.LabelRoleJudge(engine, RI.Personas()), items)
    assert [len(s) for s in scores] == [4, 4, 4] and all(x < 0 for s in scores for x in s)
    probs = [RI.softmax(s, 1.0) for s in scores]
    assert all(abs(sum(p) - 1) < 1e-9 for p in probs)
