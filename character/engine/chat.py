"""Messages a stage wants, in a shape the model family's chat template accepts.

Stages build conversations the natural way: a system prompt, then turns in any order (speaker A of a
self-interaction spoke first, so its view starts with an `assistant` turn). Templates differ in what they accept:
SmolLM2, Llama-3.1 and Qwen2.5 render any order; Gemma-3 has no system role (it folds the system text into the
first user turn) and raises "Conversation roles must alternate" unless turns alternate from a user turn; older
templates (Gemma-2, Mistral) raise on a system message at all. `render_chat` tries the messages as given and,
only if the template refuses them, the least changed shape it accepts:

1. as given (every template that accepts them renders exactly what the stage built);
2. user turn first, consecutive turns of one role merged, the system message kept;
3. as 2, with the system message folded into the first user turn (what Gemma-3 does itself).

Every message's text survives each step. A template that refuses all three gets one `CharacterError` naming the
stage and the model. `render_prompt` (engine/base.py) renders through here, so the hf and vllm backends and every
stage get it.

The openai backend sends the stage's messages unchanged: the server applies its own template, which this side
cannot see. A `vllm serve` of a Gemma-3 model then answers 400 with the template's message, which the backend
reports as one line (`openai: ... answered 400 (Conversation roles must alternate ...)`); `candidate_shapes` is
the tokenizer-free list of shapes a caller can send instead.
"""

from __future__ import annotations

from collections.abc import Iterator

from character.errors import CharacterError

# The user turn put before a conversation the model opens (speaker A of an interaction, whose first line is the
# scripted opener). A bare greeting: it carries no instruction that could steer the persona, and the model's
# opener reads as a natural reply to it; the other copy's replies are the real user turns that follow.
OPENING_USER_TURN = "Hello."


def candidate_shapes(messages: list[dict]) -> Iterator[list[dict]]:
    """The shapes to try, least changed first, each yielded once."""
    seen: list[list[dict]] = []
    for shape in (list(messages), _alternating(messages, fold_system=False), _alternating(messages, fold_system=True)):
        if shape not in seen:
            seen.append(shape)
            yield shape


def render_chat(tokenizer, messages: list[dict], *, add_generation_prompt: bool = True, stage: str | None = None,
                model: str | None = None) -> tuple[list[dict], str]:
    """(the messages rendered, the rendered text): the first shape of `candidate_shapes` the template accepts."""
    from jinja2 import TemplateError

    first_refusal = None
    for shape in candidate_shapes(messages):
        try:
            text = tokenizer.apply_chat_template(shape, tokenize=False, add_generation_prompt=add_generation_prompt)
        except TemplateError as e:
            first_refusal = first_refusal or e
            continue
        except ValueError:
            if getattr(tokenizer, "chat_template", None) is None:
                raise CharacterError(f"model '{_model_name(tokenizer, model)}' has no chat template (stage "
                                     f"{stage or 'unknown'}); use an instruct model or add a chat_template to "
                                     f"its tokenizer_config.json") from None
            raise
        return shape, text
    roles = ", ".join(str(m.get("role")) for m in messages)
    raise CharacterError(
        f"the chat template of model '{_model_name(tokenizer, model)}' refuses the messages of stage "
        f"{stage or 'unknown'} (roles: {roles}; the template says: {_first_line(first_refusal)}), also with a user "
        f"turn first, same-role turns merged and the system prompt folded into the first user turn; use a model "
        f"whose template takes system/user/assistant turns, or give its tokenizer_config.json such a chat_template")


def fit_messages(tokenizer, messages: list[dict], *, add_generation_prompt: bool = True, stage: str | None = None,
                 model: str | None = None) -> list[dict]:
    """`messages` in the shape `tokenizer`'s chat template accepts (unchanged when it accepts them as they are)."""
    return render_chat(tokenizer, messages, add_generation_prompt=add_generation_prompt, stage=stage, model=model)[0]


def stage_of(progress: str | None) -> str | None:
    """The stage named by an engine call's progress label: stages label their calls '<stage> <shard> ...'."""
    return progress.split()[0] if progress and progress.split() else None


def _alternating(messages: list[dict], fold_system: bool) -> list[dict]:
    """User first, no two turns of one role in a row; the leading system message kept or folded into turn one."""
    system = [dict(m) for m in messages[:1] if m.get("role") == "system"]
    turns = [dict(m) for m in messages[len(system):]]
    if not turns or turns[0].get("role") != "user":
        turns.insert(0, {"role": "user", "content": OPENING_USER_TURN})
    if fold_system and system:
        turns[0]["content"] = _join(system[0]["content"], turns[0]["content"])
        system = []
    merged: list[dict] = []
    for m in turns:
        if merged and merged[-1].get("role") == m.get("role"):
            merged[-1]["content"] = _join(merged[-1]["content"], m["content"])
        else:
            merged.append(m)
    return system + merged


def _join(first: str, second: str) -> str:
    """Two texts as one turn, a blank line between (how Gemma-3 itself joins a system prompt to a user turn)."""
    return f"{first}\n\n{second}"


def _model_name(tokenizer, model: str | None) -> str:
    return model or getattr(tokenizer, "name_or_path", "") or "unknown"


def _first_line(error: Exception | None) -> str:
    text = str(error or "").strip()
    return text.splitlines()[0] if text else type(error).__name__
