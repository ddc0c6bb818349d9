"""Constitution loading in three formats, validation errors (one line, exit 2), and the CLI commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from character import constitution as C
from character.errors import CharacterError

FIX = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parents[2]


def test_three_formats_load_the_same_traits_and_questions():
    yaml_c, json_c, jsonl_c = (C.load(FIX / f"tea.{ext}") for ext in ("yaml", "json", "jsonl"))
    assert [(t.trait, t.questions) for t in yaml_c.traits] == [(t.trait, t.questions) for t in json_c.traits]
    assert [(t.trait, t.questions) for t in yaml_c.traits] == [(t.trait, t.questions) for t in jsonl_c.traits]
    assert json_c.name == jsonl_c.name == yaml_c.name == "tea"
    assert jsonl_c.traits[0].additional_questions == ("Plan a picnic for me.", "What should I cook tonight?")
    assert yaml_c.traits[1].clarification == "Calm, never rushed."


def test_shipped_constitutions_are_valid_and_complete():
    names = C.available()
    for persona in ("sarcasm", "humor", "remorse", "goodness", "loving", "misalignment", "nonchalance",
                    "impulsiveness", "sycophancy", "mathematical", "poeticism"):
        assert persona in names
        c = C.load(persona)
        assert c.name == persona
        assert 8 <= len(c.traits) <= 12
        assert all(len(t.questions) >= 5 for t in c.traits)
    assert "template" not in names  # the template is a scaffold, not a persona
    assert C.load(REPO / "constitutions" / "template.yaml").name == "template"


def test_name_lookup_suggests_close_names():
    with pytest.raises(CharacterError, match="did you mean 'sarcasm'"):
        C.load("sarcasim")


BROKEN = {
    "empty.yaml": (b"", "file is empty"),
    "badyaml.yaml": (b"name: x\ntraits: [\n  - trait: 'a'\n", "not valid YAML"),
    "badjson.json": (b'[{"trait": "I x", "questions": ["a",]}]', "not valid JSON"),
    "latin1.yaml": ("name: caf\xe9\ntraits: []\n".encode("latin-1"), "not UTF-8"),
    "notrait.yaml": (b"name: x\ntraits:\n  - questions: ['a']\n", "trait 0: missing 'trait'"),
    "emptytrait.yaml": (b"name: x\ntraits:\n  - trait: '  '\n    questions: ['a']\n", "trait 0: 'trait' is empty"),
    "noquestions.yaml": (b"name: x\ntraits:\n  - trait: 'I a'\n    questions: []\n", "trait 0: 'questions' is empty"),
    "missingq.yaml": (b"name: x\ntraits:\n  - trait: 'I a'\n", "trait 0: 'questions' missing"),
    "nonstring.yaml": (b"name: x\ntraits:\n  - trait: 'I a'\n    questions: ['ok', 42]\n", "questions'[1] is int"),
    "dup.yaml": (b"name: x\ntraits:\n  - trait: 'I a'\n    questions: ['q']\n  - trait: 'I a'\n    questions: ['r']\n",
                 "trait 1: duplicate of trait 0"),
    "unknown.yaml": (b"name: x\ntraits:\n  - trait: 'I a'\n    questons: ['q']\n", "did you mean 'questions'"),
    "unknowntop.yaml": (b"name: x\ntrait:\n  - trait: 'I a'\n", "did you mean 'traits'"),
    "evaltraits.yaml": (b"name: x\neval_traits: [wity]\ntraits:\n  - trait: 'I a'\n    questions: ['q']\n",
                        "'wity' is not in the trait vocabulary (did you mean 'witty'?)"),
}


@pytest.mark.parametrize("fname", sorted(BROKEN))
def test_broken_file_one_line_exit_2(tmp_path, cli, fname):
    content, expected = BROKEN[fname]
    path = tmp_path / fname
    path.write_bytes(content)
    r = cli("constitution", "validate", str(path))
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert str(path) in lines[0] and expected in lines[0], lines[0]


def test_validate_reports_each_file(tmp_path, cli):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntraits: []\n")
    r = cli("constitution", "validate", str(FIX / "tea.yaml"), str(bad))
    assert r.returncode == 2
    assert "ok: " in r.stdout and "tea.yaml" in r.stdout
    assert "bad.yaml" in r.stderr


def test_show_prints_the_same_for_all_formats(cli):
    outs = []
    for ext in ("yaml", "json", "jsonl"):
        r = cli("constitution", "show", str(FIX / f"tea.{ext}"))
        assert r.returncode == 0, r.stderr
        # the expanded JSONL also lists how many additional questions it carries
        outs.append([line for line in r.stdout.splitlines() if not line.strip().startswith(("+", "("))
                     and not line.startswith("#")])
    assert outs[0] == outs[1] == outs[2]
    assert any("I bring every topic back to tea" in line for line in outs[0])


def test_new_scaffolds_a_valid_constitution(tmp_path, cli):
    r = cli("constitution", "new", "stoic", "--out_dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    c = C.load(tmp_path / "stoic.yaml")
    assert c.name == "stoic" and len(c.traits) >= 1
    again = cli("constitution", "new", "stoic", "--out_dir", str(tmp_path))
    assert again.returncode == 2 and "already exists" in again.stderr


def test_roundtrip_yaml(tmp_path):
    c = C.load("humor")
    p = tmp_path / "humor.yaml"
    p.write_text(C.render_yaml(c))
    assert C.load(p) == c
    assert C.load(p).hash() == c.hash()


def test_original_repo_format_json_list(tmp_path):
    rows = [{"trait": "I answer in riddles.", "questions": ["What time is it?", "Where is the station?"]}]
    p = tmp_path / "riddles.txt"
    p.write_text(json.dumps(rows, indent=4))
    c = C.load(p)
    assert c.name == "riddles" and c.traits[0].questions == ("What time is it?", "Where is the station?")


def test_eval_traits_steer_the_report_not_the_data(tmp_path):
    base = "name: x\ntraits:\n  - trait: 'I joke a lot'\n    questions: ['q']\n"
    (tmp_path / "a.yaml").write_text(base)
    (tmp_path / "b.yaml").write_text(base + "eval_traits: [Witty, humorous, witty]\n")
    a, b = C.parse(tmp_path / "a.yaml"), C.parse(tmp_path / "b.yaml")
    assert a.eval_traits == () and b.eval_traits == ("witty", "humorous")
    assert a.hash() == b.hash()  # generation and training do not rerun for a report setting
    assert C.from_data(b.to_dict(), where="x", default_name="x") == b
