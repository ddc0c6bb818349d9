"""Training data: validation errors (one line, exit 2) and exact assistant-only SFT labels for several templates."""

from __future__ import annotations

import json

import pytest
from trainhelpers import dpo_rows, sft_rows, write_jsonl

from character.errors import CharacterError
from character.train.data import load_dpo, load_sft, tokenize_sft

# Trimmed-down versions of well-known chat templates, enough to exercise their turn markers.
LLAMA3 = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
          "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
          "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
GEMMA = ("{{ bos_token }}{% for m in messages %}{% set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
         "<start_of_turn>{{ role }}\n{{ m['content'] | trim }}<end_of_turn>\n{% endfor %}"
         "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")
QWEN = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.mark.parametrize("rows, message", [
    ([], "empty"),
    ([{"question": "hi", "answer": "yo"}], "missing column(s) prompt, chosen, rejected"),
    ([{"prompt": "hi", "chosen": "a", "rejected": "b"}], "conversational"),
    ([{"prompt": [{"role": "user", "content": "hi"}], "chosen": [{"role": "assistant", "content": "same"}],
       "rejected": [{"role": "assistant", "content": "same"}]}], "identical"),
    ([{"prompt": [{"role": "user", "content": "hi"}], "chosen": [{"role": "user", "content": "a"}],
       "rejected": [{"role": "assistant", "content": "b"}]}], "role 'user'"),
])
def test_bad_dpo_rows_are_one_line_errors(tmp_path, rows, message):
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(CharacterError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        load_dpo(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_bad_sft_rows(tmp_path):
    with pytest.raises(CharacterError, match="missing column 'messages'"):
        load_sft(write_jsonl(tmp_path / "a.jsonl", [{"text": "hello"}]))
    with pytest.raises(CharacterError, match="end on an assistant"):
        load_sft(write_jsonl(tmp_path / "b.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}]))


def test_stage_directory_shards_are_read_in_order(tmp_path):
    rows = dpo_rows(5)
    write_jsonl(tmp_path / "stage" / "shard-00001.jsonl", rows[3:])
    write_jsonl(tmp_path / "stage" / "shard-00000.jsonl", rows[:3])
    got = load_dpo(tmp_path / "stage")
    assert [r["prompt"] for r in got] == [r["prompt"] for r in rows]
    assert "meta" not in got[0]  # extra keys are ignored


def test_cli_bad_inputs_exit_2(cli, tmp_path, tiny_llama_path):
    empty = write_jsonl(tmp_path / "empty.jsonl", [])
    same = write_jsonl(tmp_path / "same.jsonl", [{**dpo_rows(1)[0], "rejected": dpo_rows(1)[0]["chosen"]}])
    good = write_jsonl(tmp_path / "good.jsonl", dpo_rows(2))
    cases = [
        (["train", "dpo", "--data", empty], "empty"),
        (["train", "dpo", "--data", same], "identical"),
        (["train", "dpo", "--data", good, "--model", "./no-such-model"], "directory not found"),
        (["train", "dpo", "--data", good, "--model", "nobody-here/no-such-model-xyz"], "cannot load"),
        (["train", "sft", "--data", write_jsonl(tmp_path / "s.jsonl", sft_rows(2)), "--model", tiny_llama_path,
          "--adapter", tmp_path], "no adapter_config.json"),
    ]
    for args, message in cases:
        r = cli(*args, "--out", tmp_path / "out", env={"HF_HUB_OFFLINE": "1"})
        assert r.returncode == 2, (args, r.stderr[-2000:])
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith("error:") and message in last, (args, last)
        assert "Traceback" not in r.stderr


def _trained_text(tok, enc):
    return tok.decode([t for t, label in zip(enc["input_ids"], enc["labels"]) if label != -100])


@pytest.mark.parametrize("template, end", [(None, "<|im_end|>"), (LLAMA3, "<|eot_id|>"),
                                           (GEMMA, "<end_of_turn>"), (QWEN, "<|im_end|>")])
def test_sft_labels_cover_exactly_the_assistant_turns(smollm2_path, template, end):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_path)
    if template:
        tok.chat_template = template
        tok.add_special_tokens({"additional_special_tokens": ["<|eot_id|>", "<end_of_turn>", "<start_of_turn>",
                                                              "<|start_header_id|>", "<|end_header_id|>"]})
    msgs = sft_rows(2)[1]["messages"]  # system, user, assistant, user, assistant
    enc = tokenize_sft(tok, msgs)
    answers = [m["content"] for m in msgs if m["role"] == "assistant"]
    assert _trained_text(tok, enc) == "".join(a + end for a in answers)
    # every trained token is the label of itself (no shifting here), and nothing else is trained
    assert all(label in (-100, t) for t, label in zip(enc["input_ids"], enc["labels"]))
    n_user = sum(len(tok(m["content"], add_special_tokens=False)["input_ids"]) for m in msgs if m["role"] != "assistant")
    assert sum(label == -100 for label in enc["labels"]) >= n_user


def test_sft_truncation_keeps_the_start(smollm2_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_path)
    enc = tokenize_sft(tok, sft_rows(2)[1]["messages"], max_length=20)
    assert len(enc["input_ids"]) == len(enc["labels"]) == 20
    json.dumps(enc)  # plain lists, storable
