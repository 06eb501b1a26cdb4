"""The OpenAI-compatible oracle client against a real `vllm serve` started here on the tiny model, and against
endpoints that are down or answer nonsense."""

import http.server
import os
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests

from codealign.actors.remote_oracle import OracleBadResponse, OracleUnavailable, RemoteOracle, RemoteOracleConfig
from codealign.records import GenerationRequest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_server(tiny_model_path, tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("vllm-serve") / "server.log"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", tiny_model_path,
           "--served-model-name", "oracle", "--host", "127.0.0.1", "--port", str(port), "--max-model-len", "512",
           "--enforce-eager", "--dtype", "bfloat16"]
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"vllm serve exited: {log.read_text()[-2000:]}")
            try:
                if requests.get(base + "/health", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(1)
        else:
            pytest.fail("vllm serve did not come up in 300 s")
        yield base + "/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_generates_through_a_live_vllm_server(vllm_server):
    oracle = RemoteOracle(RemoteOracleConfig(vllm_server, "oracle", max_concurrency=4))
    reqs = [GenerationRequest("Write a function that adds two numbers.", n=2, temperature=0.8, max_tokens=16,
                              request_id=f"r{i}") for i in range(3)]
    out = oracle.generate(reqs)
    assert [o[0].request_id for o in out] == ["r0", "r1", "r2"]
    for completions in out:
        assert len(completions) == 2
        for c in completions:
            assert c.role == "oracle" and c.finish_reason in ("stop", "length") and not c.error
            assert c.text and len(c.logprobs) > 0 and all(lp <= 0 for lp in c.logprobs)


def test_a_refused_request_fails_alone(vllm_server):
    oracle = RemoteOracle(RemoteOracleConfig(vllm_server, "oracle"))
    out = oracle.generate([
        GenerationRequest("hello", max_tokens=4, temperature=-3.0, request_id="bad"),
        GenerationRequest("  ", request_id="empty"),
        GenerationRequest("hello", max_tokens=4, request_id="good"),
    ])
    bad, empty, good = (o[0] for o in out)
    assert bad.finish_reason == "error" and "HTTP 400" in bad.error
    assert empty.error == "empty prompt"
    assert good.finish_reason != "error" and good.text


def test_unreachable_endpoint_says_so():
    cfg = RemoteOracleConfig(f"http://127.0.0.1:{free_port()}/v1", "oracle", max_retries=2, backoff_s=0.01,
                             timeout_s=2)
    with pytest.raises(OracleUnavailable, match="unreachable after 3 attempts"):
        RemoteOracle(cfg).generate([GenerationRequest("hi")])


class Nonsense(http.server.BaseHTTPRequestHandler):
    bodies = {"/v1/chat/completions": b'{"unexpected": true}', "/bad/chat/completions": b"<html>oops</html>"}
    calls = 0

    def do_POST(self):  # noqa: N802 - the http.server API
        Nonsense.calls += 1
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path.startswith("/flaky") and Nonsense.calls % 2:
            self.send_response(503)
            self.end_headers()
            return
        body = self.bodies.get(self.path, b'{"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}]}')
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def nonsense_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Nonsense)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_nonsense_answers_are_named(nonsense_server):
    with pytest.raises(OracleBadResponse, match="no choices"):
        RemoteOracle(RemoteOracleConfig(nonsense_server + "/v1", "m")).generate([GenerationRequest("hi")])
    with pytest.raises(OracleBadResponse, match="not JSON"):
        RemoteOracle(RemoteOracleConfig(nonsense_server + "/bad", "m")).generate([GenerationRequest("hi")])


def test_retries_through_transient_errors(nonsense_server):
    oracle = RemoteOracle(RemoteOracleConfig(nonsense_server + "/flaky", "m", backoff_s=0.01))
    out = oracle.generate([GenerationRequest("hi", request_id=str(i)) for i in range(4)])
    assert [o[0].text for o in out] == ["ok"] * 4
