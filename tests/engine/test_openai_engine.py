"""The openai backend: against a real `vllm serve` started here on 127.0.0.1 (one server for the module), and
against a small local HTTP server that fails on purpose (retries, backoff, errors, the key kept secret).
test_openai_hosted.py has the hosted-API side (a server that refuses vLLM's extra fields)."""

import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from character.engine import EngineConfig, Request, Sampling, make_engine
from character.errors import CharacterError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ask(text, **kw):
    return Request([{"role": "user", "content": text}], **kw)


@pytest.fixture(scope="module")
def served(tiny_llama_path, tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", tiny_llama_path,
           "--host", "127.0.0.1", "--port", str(port), "--served-model-name", "tiny", "--dtype", "float32",
           "--max-model-len", "1024", "--kv-cache-memory-bytes", str(2**30), "--enforce-eager"]
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    import httpx

    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"vllm serve exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(1)
    else:
        proc.kill()
        pytest.fail("vllm serve did not become ready in 300 s")
    yield f"http://127.0.0.1:{port}/v1"
    os.killpg(proc.pid, 15)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)


@pytest.mark.slow
@pytest.mark.vllm
def test_against_vllm_serve(served, tiny_llama_path):
    cfg = EngineConfig(backend="openai", model="tiny", base_url=served, concurrency=4)
    reqs = [ask("hi there"), ask("What is two plus two?", prefill="Sure,"), ask("Why?")]
    with make_engine(cfg) as e:
        greedy = e.generate(reqs, Sampling(max_tokens=6, temperature=0), progress="openai")
        sampled = e.generate(reqs, Sampling(max_tokens=6, temperature=1.0, n=2, seed=5))
        again = e.generate(reqs, Sampling(max_tokens=6, temperature=1.0, n=2, seed=5))
        with pytest.raises(CharacterError, match="not supported"):
            e.score(reqs, [["a"]] * 3)
    with make_engine(EngineConfig(backend="hf", model=tiny_llama_path, dtype="float32")) as h:
        expected = h.generate(reqs, Sampling(max_tokens=6, temperature=0))
    assert [c.texts for c in greedy] == [c.texts for c in expected]  # prefill included
    assert all(c.finish_reasons == ["length"] for c in greedy)
    assert all(len(c.texts) == 2 for c in sampled) and [c.texts for c in sampled] == [c.texts for c in again]
    bad = EngineConfig(backend="openai", model="no-such-model", base_url=served, max_retries=0)
    with make_engine(bad) as e, pytest.raises(CharacterError, match="404|400"):
        e.generate([ask("hi")], Sampling(max_tokens=2))


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_serve_is_detected_and_standard_mode_works_on_it(served, mini_constitution, tmp_path, capsys):
    """auto finds vLLM (prefill sent and continued); told `none`, the same server gets standard fields only."""
    from character.config import load
    from character.stages import run_prompts
    from character.stages.prompts import PromptsConfig

    plain = EngineConfig(backend="openai", model="tiny", base_url=served, openai_extensions="none")
    with make_engine(EngineConfig(backend="openai", model="tiny", base_url=served)) as auto, make_engine(plain) as e:
        assert auto.supports_prefill and not e.supports_prefill
        assert "lists its models as vLLM's" in capsys.readouterr().err
        out = e.generate([ask("hi there")], Sampling(max_tokens=4, temperature=0))
        assert len(out[0].texts) == 1 and out[0].finish_reasons == ["length"]
        with pytest.raises(CharacterError, match="cannot continue an assistant prefill"):
            e.generate([ask("hi", prefill="Sure,")], Sampling(max_tokens=4))
    counts = {}
    for mode in ("auto", "none"):
        p = run_prompts(load(PromptsConfig, dict(backend="openai", model="tiny", base_url=served, max_tokens=16,
                                                 openai_extensions=mode, constitution=mini_constitution,
                                                 out=str(tmp_path / mode), target=4, rounds=1, requests_per_trait=1)))
        counts[mode] = json.loads((p / "manifest.json").read_text())["counts"]
    # a random model writes no lists: the stage reports a shortfall either way, with or without the prefill
    assert counts["auto"]["plain_chat_rounds"] == 0 and counts["none"]["plain_chat_rounds"] == 1
    assert all(c["rounds"] == 1 and c["prompts"] >= 5 for c in counts.values())


class Flaky(BaseHTTPRequestHandler):
    """Fails the first `fail` requests with `status`, then answers like a chat completions endpoint."""

    hits: list = []
    fail = 2
    status = 429

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).hits.append({"auth": self.headers.get("Authorization"), "body": body})
        if len(type(self).hits) <= type(self).fail:
            self.send_response(type(self).status)
            self.send_header("Retry-After", "0")
            self.end_headers()
            self.wfile.write(b'{"error": {"message": "slow down"}}')
            return
        choices = [{"index": i, "message": {"role": "assistant", "content": f"ok {i}"}, "finish_reason": "stop"}
                   for i in range(body.get("n", 1))]
        data = json.dumps({"choices": choices}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def flaky():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    Flaky.hits = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield Flaky, f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_retries_backoff_and_secret_key(flaky, monkeypatch, capsys):
    handler, url = flaky
    monkeypatch.setenv("MY_TEST_KEY", "sk-very-secret")
    cfg = EngineConfig(backend="openai", model="m", base_url=url, api_key_env="MY_TEST_KEY", max_retries=3,
                       concurrency=1, openai_extensions="vllm")  # told: top_k is sent
    with make_engine(cfg) as e:
        out = e.generate([ask("hi")], Sampling(max_tokens=4, n=2, top_k=5))
        assert "sk-very-secret" not in repr(e)
    assert out[0].texts == ["ok 0", "ok 1"] and out[0].finish_reasons == ["stop", "stop"]
    assert len(handler.hits) == 3  # two 429s, then success
    assert handler.hits[-1]["auth"] == "Bearer sk-very-secret"
    sent = handler.hits[-1]["body"]
    assert sent["top_k"] == 5 and "min_p" not in sent and "repetition_penalty" not in sent
    assert "sk-very-secret" not in capsys.readouterr().err


def test_gives_up_with_one_line(flaky, monkeypatch):
    handler, url = flaky
    handler.fail, handler.status = 10, 503
    monkeypatch.setenv("MY_TEST_KEY", "sk-very-secret")
    cfg = EngineConfig(backend="openai", model="m", base_url=url, api_key_env="MY_TEST_KEY", max_retries=2)
    try:
        with make_engine(cfg) as e, pytest.raises(CharacterError, match="failed after 3 tries") as err:
            e.generate([ask("hi")], Sampling(max_tokens=4))
        assert "sk-very-secret" not in str(err.value) and len(handler.hits) == 3
        handler.hits.clear()
        handler.status = 401  # not retried
        with make_engine(cfg) as e, pytest.raises(CharacterError, match="401"):
            e.generate([ask("hi")], Sampling(max_tokens=4))
        assert len(handler.hits) == 1
    finally:
        handler.fail, handler.status = 2, 429
