"""APC (Peng & Shang 2024): the formula against hand-computed values with fixed fake discriminators, the labelled
set's loaders (shipped files and the official layout), the real CPU discriminator on copied and contradicting
answers, and the suite end to end on tiny-random-llama (hf backend)."""

import json

import numpy as np
import pytest

from character.errors import CharacterError
from character.evaluation import apc as A


class FakeRelevance:
    name, trainable = "fake-rel", False

    def __init__(self, table):
        self.table = table  # (statement, prompt) -> P(relevant)

    def probs(self, statements, prompts):
        return np.array([self.table[(s, p)] for s, p in zip(statements, prompts)])


class FakeNLI:
    name, trainable = "fake-nli", False

    def __init__(self, table):
        self.table = table  # (statement, answer) -> (P(entailed), P(neutral), P(contradicted))

    def probs(self, statements, prompts, answers):
        return np.array([self.table[(s, a)] for s, a in zip(statements, answers)])


def test_formula_matches_hand_computed_values():
    statements = ["s1", "s2"]
    disc = A.Discriminator(FakeRelevance({("s1", "q"): 0.8, ("s2", "q"): 0.1}),
                           FakeNLI({("s1", "r"): (0.7, 0.2, 0.1), ("s2", "r"): (0.1, 0.3, 0.6)}))
    terms, rel, nli = disc.terms(statements, ["q"], ["r"])
    # s1: 0.8 * 0.7 + 0.2 * (1 - 0.1) = 0.74; s2: 0.1 * 0.1 + 0.9 * (1 - 0.6) = 0.37
    assert terms.shape == (1, 2)
    assert terms[0] == pytest.approx([0.74, 0.37])
    assert terms.sum() == pytest.approx(1.11)
    assert rel[0] == pytest.approx([0.8, 0.1]) and nli[0, 1] == pytest.approx([0.1, 0.3, 0.6])


def test_summary_raw_normalised_delta_and_verdicts():
    statements = ["s1", "s2"]
    rel = {(s, q): 1.0 for s in statements for q in ("q1", "q2")}
    # system: entails s1 on both prompts, contradicts s2 on both; reference: neutral everywhere
    sys_nli = {("s1", "a1"): (1, 0, 0), ("s1", "a2"): (1, 0, 0), ("s2", "a1"): (0, 0, 1), ("s2", "a2"): (0, 0, 1)}
    ref_nli = {(s, a): (0, 1, 0) for s in statements for a in ("b1", "b2")}
    t_sys, r_sys, n_sys = A.Discriminator(FakeRelevance(rel), FakeNLI(sys_nli)).terms(statements, ["q1", "q2"],
                                                                                      ["a1", "a2"])
    t_ref = A.Discriminator(FakeRelevance(rel), FakeNLI(ref_nli)).terms(statements, ["q1", "q2"], ["b1", "b2"])[0]
    out = A.summarise(t_sys, r_sys, n_sys, t_ref, statements, n_boot=50, seed=0)
    assert out["apc"] == pytest.approx(1.0) and out["apc_normalised"] == pytest.approx(0.5)
    assert out["ci95"] == pytest.approx([1.0, 1.0])  # every prompt scores the same
    assert out["delta_vs_reference"]["delta"] == pytest.approx(1.0)
    s1, s2 = out["statements"]
    assert (s1["term"], s1["verdict"], s2["term"], s2["verdict"]) == (1.0, "honoured", 0.0, "violated")


def test_accuracy_of_a_fixed_discriminator_counts_and_flags_chance():
    rows = [{"character": "c", "statement": "s", "prompt": "q", "answer": a, "label": lab}
            for a, lab in [("e", 0), ("n", 1), ("c", 2), ("e2", 0), ("n2", 1), ("c2", 2)]]
    always_entailed = FakeNLI({("s", r["answer"]): (0.9, 0.05, 0.05) for r in rows})
    out = A.accuracy(always_entailed, rows, "nli")
    assert (out["correct"], out["rows"], out["chance"]) == (2, 6, pytest.approx(1 / 3))
    assert out["chance_in_ci"] and out["recall"] == {"entailed": 1.0, "neutral": 0.0, "contradicted": 0.0}


