"""The openai backend against a hosted-style API: a local HTTP server that, like hosted OpenAI-compatible APIs,
answers 400 to any request field it does not know (vLLM's `continue_final_message`, `top_k`, ...) and lists its
models as someone other than vLLM. The prompts and teacher stages run against it; nothing vLLM-only is sent.

    .venv/bin/python -m pytest tests/engine/test_openai_hosted.py
"""

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from character.config import load
from character.engine import EngineConfig, Request, Sampling, make_engine
from character.errors import CharacterError
from character.stages import run_prompts, run_teacher
from character.stages.distill import TeacherConfig
from character.stages.prompts import PromptsConfig

# the request fields of OpenAI's chat completions API (anything else is refused, as api.openai.com does)
STANDARD = {"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "n", "seed", "stop",
            "logprobs", "top_logprobs", "frequency_penalty", "presence_penalty", "logit_bias", "user", "stream",
            "stream_options", "response_format", "tools", "tool_choice", "parallel_tool_calls", "store",
            "metadata", "modalities", "reasoning_effort", "service_tier", "prediction", "audio"}
VLLM_ONLY = {"continue_final_message", "add_generation_prompt", "top_k", "min_p", "repetition_penalty"}

# distinct user messages (no two near-duplicates), served as the "new" messages of the prompts stage
POOL = [
    "My landlord wants to raise the rent by a third; how should I answer him?",
    "Can you explain how vaccines train the immune system?",
    "I burned the rice again. What am I doing wrong?",
    "Write me a limerick about a sleepy octopus.",
    "Which is better for a beginner, Python or JavaScript?",
    "How long should I let bread dough rise in a cold kitchen?",
    "Summarize the causes of the French Revolution for a ten-year-old.",
    "Is it rude to leave a group chat without saying anything?",
    "What should I pack for three days of hiking in Norway in June?",
    "Help me name my new sourdough starter.",
    "Why do cats knock things off tables?",
    "Give me a plan to learn chess openings in a month.",
]


