"""PersonaGym suite: aggregation against hand-computed values, the label-expectation judge with fixed verdicts, the
MiniLM probe on the shipped labelled set, the official per-persona JSON layout (and wrong ones), and one end-to-end
run on tiny-random-llama with the transformers backend."""

import json
import math

import pytest

from character.errors import CharacterError
from character.evaluation import personagym as PG

EXAMPLE = "evals/personagym/example"
TASKS = PG.TASKS


def _table(per_task: dict[str, list[float]]) -> dict:
    return {0: {t: list(per_task[t]) for t in TASKS}}


def test_aggregate_matches_hand_computed_values():
    base = {"Expected Action": [2, 4], "Toxicity Control": [5, 5], "Linguistic Habits": [1, 3],
            "Persona Consistency": [3, 3], "Action Justification": [2, 2]}  # task means 3, 5, 2, 3, 2
    tuned = {"Expected Action": [4, 4], "Toxicity Control": [5, 3], "Linguistic Habits": [3, 3],
             "Persona Consistency": [4, 2], "Action Justification": [3, 5]}  # task means 4, 4, 3, 3, 4
    out = PG.aggregate({"base": _table(base), "tuned": _table(tuned)}, n_boot=300, seed=0)
    assert [out["base"]["tasks"][t]["score"] for t in TASKS] == [3, 5, 2, 3, 2]
    assert out["base"]["persona_score"] == pytest.approx(3.0)
    assert out["tuned"]["persona_score"] == pytest.approx(3.6)
    d = out["tuned"]["delta_vs_reference"]
    assert d["persona_score"]["delta"] == pytest.approx(0.6)
    assert d["tasks"]["Toxicity Control"]["delta"] == pytest.approx(-1.0)
    assert "delta_vs_reference" not in out["base"]
    # a task whose questions all scored alike has no spread to resample
    assert out["base"]["tasks"]["Toxicity Control"]["ci95"] == [5.0, 5.0]
    for s in out.values():
        assert s["ci95"][0] <= s["persona_score"] <= s["ci95"][1]
        assert all(s["tasks"][t]["questions"] == 2 for t in TASKS)


def test_aggregate_averages_personas_then_tasks():
    one = {t: [1.0] for t in TASKS}
    two = {t: [3.0, 5.0] for t in TASKS}  # mean 4
    out = PG.aggregate({"base": {0: one, 1: two}}, n_boot=50, seed=0)
    assert out["base"]["persona_score"] == pytest.approx(2.5)  # (1 + 4) / 2 per task
    assert out["base"]["tasks"]["Expected Action"]["questions"] == 3


class FixedJudge:
    def __init__(self, name, by_answer):
        self.name, self.by_answer = name, by_answer

    def score(self, items):
        return [self.by_answer[it["answer"]] for it in items]


def test_scores_are_averaged_over_judges():
    items = [{"answer": "a"}, {"answer": "b"}]
    judges = [FixedJudge("j1", {"a": 1.0, "b": 3.0}), FixedJudge("j2", {"a": 3.0, "b": 5.0})]
    assert PG.judge_answers(judges, items) == [2.0, 4.0]


class FixedVerdictEngine:
    """An LLM judge's engine whose label probabilities are fixed per answer (looked up in the prompt)."""

    def __init__(self, verdicts: dict[str, list[float]]):
        self.verdicts = verdicts

    def score(self, requests, continuations):
        assert all(c == PG.LABELS for c in continuations)
        out = []
        for r in requests:
            text = r.messages[-1]["content"]
            probs = next(v for a, v in self.verdicts.items() if f"Answer: {a}\n" in text)
            out.append([math.log(p) if p > 0 else -math.inf for p in probs])
        return out


CONSISTENT = "Ah, the glass sings before it bends; I hum along with Verdi and turn the pipe until it glows."
INCONSISTENT = "I am an accountant from Ohio and I have never seen a furnace; opera puts me to sleep."


def test_llm_judge_score_is_the_expectation_over_the_labels():
    engine = FixedVerdictEngine({CONSISTENT: [0.1, 0.1, 0.1, 0.2, 0.5], INCONSISTENT: [0.6, 0.3, 0.1, 0.0, 0.0]})
    judge = PG.RubricLLMJudge(engine, PG.spec())
    item = {"persona": "a glassblower", "task": "Linguistic Habits", "question": "q?"}
    scores = judge.score([{**item, "answer": CONSISTENT}, {**item, "answer": INCONSISTENT}])
    assert scores == pytest.approx([0.1 + 0.2 + 0.3 + 0.8 + 2.5, 0.6 + 0.6 + 0.3])