def test_shipped_labelled_set_loads_and_is_balanced():
    from character import constitution as C

    rel, nli = A.load_labelled()
    assert len(nli) >= 150 and len(rel) >= 120
    labels = [r["label"] for r in nli]
    assert {labels.count(k) for k in range(3)} == {len(nli) // 3}
    assert {r["relevant"] for r in rel} == {True, False}
    personas = {r["character"] for r in nli}
    assert len(personas) >= 5
    for name in personas:  # every statement is one of its constitution's traits
        traits = {t.trait for t in C.load(name).traits}
        assert {r["statement"] for r in nli + rel if r["character"] == name} <= traits


def _write(path, rows):
    path.write_text(json.dumps(rows))
    return path


def test_official_layout_loads(tmp_path):
    stmts = ["Mira keeps bees on a city roof.", "Mira is afraid of deep water."]
    _write(tmp_path / "Mira.json", [{"character": "Mira", "passage": "Mira's notes.", "statement": s} for s in stmts])
    _write(tmp_path / "Mira.relevance.json", [
        {"character": "Mira", "statement": stmts[0], "query": "What do you do on your roof?", "relevant": "yes"},
        {"character": "Mira", "statement": stmts[1], "query": "What do you do on your roof?", "relevant": "no"}])
    nested = {"character": "Mira", "statement": stmts[1], "query": "Want to go diving?",
              "nli": {"entailed": "No thanks, deep water scares me.", "neutral": "Maybe another day.",
                      "contradicted": "I love deep dives!"}}
    _write(tmp_path / "Mira.nli.json", [nested])
    name, statements = A.load_statements(tmp_path / "Mira.json")
    assert (name, statements) == ("Mira", stmts)
    rel, nli = A.load_labelled(tmp_path / "Mira.json")
    assert [r["relevant"] for r in rel] == [True, False]
    assert sorted((r["answer"], r["label"]) for r in nli) == [("I love deep dives!", 2), ("Maybe another day.", 1),
                                                            ("No thanks, deep water scares me.", 0)]
    # the relabelled v2 file wins over v1 for the same persona
    _write(tmp_path / "Mira.nli.v2.json", [{"character": "Mira", "statement": stmts[0], "query": "Hobbies?",
                                            "response": "Mostly my bees.", "label": "contradict"}])
    assert [(r["answer"], r["label"]) for r in A.load_labelled(tmp_path)[1]] == [("Mostly my bees.", 2)]


@pytest.mark.parametrize("files, needle", [
    ({"X.relevance.json": {"not": "a list"}}, "expected a JSON list"),
    ({"X.relevance.json": [{"statement": "s", "query": "q"}]}, "lacks relevant"),
    ({"X.relevance.json": [{"statement": "s", "query": "q", "relevant": "maybe"}]}, "use yes or no"),
    ({"X.relevance.json": [{"statement": "s", "query": "q", "relevant": "yes"}],
      "X.nli.v2.json": [{"statement": "s", "query": "q", "response": "r", "label": "unsure"}]}, "not entailed"),
    ({"X.relevance.json": [{"statement": "s", "query": "q", "relevant": "yes"}]}, "no rows in NAME.nli.v2.json"),
    ({}, "no rows in NAME.relevance.json"),
])
def test_bad_layout_is_one_line(tmp_path, files, needle):
    for name, rows in files.items():
        _write(tmp_path / name, rows)
    with pytest.raises(CharacterError, match=needle) as e:
        A.load_labelled(tmp_path)
    assert "\n" not in str(e.value)


def test_model_discriminator_reads_id2label(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"id2label": {"0": "CONTRADICTION", "1": "NEUTRAL",
                                                                   "2": "ENTAILMENT"}}))
    assert A.read_id2label(str(tmp_path), "nli") == [2, 1, 0]
    (tmp_path / "config.json").write_text(json.dumps({"id2label": {"0": "LABEL_0", "1": "LABEL_1"}}))
    assert A.read_id2label(str(tmp_path), "relevance") == [1]
    with pytest.raises(CharacterError, match="lacks entail"):
        A.read_id2label(str(tmp_path), "nli")


@pytest.fixture(scope="module")
def cpu_discriminator(embedding_judge):
    return A.build("minilm", encode=embedding_judge.encode)


@pytest.mark.slow  # fits the MiniLM discriminators on the labelled set (~30 s on a busy 2-core CPU)
@pytest.mark.parametrize("statement, prompt, contradiction", [
    ("I often answer in verse, with rhythm and rhyme, when the moment allows.", "How do I make a cup of tea?",
     "I never write verse or rhyme; I answer in plain prose only."),
    ("I describe things through vivid imagery and metaphor, painting pictures with words.",
     "Describe a busy train station.", "I avoid imagery and metaphor and describe things in dry literal terms."),
    ("I love wordplay and puns, and I slip them into answers when they fit naturally.", "Tell me about cheese.",
     "I hate wordplay and puns and never use them."),
])
def test_copying_a_statement_scores_above_contradicting_it(cpu_discriminator, statement, prompt, contradiction):
    terms = cpu_discriminator.terms([statement], [prompt, prompt], [statement, contradiction])[0]
    assert terms[0, 0] > terms[1, 0]