class StrictAPI(BaseHTTPRequestHandler):
    """An OpenAI-style endpoint: refuses unknown fields with an OpenAI-style 400, records what it was sent, and
    answers with canned replies that depend on the request (lists for list requests, echoes for the rest)."""

    requests: list = []
    models_owner = "openai"
    refuse_max_tokens = False

    def _reply(self, status: int, data: dict) -> None:
        raw = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _error(self, message: str, param: str | None = None) -> None:
        self._reply(400, {"error": {"message": message, "type": "invalid_request_error", "param": param,
                                    "code": None}})

    def do_GET(self):
        type(self).requests.append({"method": "GET", "path": self.path, "auth": self.headers.get("Authorization")})
        if self.path != "/v1/models":
            return self._reply(404, {"error": {"message": f"Unknown path {self.path}"}})
        self._reply(200, {"object": "list", "data": [{"id": "hosted-teacher", "object": "model", "created": 0,
                                                      "owned_by": type(self).models_owner}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"method": "POST", "path": self.path, "auth": self.headers.get("Authorization"),
                                    "body": body})
        if self.path != "/v1/chat/completions":
            return self._reply(404, {"error": {"message": f"Unknown path {self.path}"}})
        unknown = [k for k in body if k not in STANDARD]
        if unknown:
            return self._error(f"Unrecognized request argument supplied: {unknown[0]}", unknown[0])
        if type(self).refuse_max_tokens and "max_tokens" in body:
            return self._error("Unsupported parameter: 'max_tokens' is not supported with this model. Use "
                               "'max_completion_tokens' instead.", "max_tokens")
        last = body["messages"][-1]["content"]
        key = int(hashlib.sha256(json.dumps([body["messages"], body.get("seed")]).encode()).hexdigest(), 16)
        choices = []
        for i in range(body.get("n", 1)):
            if "Reply with a numbered list of" in last:  # what the prompts stage asks
                picks = [POOL[(key + i + j) % len(POOL)] for j in range(4)]
                # a preamble, numbering and bullets of several kinds, an empty line, a repeat
                text = (f"Sure! Here are some new messages:\n\n1. {picks[0]}\n2) **{picks[1]}**\n\n- {picks[2]}\n"
                        f"4. \"{picks[3]}\"\n5. {picks[0]}\n\nLet me know if you want more.")
            else:
                text = f"Reply {i} to: {last}"
            choices.append({"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"})
        self._reply(200, {"id": "chatcmpl-1", "object": "chat.completion", "model": body["model"],
                          "choices": choices})

    def log_message(self, *args):
        pass


@pytest.fixture
def hosted():
    StrictAPI.requests, StrictAPI.models_owner, StrictAPI.refuse_max_tokens = [], "openai", False
    server = ThreadingHTTPServer(("127.0.0.1", 0), StrictAPI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield StrictAPI, f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def posts(handler) -> list[dict]:
    return [r["body"] for r in handler.requests if r["method"] == "POST"]


def assert_standard_only(handler):
    bodies = posts(handler)
    assert bodies, "no chat request reached the server"
    for body in bodies:
        assert set(body) <= STANDARD and not set(body) & VLLM_ONLY, sorted(body)
        assert body["messages"][-1]["role"] == "user"  # no assistant prefill either


def test_prompts_and_teacher_stages_on_a_strict_api(hosted, tmp_path, mini_constitution, monkeypatch, capsys):
    handler, url = hosted
    monkeypatch.setenv("HOSTED_TEST_KEY", "sk-hosted-secret")
    eng = dict(backend="openai", model="hosted-teacher", base_url=url, api_key_env="HOSTED_TEST_KEY",
               concurrency=2, max_retries=0, max_tokens=64)
    p = run_prompts(load(PromptsConfig, dict(eng, constitution=mini_constitution, out=str(tmp_path / "p"),
                                             target=8, rounds=6, requests_per_trait=1, per_request=4)))
    m = json.loads((p / "manifest.json").read_text())
    assert m["status"] == "complete" and m["counts"]["shortfall"] == 0 and m["counts"]["prompts"] == 16
    assert m["counts"]["plain_chat_rounds"] == m["counts"]["rounds"] >= 2 and m["counts"]["unparsable_replies"] == 0
    assert m["counts"]["near_duplicates"] >= 1
    written = [json.loads(line) for f in sorted(p.glob("shard-*.jsonl")) for line in f.read_text().splitlines()]
    new = [r["prompt"] for r in written if r["source"] != "seed"]
    assert new and set(new) <= set(POOL)  # numbering, bullets, bold and quotes stripped; the preamble left out
    for ti in (0, 1):
        mine = [r["prompt"] for r in written if r["trait_index"] == ti]
        assert len(mine) == len(set(mine)) == 8  # the repeated line was dropped
    assert_standard_only(handler)
    assert sum(r["method"] == "GET" for r in handler.requests) == 1  # the endpoint is probed once per engine
    assert {r["auth"] for r in handler.requests} == {"Bearer sk-hosted-secret"}

    handler.requests.clear()
    t = run_teacher(load(TeacherConfig, dict(eng, constitution=mini_constitution, prompts=str(p),
                                             general_prompts="none", n=2, out=str(tmp_path / "t"))))
    tm = json.loads((t / "manifest.json").read_text())
    n = 2 * len({r["prompt"] for r in written})  # two traits may share a message: answered once
    assert tm["status"] == "complete" and tm["counts"]["samples"] == n and tm["counts"].get("ok") == n
    answers = [json.loads(line) for f in sorted(t.glob("shard-*.jsonl")) for line in f.read_text().splitlines()]
    assert all(a["completion"][0]["content"] == f"Reply {a['sample']} to: {a['prompt'][0]['content']}"
               for a in answers)
    assert_standard_only(handler)
    assert all(b["messages"][0]["role"] == "system" and "Aria" in b["messages"][0]["content"]
               for b in posts(handler))

    leaked = capsys.readouterr()
    on_disk = "".join(f.read_text() for d in (p, t) for f in d.iterdir() if f.is_file())
    assert "sk-hosted-secret" not in leaked.out + leaked.err + on_disk
    assert "standard chat fields only" in leaked.err and "plain chat" in leaked.err


def test_what_a_strict_api_cannot_do_is_one_line_before_any_request(hosted, tmp_path, mini_constitution, cli):
    handler, url = hosted
    # the teacher's <think> prefill has no fallback: exit 2, one line, and no chat request sent
    r = cli("generate", "teacher", "--constitution", mini_constitution, "--out", tmp_path / "t", "--backend",
            "openai", "--model", "hosted-teacher", "--base_url", url, "--general_prompts", "none",
            "--think_prefill", "true", "--max_retries", "0")
    assert r.returncode == 2, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "prefill" in errors[0] and "--think_prefill" in errors[0], r.stderr
    assert "Traceback" not in r.stderr and not posts(handler)
    handler.requests.clear()

    cfg = EngineConfig(backend="openai", model="hosted-teacher", base_url=url, max_retries=0, openai_extensions="none")
    with make_engine(cfg) as e:
        with pytest.raises(CharacterError, match="top_k, repetition_penalty"):
            e.generate([Request([{"role": "user", "content": "hi"}])], Sampling(top_k=5, repetition_penalty=1.1))
        with pytest.raises(CharacterError, match="not supported"):
            e.score([Request([{"role": "user", "content": "hi"}])], [["a"]])
        assert e.generate([Request([{"role": "user", "content": "hi"}])], Sampling())[0].texts == ["Reply 0 to: hi"]
    assert not [r for r in handler.requests if r["method"] == "GET"]  # an explicit setting probes nothing
    assert_standard_only(handler)


def test_told_vllm_but_refused_says_which_setting(hosted):
    handler, url = hosted
    cfg = EngineConfig(backend="openai", model="hosted-teacher", base_url=url, max_retries=0, openai_extensions="vllm")
    with make_engine(cfg) as e, pytest.raises(CharacterError, match="400.*(continue_final_message|add_generation_prompt).*"
                                              "--openai_extensions none"):
        e.generate([Request([{"role": "user", "content": "hi"}], prefill="Sure,")], Sampling())


def test_auto_detects_a_vllm_model_list(hosted):
    handler, url = hosted
    handler.models_owner = "vllm"  # what `vllm serve` answers on GET /v1/models
    with make_engine(EngineConfig(backend="openai", model="m", base_url=url, max_retries=0)) as e:
        assert e.supports_prefill and e.supports_prefill
    assert [r["path"] for r in handler.requests] == ["/v1/models"]


def test_switches_to_max_completion_tokens_when_asked(hosted):
    handler, url = hosted
    handler.refuse_max_tokens = True  # newer OpenAI models take only max_completion_tokens
    cfg = EngineConfig(backend="openai", model="m", base_url=url, max_retries=0, concurrency=1)
    reqs = [Request([{"role": "user", "content": q}]) for q in ("a", "b")]
    with make_engine(cfg) as e:
        out = e.generate(reqs, Sampling(max_tokens=7))
    assert [c.texts for c in out] == [["Reply 0 to: a"], ["Reply 0 to: b"]]
    sent = posts(handler)
    assert "max_tokens" in sent[0] and [b.get("max_completion_tokens") for b in sent[1:]] == [7, 7]