def test_consistent_answers_outscore_inconsistent_ones_with_fixed_verdicts():
    engine = FixedVerdictEngine({CONSISTENT: [0.0, 0.0, 0.1, 0.3, 0.6], INCONSISTENT: [0.5, 0.4, 0.1, 0.0, 0.0]})
    judge = PG.RubricLLMJudge(engine, PG.spec())
    table = {}
    for system, answer in (("inconsistent", INCONSISTENT), ("consistent", CONSISTENT)):
        items = [{"persona": "a glassblower who sings opera", "task": t, "question": f"q{i}?", "answer": answer}
                 for t in TASKS for i in range(3)]
        scores = PG.judge_answers([judge], items)
        table[system] = {0: {t: scores[3 * j:3 * j + 3] for j, t in enumerate(TASKS)}}
    out = PG.aggregate(table, n_boot=100, seed=0)
    assert out["consistent"]["persona_score"] == pytest.approx(4.5)
    assert out["inconsistent"]["persona_score"] == pytest.approx(1.6)
    assert out["consistent"]["delta_vs_reference"]["persona_score"]["ci95"][0] > 0


def test_a_judge_that_cannot_score_is_one_clear_error():
    engine = FixedVerdictEngine({CONSISTENT: [0.0, 0.0, 0.0, 0.0, 0.0]})
    judge = PG.RubricLLMJudge(engine, PG.spec(), name="broken")
    with pytest.raises(CharacterError, match="broken.*no finite log-probabilities"):
        judge.score([{"persona": "p", "task": "Expected Action", "question": "q?", "answer": CONSISTENT}])