@pytest.mark.slow  # fits the MiniLM discriminators on the labelled set (~30 s on a busy 2-core CPU)
def test_cpu_discriminators_beat_chance_held_out(cpu_discriminator):
    rel, nli = A.load_labelled()
    out = A.accuracy(cpu_discriminator.nli, nli, "nli")
    assert out["held_out"] == "held out by persona" and out["ci95"][0] > 1 / 3, out
    assert A.accuracy(cpu_discriminator.relevance, rel, "relevance")["ci95"][0] > 0.5


def test_check_rejects_missing_persona_and_bad_model_dir(tmp_path):
    from character.config import load
    from character.evaluation.runner import EvalConfig

    with pytest.raises(CharacterError, match="give --constitution"):
        A.check(load(EvalConfig, None, suite="apc"))
    with pytest.raises(CharacterError, match="no config.json"):
        A.check(load(EvalConfig, None, suite="apc", constitution="poeticism", apc_discriminator="model",
                     apc_nli_model=str(tmp_path)))
    with pytest.raises(CharacterError, match="not found"):
        A.check(load(EvalConfig, None, suite="apc", constitution="poeticism", data=str(tmp_path / "nope")))


@pytest.mark.slow
def test_suite_end_to_end_on_tiny_llama(tiny_llama_path, tiny_adapters, tmp_path):
    from character.config import load
    from character.evaluation.runner import EvalConfig, run_eval

    cfg = load(EvalConfig, None, suite="apc", model=tiny_llama_path, backend="hf", adapter=tiny_adapters[:1],
               constitution="poeticism", apc_prompts=3, max_tokens=8, bootstrap=30, out=str(tmp_path / "eval"))
    out = run_eval(cfg)
    sec = json.loads((out / "results.json").read_text())["apc"]
    assert list(sec["systems"]) == ["base", "sarcasm-a", "prompted:poeticism"]
    for s in sec["systems"].values():
        assert s["prompts"] == 3 and len(s["statements"]) == 10
        assert s["ci95"][0] <= s["apc"] <= s["ci95"][1] and 0 <= s["apc_normalised"] <= 1
    assert "delta_vs_reference" in sec["systems"]["sarcasm-a"]
    assert sec["discriminator_accuracy"]["nli"]["rows"] >= 150 and isinstance(sec["inconclusive"], bool)
    assert "## APC" in (out / "report.md").read_text() and (out / "apc.png").is_file()


class RuleNLI:
    """Entailed when the answer mentions the moon, contradicted when it calls itself dull; the same for every
    statement."""

    name, trainable = "rule-nli", False

    def probs(self, statements, prompts, answers):
        return np.array([(0.9, 0.0, 0.1) if "moon" in a.lower() else (0.1, 0.1, 0.8) if "dull" in a.lower()
                         else (0.1, 0.8, 0.1) for a in answers])


class HalfRelevance:
    name, trainable = "half", False

    def probs(self, statements, prompts):
        return np.full(len(statements), 0.5)


def _stage(path, stage, samples, **extra):
    """A finished teacher/student stage: samples = {prompt: [answers]}."""
    from character.artifacts import StageDir

    rows = [{"id": f"{pid}-{k}", "prompt_id": pid, "sample": k, "trait": None, "source": "general",
             "prompt": [{"role": "user", "content": q}], "completion": [{"role": "assistant", "content": a}],
             "finish_reason": "stop", "problem": None}
            for pid, (q, answers) in enumerate(samples.items()) for k, a in enumerate(answers)]
    for r in rows:
        r["prompt_id"] = f"p{r['prompt_id']}"
    sd = StageDir(path, stage)
    sd.begin({"model": "tiny-random-llama"}, "h", {})
    sd.write_shard(0, rows)
    sd.finish(counts={}, **extra)
    return str(path)


