"""Training data: read and check conversational JSONL, and turn SFT conversations into token ids + labels.

DPO rows:  {"prompt": [{"role": "user", ...}], "chosen": [{"role": "assistant", ...}], "rejected": [...]}
SFT rows:  {"messages": [{"role": "system"|"user"|"assistant", "content": ...}, ...]} ending on an assistant turn.
Other keys are kept but ignored. `data` is a JSONL file or a stage directory of `shard-*.jsonl` files.

Assistant-only SFT labels are computed from the rendered chat template (no `{% generation %}` markers needed):
each assistant turn's text span is found by rendering the conversation prefix by prefix, then mapped to tokens
through the tokenizer's character offsets. Works for any template that renders a conversation's prefix as a
prefix of the whole (ChatML/SmolLM2, Llama 3, Gemma, Qwen); other templates fall back to locating the content.

    python -m character.train.data FILE_OR_DIR dpo|sft     # check a data set, print counts
"""

from __future__ import annotations

import sys
from pathlib import Path

from character.artifacts import SHARD_GLOB, read_jsonl
from character.errors import CharacterError
from character.identity import identity

ROLES = ("system", "user", "assistant", "tool")


def data_files(data: str | Path) -> list[Path]:
    p = Path(data).expanduser()
    if p.is_file():
        return [p]
    if p.is_dir():
        shards = sorted(p.glob(SHARD_GLOB))
        if not shards:
            raise CharacterError(f"data '{p}': no {SHARD_GLOB} files in the directory; give a JSONL file or the "
                                 f"output directory of a generation stage")
        return shards
    raise CharacterError(f"data '{p}': no such file or directory; give a JSONL file or a stage directory")


def _read_rows(data: str | Path) -> list[tuple[str, dict]]:
    rows = []
    for f in data_files(data):
        for i, row in enumerate(read_jsonl(f), 1):
            rows.append((f"{f}:{i}", row))
    if not rows:
        raise CharacterError(f"data '{data}': the data set is empty; generate data first or check the path")
    return rows


def _check_messages(where: str, key: str, msgs, *, roles: tuple[str, ...] = ROLES) -> None:
    if not isinstance(msgs, list) or not msgs:
        raise CharacterError(f"{where}: '{key}' must be a non-empty list of {{role, content}} messages "
                             f"(conversational format)")
    for j, m in enumerate(msgs):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise CharacterError(f"{where}: {key}[{j}] is not a {{role, content}} message; "
                                 f"use the conversational format")
        if m["role"] not in roles:
            raise CharacterError(f"{where}: {key}[{j}] has role '{m['role']}'; expected one of {', '.join(roles)}")
        if not isinstance(m["content"], str):
            raise CharacterError(f"{where}: {key}[{j}].content must be text")


def load_dpo(data: str | Path) -> list[dict]:
    """Preference pairs, checked; returns rows with only prompt/chosen/rejected."""
    out = []
    for where, row in _read_rows(data):
        missing = [k for k in ("prompt", "chosen", "rejected") if k not in row]
        if missing:
            raise CharacterError(f"{where}: missing column(s) {', '.join(missing)} (found {', '.join(row) or 'none'});"
                                 f" DPO rows need prompt, chosen and rejected message lists")
        _check_messages(where, "prompt", row["prompt"])
        if row["prompt"][-1]["role"] != "user":
            raise CharacterError(f"{where}: the prompt must end on a user message")
        for key in ("chosen", "rejected"):
            _check_messages(where, key, row[key], roles=("assistant",))
        if row["chosen"] == row["rejected"]:
            raise CharacterError(f"{where}: chosen and rejected are identical, so the pair teaches nothing; "
                                 f"drop the row or regenerate it")
        out.append({"prompt": row["prompt"], "chosen": row["chosen"], "rejected": row["rejected"]})
    return out


def load_sft(data: str | Path) -> list[dict]:
    """Conversations, checked; returns rows with only `messages`."""
    out = []
    for where, row in _read_rows(data):
        if "messages" not in row:
            raise CharacterError(f"{where}: missing column 'messages' (found {', '.join(row) or 'none'}); "
                                 f"SFT rows are {{\"messages\": [{{role, content}}, ...]}}")
        _check_messages(where, "messages", row["messages"])
        if row["messages"][-1]["role"] != "assistant":
            raise CharacterError(f"{where}: the conversation must end on an assistant message")
        out.append({"messages": row["messages"]})
    return out


def _render(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def assistant_char_spans(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of every assistant turn (with its end-of-turn marker)."""
    text = _render(tokenizer, messages)
    spans: list[tuple[int, int]] = []
    cursor = 0
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:i], add_generation_prompt=True) if i else ""
        through = _render(tokenizer, messages[: i + 1])
        if text.startswith(before) and text.startswith(through) and len(through) > len(before) >= cursor:
            start, end = len(before), len(through)
            # The newline a template puts after the end-of-turn token is not the model's to learn
            stripped = text[start:end].rstrip()
            if stripped.endswith(tuple(_end_markers(tokenizer))):
                end = start + len(stripped)
        else:
            # A template that rewrites earlier turns (e.g. drops reasoning): locate the content itself
            start = text.find(m["content"], cursor)
            if start < 0:
                raise CharacterError(f"chat template: cannot find assistant turn {i} in the rendered conversation; "
                                     f"use a template that renders message contents verbatim")
            end = start + len(m["content"])
            for marker in _end_markers(tokenizer):
                if marker and text.startswith(marker, end):
                    end += len(marker)
                    break
        spans.append((start, end))
        cursor = end
    return text, spans


def _end_markers(tokenizer) -> list[str]:
    """Tokens that close an assistant turn in common templates (the EOS must be learned so the model stops)."""
    markers = [tokenizer.eos_token, "<|im_end|>", "<|eot_id|>", "<end_of_turn>", "</s>", "<|end|>"]
    return [m for m in dict.fromkeys(markers) if m]


def tokenize_sft(tokenizer, messages: list[dict], max_length: int | None = None) -> dict:
    """input_ids and labels (-100 everywhere but the assistant turns) for one conversation."""
    text, spans = assistant_char_spans(tokenizer, messages)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    labels = []
    for tok, (a, b) in zip(ids, offsets):
        # a token belongs to a turn when its text starts inside the span (tokens can carry a leading space)
        inside = any(s <= a < e or (a < s < b <= e) for s, e in spans) and b > a
        labels.append(tok if inside else -100)
    if max_length is not None:
        ids, labels = ids[:max_length], labels[:max_length]
    return {"input_ids": ids, "labels": labels}


def main(argv: list[str]) -> None:
    if len(argv) != 2 or argv[1] not in ("dpo", "sft"):
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        sys.exit(2)
    rows = load_dpo(argv[0]) if argv[1] == "dpo" else load_sft(argv[0])
    print(f"ok: {len(rows)} {argv[1]} rows in {argv[0]} (hash {identity(argv[0])})")


if __name__ == "__main__":
    from character.errors import run_cli

    run_cli(lambda: main(sys.argv[1:]))