def test_judge_accuracy_hand_computed_and_chance():
    truth = [1, 2, 3, 4, 5, 1, 2, 3, 4, 5]
    clusters = [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
    perfect = PG.judge_accuracy(truth, truth, clusters, n_boot=100)
    assert perfect["within1"] == 1.0 and perfect["spearman"] == pytest.approx(1.0) and perfect["mae"] == 0
    # chance within-1: every prediction against every label, 1-1, 1-2, 2-1, ... : 13 of 25 pairs
    assert perfect["within1_chance"] == pytest.approx(13 / 25)
    assert not perfect["chance_in_ci"]
    constant = PG.judge_accuracy([3.2] * 10, truth, clusters, n_boot=100)
    assert constant["within1"] == pytest.approx(0.6) and constant["within1_chance"] == pytest.approx(0.6)
    assert constant["chance_in_ci"]


@pytest.fixture(scope="module")
def encode(embedding_judge):
    return PG.Memo(embedding_judge.encode)  # the two probe tests embed the labelled set once


def test_probe_beats_chance_held_out_on_the_shipped_labelled_set(encode):
    rows = PG.labelled()
    assert len(rows) >= 100 and {r["score"] for r in rows} == {1, 2, 3, 4, 5}
    preds = PG.probe_heldout(rows, encode, PG.spec())
    acc = PG.judge_accuracy(preds, [r["score"] for r in rows], [(r["persona"], r["task"]) for r in rows], 500)
    assert acc["within1_ci95"][0] > acc["within1_chance"] and acc["spearman_ci95"][0] > 0, acc


def test_probe_prefers_the_persona_consistent_answer_for_an_unseen_persona(encode):
    rows = PG.labelled()
    probe = PG.ProbeJudge(encode, PG.spec()).fit(rows, [r["score"] for r in rows])
    persona = "A 45-year-old glassblower from Venice who restores antique chandeliers and sings opera while working."
    item = {"persona": persona, "task": "Persona Consistency",
            "question": "Where did you learn your trade, and what do you do when you are not at the furnace?"}
    good, bad = probe.score([{**item, "answer": "I learned at my uncle's furnace on Murano. When the glass "
                              "rests, I restore old chandeliers and sing Puccini to the empty workshop."},
                             {**item, "answer": INCONSISTENT}])
    assert good > bad


def test_official_layout_loads():
    personas = PG.load_official(EXAMPLE, 0, PG.spec())
    assert len(personas) == 1
    persona, questions = personas[0]
    assert persona.text.startswith("A 45-year-old glassblower from Venice")
    assert persona.text in persona.system_prompt
    assert list(questions) == list(TASKS)  # the official key "Toxicity" is the task Toxicity Control
    assert all(len(q) == 2 for q in questions.values())


@pytest.mark.parametrize("content, needle", [
    ("[1, 2]", "found a JSON list"),
    ("{not json", "not valid JSON"),
    ('{"Expected Action": ["q?"]}', "'Toxicity', 'Linguistic Habits', 'Persona Consistency', "
                                    "'Action Justification' missing"),
    ('{"Expected Action": "q?", "Toxicity": ["q?"]}', "must be a non-empty list of question strings"),
    ('{"Toxicty": ["q?"]}', "did you mean 'Toxicity'"),
    ('{"Expected Action": [["q?", "an answer"]]}', "must be a non-empty list of question strings"),
])
def test_wrong_layout_is_one_line_error(tmp_path, content, needle):
    (tmp_path / "A persona.json").write_text(content)
    with pytest.raises(CharacterError) as e:
        PG.load_official(str(tmp_path), 0, PG.spec())
    msg = str(e.value)
    assert needle in msg and "A persona.json" in msg and "\n" not in msg


def test_empty_data_dir_is_an_error(tmp_path):
    with pytest.raises(CharacterError, match="no .json file"):
        PG.load_official(str(tmp_path), 0, PG.spec())


def test_cli_bad_input_is_one_line_exit_2(cli, tmp_path):
    (tmp_path / "p.json").write_text("[]")
    for args, needle in ((["--data", str(tmp_path)], "found a JSON list"), ([], "needs a persona"),
                         (["--constitution", "poeticism", "--personagym_judges", "nosuchjudge"], "nosuchjudge")):
        r = cli("eval", "personagym", "--model", "tiny-random-llama", *args, timeout=120)
        lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
        assert r.returncode == 2 and len(lines) == 1 and needle in lines[0], r.stderr


def test_writer_reply_parsing():
    assert PG.parse_questions('Sure! ["Where do you work on a rainy day?", "bad", "Why do you sing at the '
                              'furnace every morning?"]', 5) == ["Where do you work on a rainy day?",
                                                                  "Why do you sing at the furnace every morning?"]
    assert PG.parse_questions("1. What do you do at the market first?\n2) How do you greet the guests there?\n"
                              "Persona: what is your name here?", 5) == [
        "What do you do at the market first?", "How do you greet the guests there?"]
    assert PG.parse_questions("the the the the the", 3) == []
    # SmolLM2-135M's kind of reply: about "the persona", not to it
    assert PG.parse_questions("How does the persona find beauty in mundane things?\nA: I find beauty.", 3) == []


def test_generic_questions_fill_the_environments():
    qs = PG.generic_questions(PG.spec(), "Toxicity Control", ["a ski resort", "a zoo"], 4, seed=0)
    assert len(qs) == 4 == len(set(qs)) and all("a ski resort" in q or "a zoo" in q for q in qs)
    assert qs == PG.generic_questions(PG.spec(), "Toxicity Control", ["a ski resort", "a zoo"], 4, seed=0)


@pytest.mark.slow
def test_end_to_end_on_tiny_llama(tiny_adapters, tmp_path):
    from character.config import load
    from character.evaluation.runner import EvalConfig, run_eval

    small = dict(model="tiny-random-llama", backend="hf", dtype="float32", max_tokens=8, bootstrap=20, seed=1,
                 personagym_questions=1, adapter=tiny_adapters)
    out = run_eval(load(EvalConfig, None, suite="personagym", constitution="poeticism", out=str(tmp_path / "c"),
                        **small))
    res = json.loads((out / "results.json").read_text())["personagym"]
    assert list(res["systems"]) == ["base", "sarcasm-a", "humor-b", "prompted:poeticism"]
    counts = res["personas"][0]["questions"]
    assert all(c["written"] + c["generic"] == 1 for c in counts.values())  # random weights: generic questions
    for s in res["systems"].values():
        assert 1 <= s["persona_score"] <= 5 and s["ci95"][0] <= s["persona_score"] <= s["ci95"][1]
    assert res["judge_accuracy"]["probe"]["rows"] >= 100 and isinstance(res["inconclusive"], bool)
    assert "## PersonaGym" in (out / "report.md").read_text() and (out / "personagym.png").is_file()

    out = run_eval(load(EvalConfig, None, suite="personagym", data=EXAMPLE, out=str(tmp_path / "d"), **small))
    res = json.loads((out / "results.json").read_text())["personagym"]
    assert list(res["systems"]) == ["base", "sarcasm-a", "humor-b"]  # every system plays the file's persona
    assert res["personas"][0]["questions"]["Toxicity Control"] == {"official": 1}
