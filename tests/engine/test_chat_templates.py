"""Every stage's messages under the chat templates of real model families (issue 13, item 2).

The fixtures in tests/fixtures/chat_templates/ behave as Gemma-3's, Llama-3.1's and Qwen2.5's templates do;
SmolLM2's is its own. Each family is a model folder (SmolLM2's tokenizer and config, the family's template), and
each stage runs its own code against an engine that renders every request as the hf and vllm backends do
(`render_prompt`) and answers with one finished sentence, so the messages checked are the ones the stages build.

    .venv/bin/pytest -q tests/engine/test_chat_templates.py
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from jinja2 import TemplateError

from character.artifacts import StageDir
from character.config import load
from character.engine.base import Completion, Engine, EngineConfig, Request, Sampling, render_prompt
from character.engine.chat import OPENING_USER_TURN, fit_messages, stage_of
from character.errors import CharacterError
from character.evaluation.systems import System
from character.stages import (
    run_interaction,
    run_prompts,
    run_reflection,
    run_sft_data,
    run_student,
    run_teacher,
)
from character.stages.distill import StudentConfig, TeacherConfig
from character.stages.introspect import InteractionConfig, ReflectionConfig, SFTDataConfig
from character.stages.prompts import PromptsConfig

TEMPLATES = Path(__file__).resolve().parents[1] / "fixtures" / "chat_templates"
FAMILIES = ("smollm2", "gemma-3", "llama-3.1", "qwen2.5")
STAGES = ("teacher", "student", "prompts", "reflection", "interaction-A", "interaction-B", "sft-data",
          "eval-system-prompt", "eval-prefill-history")
ANSWER = "That sounds good to me."  # finished, so every interaction runs all its turns
QWEN_DEFAULT = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

# As Gemma-2's and Mistral's first templates do: no system role at all.
NO_SYSTEM = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
             "{% endif %}{{ '<' + m['role'] + '>' + m['content'] + '</s>' }}{% endfor %}"
             "{% if add_generation_prompt %}{{ '<assistant>' }}{% endif %}")
# A template no reshaping satisfies: it takes user turns only.
USER_ONLY = ("{% for m in messages %}{% if m['role'] != 'user' %}{{ raise_exception('Only user turns are "
             "supported') }}{% endif %}{{ m['content'] + '\n' }}{% endfor %}")


class RenderingEngine(Engine):
    """Renders each request with `render_prompt` (what the hf and vllm backends send the model) and answers."""

    def __init__(self, tokenizer, model: str):
        self.tokenizer, self.model = tokenizer, model
        self.config = EngineConfig(model=model)
        self.rendered: list[dict] = []

    def generate(self, requests, sampling, progress=None):
        stage = stage_of(progress)
        for r in requests:
            ids = render_prompt(self.tokenizer, r, model=self.model, stage=stage)
            self.rendered.append({"stage": stage, "messages": r.messages, "prefill": r.prefill,
                                  "text": self.tokenizer.decode(ids), "generation": True})
        return [Completion([ANSWER] * sampling.n, ["stop"] * sampling.n) for _ in requests]


def family_model(root: Path, smollm2_path: str, family: str, template: str | None = None) -> str:
    """A model folder with SmolLM2's tokenizer and config and the family's chat template."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_path)
    if template is not None or family != "smollm2":
        tok.chat_template = template if template is not None else (TEMPLATES / f"{family}.jinja").read_text()
    path = root / family
    tok.save_pretrained(path)
    shutil.copy(Path(smollm2_path) / "config.json", path / "config.json")
    return str(path)


def tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def run_stages(model: str, out: Path, constitution: str) -> list[dict]:
    """Every message-building stage on `model`'s template; the rendered requests, labelled by stage."""
    tok = tokenizer(model)
    engine = RenderingEngine(tok, model)
    common = dict(model=model, n=1, shard_size=8)
    answer = dict(common, constitution=constitution, general_prompts="none")
    run_teacher(load(TeacherConfig, dict(answer, out=str(out / "teacher"), think_prefill=True)), engine)
    run_student(load(StudentConfig, dict(answer, out=str(out / "student"))), engine)
    run_prompts(load(PromptsConfig, dict(common, constitution=constitution, out=str(out / "prompts"), target=4,
                                         rounds=1, requests_per_trait=1, per_request=2, few_shot=1)), engine)
    refl = run_reflection(load(ReflectionConfig, dict(common, out=str(out / "reflection"))), engine)
    inter = run_interaction(load(InteractionConfig, dict(common, out=str(out / "interaction"), conversations=2,
                                                         turns=4)), engine)
    for r in engine.rendered:
        if r["stage"] == "interaction":  # whose view: A opened, so A's view starts on an assistant turn
            first = next(m["role"] for m in r["messages"] if m["role"] != "system")
            r["stage"] = "interaction-A" if first == "assistant" else "interaction-B"

    history = [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Teal, I would say."}]
    prompted = System("prompted", model, system_prompt="You are Wren, who answers in riddles.")
    engine.generate([prompted.request("What is rain?")], Sampling(), progress="robustness")
    for system in (prompted, System("base", model)):
        engine.generate([system.request("Keep going.", history)], Sampling(), progress="prefill")
    for r in engine.rendered:
        if r["stage"] in ("robustness", "prefill"):
            r["stage"] = "eval-prefill-history" if len(r["messages"]) > 2 else "eval-system-prompt"

    sft = run_sft_data(load(SFTDataConfig, dict(reflection=str(refl), interaction=str(inter), out=str(out / "sft"))))
    for row in StageDir(sft, "sft-data").rows():
        messages = row["messages"]  # rendered as training renders them: the template, raw
        engine.rendered.append({"stage": "sft-data", "messages": messages, "prefill": None, "generation": False,
                                "text": tok.apply_chat_template(messages, tokenize=False)})
    return engine.rendered


@pytest.fixture(scope="module")
def families(smollm2_path, tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("families")
    return {f: family_model(root, smollm2_path, f) for f in FAMILIES}


class RenderedByFamily(dict):
    """The stages' rendered requests per family, run on first use (a family that fails fails only its tests)."""

    def __init__(self, families: dict[str, str], root: Path, constitution: str):
        super().__init__()
        self.families, self.root, self.constitution = families, root, constitution

    def __missing__(self, family: str) -> list[dict]:
        self[family] = run_stages(self.families[family], self.root / family, self.constitution)
        return self[family]


@pytest.fixture(scope="module")
def rendered(families, mini_constitution, tmp_path_factory) -> RenderedByFamily:
    return RenderedByFamily(families, tmp_path_factory.mktemp("stages"), mini_constitution)


def _system(messages: list[dict]) -> str | None:
    return messages[0]["content"] if messages and messages[0]["role"] == "system" else None


def _check_smollm2(r: dict):
    if _system(r["messages"]) is None:
        assert "named SmolLM" in r["text"]
    if r["generation"]:
        assert r["text"].endswith("<|im_start|>assistant\n" + (r["prefill"] or ""))


def _check_gemma(r: dict):
    assert "<start_of_turn>system" not in r["text"]
    turns = re.findall(r"<start_of_turn>(\w+)\n", r["text"])
    assert turns == ["user", "model"] * (len(turns) // 2) + ["user"] * (len(turns) % 2), turns
    system = _system(r["messages"])
    if system is not None:  # folded into the first user turn
        assert r["text"].startswith(f"{r['text'].split('<start_of_turn>')[0]}<start_of_turn>user\n{system}\n\n")
    if r["generation"]:
        assert r["text"].endswith("<start_of_turn>model\n" + (r["prefill"] or ""))


def _check_llama(r: dict):
    system = _system(r["messages"]) or ""
    assert ("<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
            f"Today Date: 26 Jul 2024\n\n{system.strip()}<|eot_id|>") in r["text"]
    if r["generation"]:
        assert r["text"].endswith("<|start_header_id|>assistant<|end_header_id|>\n\n" + (r["prefill"] or ""))


def _check_qwen(r: dict):
    assert (QWEN_DEFAULT in r["text"]) == (_system(r["messages"]) is None)
    if r["generation"]:
        assert r["text"].endswith("<|im_start|>assistant\n" + (r["prefill"] or ""))


FAMILY_CHECKS = {"smollm2": _check_smollm2, "gemma-3": _check_gemma, "llama-3.1": _check_llama,
                 "qwen2.5": _check_qwen}


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("family", FAMILIES)
def test_every_stage_renders_in_every_family(rendered, family, stage):
    records = [r for r in rendered[family] if r["stage"] == stage]
    assert records, f"no {stage} requests were rendered"
    for r in records:
        for m in r["messages"]:
            assert m["content"].strip() in r["text"], (m, r["text"])
        if r["prefill"]:
            assert r["text"].endswith(r["prefill"])
        FAMILY_CHECKS[family](r)


@pytest.mark.parametrize("family", ("smollm2", "llama-3.1", "qwen2.5"))
def test_templates_that_accept_the_messages_get_them_unchanged(rendered, families, family):
    tok = tokenizer(families[family])
    for r in rendered[family]:
        assert fit_messages(tok, r["messages"], add_generation_prompt=r["generation"]) == r["messages"]


def test_gemma_refuses_speaker_a_as_the_stage_builds_it(rendered, families):
    """The old path (the template applied to the stage's messages as they are) dies on speaker A's view."""
    tok = tokenizer(families["gemma-3"])
    views = [r["messages"] for r in rendered["smollm2"] if r["stage"] == "interaction-A"]
    assert views
    for messages in views:
        assert [m["role"] for m in messages[:2]] == ["system", "assistant"]
        with pytest.raises(TemplateError, match="Conversation roles must alternate"):
            tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        fitted = fit_messages(tok, messages)
        # Gemma-3 folds a system message itself: only the opening user turn is added
        assert fitted == [messages[0], {"role": "user", "content": OPENING_USER_TURN}] + messages[1:]


def test_a_template_without_a_system_role_gets_it_folded_into_the_first_user_turn(smollm2_path, tmp_path):
    tok = tokenizer(family_model(tmp_path, smollm2_path, "no-system", NO_SYSTEM))
    a_view = [{"role": "system", "content": "Be brief."}, {"role": "assistant", "content": "Hi there."},
              {"role": "user", "content": "Hello back."}, {"role": "user", "content": "Still there?"}]
    assert fit_messages(tok, a_view) == [
        {"role": "user", "content": f"Be brief.\n\n{OPENING_USER_TURN}"}, {"role": "assistant", "content": "Hi there."},
        {"role": "user", "content": "Hello back.\n\nStill there?"}]
    ids = render_prompt(tok, Request(a_view, prefill="Yes"))
    assert tok.decode(ids).endswith("Hello back.\n\nStill there?</s><assistant>Yes")


def test_sft_data_saves_what_a_template_without_system_role_takes(smollm2_path, mini_constitution, tmp_path):
    model = family_model(tmp_path, smollm2_path, "no-system", NO_SYSTEM)
    records = [r for r in run_stages(model, tmp_path / "run", mini_constitution) if r["stage"] == "sft-data"]
    assert records
    for r in records:
        assert r["messages"][0]["role"] == "user" and r["messages"][0]["content"].startswith("You are ")


def test_a_template_that_refuses_every_shape_is_one_line_naming_stage_and_model(smollm2_path, mini_constitution,
                                                                                  tmp_path):
    model = family_model(tmp_path, smollm2_path, "user-only", USER_ONLY)
    engine = RenderingEngine(tokenizer(model), model)
    with pytest.raises(CharacterError) as e:
        run_interaction(load(InteractionConfig, dict(model=model, n=1, out=str(tmp_path / "i"), conversations=2,
                                                     turns=2)), engine)
    msg = str(e.value)
    assert "\n" not in msg and "stage interaction" in msg and f"model '{model}'" in msg
    assert "Only user turns are supported" in msg


def test_a_tokenizer_without_a_template_is_one_line(smollm2_path):
    tok = tokenizer(smollm2_path)
    tok.chat_template = None
    with pytest.raises(CharacterError, match="has no chat template"):
        render_prompt(tok, Request([{"role": "user", "content": "Hi"}]), model="bare", stage="student")


def test_hf_engine_renders_through_the_fitting(tiny_llama_path):
    """The transformers backend: speaker A's view generates and scores under Gemma-3's template; a template that
    refuses it stops the call with the stage (from the progress label) and the model named."""
    from character.engine.hf import HFEngine

    a_view = Request([{"role": "system", "content": "Be brief."}, {"role": "assistant", "content": "Hello!"},
                      {"role": "user", "content": "Hi, how are you?"}])
    with HFEngine(EngineConfig(model=tiny_llama_path, backend="hf")) as engine:
        engine.tokenizer.chat_template = (TEMPLATES / "gemma-3.jinja").read_text()
        out = engine.generate([a_view], Sampling(temperature=0.0, max_tokens=3), progress="interaction 0+1 turn 2")
        assert len(out) == 1 and len(out[0].texts) == 1
        assert len(engine.score([a_view], [["Fine."]])[0]) == 1
        engine.tokenizer.chat_template = USER_ONLY
        with pytest.raises(CharacterError, match=f"model '{re.escape(tiny_llama_path)}'.*stage interaction"):
            engine.generate([a_view], Sampling(max_tokens=3), progress="interaction 0+1 turn 2")