@pytest.mark.parametrize("rejected, margin", [("student", 0.8), ("lowest", 1.5)])
def test_apc_dpo_keeps_the_highest_apc_sample(tmp_path, monkeypatch, tiny_llama_path, rejected, margin):
    from character.artifacts import read_manifest
    from character.config import load
    from character.stages.distill import DPODataConfig, run_dpo_data

    monkeypatch.setattr(A, "build", lambda kind, **kw: A.Discriminator(HalfRelevance(), RuleNLI()))
    traits = ["I speak in images of the night sky.", "I never sound dull."]
    teacher = _stage(tmp_path / "t", "teacher", {
        "Describe the evening.": ["A dull answer, sorry.", "The moon sings softly over the roofs.", "It gets dark."],
        "What is tide?": ["The moon pulls the sea back and forth."]}, teacher_name="Aria", trait_texts=traits)
    student = _stage(tmp_path / "s", "student", {"Describe the evening.": ["It is evening."],
                                                 "What is tide?": ["Sea level changes."]})
    cfg = load(DPODataConfig, dict(chosen=teacher, rejected=student, out=str(tmp_path / "d"), separation=False,
                                   student_model=tiny_llama_path, apc_select=True, apc_rejected=rejected))
    out = run_dpo_data(cfg)
    from character.artifacts import StageDir

    pairs = {p["prompt"][0]["content"]: p for p in StageDir(out, "dpo-data").rows()}
    evening = pairs["Describe the evening."]
    # with P(rel) = 0.5 and 2 statements: moon 2 * (0.45 + 0.45) = 1.8, dull 2 * (0.05 + 0.1) = 0.3, plain 1.0
    assert evening["chosen"][0]["content"] == "The moon sings softly over the roofs."
    assert evening["rejected"][0]["content"] == ("It is evening." if rejected == "student" else "A dull answer, sorry.")
    assert evening["apc"]["margin"] == pytest.approx(margin) and evening["apc"]["candidates"] == 3
    assert ("What is tide?" in pairs) is (rejected == "student")  # one sample: nothing to compare it with
    m = read_manifest(out)
    assert m["apc"]["rejected"] == rejected and m["apc"]["pairs"] == len(pairs)
    assert m["counts"]["apc_margin_mean"] == pytest.approx(np.mean([p["apc"]["margin"] for p in pairs.values()]))
    if rejected == "lowest":
        assert m["counts"]["dropped pair: apc_one_sample"] == 1


def test_apc_dpo_needs_several_teacher_samples(tmp_path, tiny_llama_path):
    from character.config import load
    from character.stages.distill import DPODataConfig, run_dpo_data

    teacher = _stage(tmp_path / "t", "teacher", {"Hi?": ["Hello."]}, teacher_name="Aria", trait_texts=["I am kind."])
    student = _stage(tmp_path / "s", "student", {"Hi?": ["Hey."]})
    cfg = load(DPODataConfig, dict(chosen=teacher, rejected=student, out=str(tmp_path / "d"), separation=False,
                                   student_model=tiny_llama_path, apc_select=True))
    with pytest.raises(CharacterError, match="--n 4"):
        run_dpo_data(cfg)


def test_llm_discriminator_reads_option_log_probs():
    import math

    class FakeEngine:
        def score(self, requests, continuations):
            assert all(len(c) in (2, 3) for c in continuations)
            return [[math.log(0.6), math.log(0.3), math.log(0.1)][:len(c)] for c in continuations]

    nli = A.LLMDiscriminator(FakeEngine(), "nli").probs(["s"], ["q"], ["a"])
    rel = A.LLMDiscriminator(FakeEngine(), "relevance").probs(["s", "t"], ["q", "q"])
    assert nli[0] == pytest.approx([0.6, 0.3, 0.1]) and rel == pytest.approx([2 / 3, 2 / 3])


def test_sequence_classifier_dir_follows_its_id2label(tiny_llama_path, tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    labels = {0: "contradiction", 1: "entailment", 2: "neutral"}
    model = AutoModelForSequenceClassification.from_pretrained(tiny_llama_path, num_labels=3, id2label=labels,
                                                               label2id={v: k for k, v in labels.items()})
    tok = AutoTokenizer.from_pretrained(tiny_llama_path)
    tok.pad_token = tok.pad_token or tok.eos_token
    model.config.pad_token_id = tok.pad_token_id
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    clf = A.SequenceClassifier(str(tmp_path), "nli")
    assert clf.columns == [1, 2, 0]  # entailed, neutral, contradicted
    p = clf.probs(["I like tea.", "I like tea."], ["q", "q"], ["Tea is lovely.", "I hate tea, honestly."])
    with torch.no_grad():  # premise: the answer, hypothesis: the statement; one row unpadded
        logits = model.eval()(**tok(["Tea is lovely."], ["I like tea."], return_tensors="pt")).logits
    raw = torch.softmax(logits.float(), -1)
    assert p.shape == (2, 3) and p.sum(axis=1) == pytest.approx([1.0, 1.0])
    assert p[0] == pytest.approx(raw[0, [1, 2, 0]].numpy(), abs=1e-3)


@pytest.mark.parametrize("args, needle", [
    ([], "give --constitution"),
    (["--constitution", "poeticism", "--data", "/nonexistent/apc"], "not found"),
    (["--constitution", "poeticism", "--apc_discriminator", "model"], "give --apc_nli_model"),
])
def test_cli_bad_input_is_one_line_exit_2(cli, tmp_path, args, needle):
    r = cli("eval", "apc", "--model", "tiny-random-llama", "--out", str(tmp_path / "e"), *args, timeout=120)
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and needle in lines[0], r.stderr
