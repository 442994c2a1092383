"""edge-serve against careless or hostile clients and broken bundles (issue 12): a failed load exits
non-zero, a client that leaves frees the worker and the queue, bad input is 400, slow clients are cut."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from edge_runtime.control.observation import DeviceState
from edge_runtime.control.signals import StaticSource
from edge_runtime.runtime import Runtime
from edge_runtime.serve import app as S
from edge_runtime.serve import cli as CLI
from edge_runtime.serve.http import HeaderTimeoutH11
from tests.edge_runtime.conftest import LiveServer, free_port


def envelope(r: httpx.Response, code: int, match: str = "") -> dict:
    assert r.status_code == code, r.text
    err = r.json()["error"]
    assert err["code"] == code and match in err["message"], err["message"]
    return err


def wait_until(condition, within_s: float = 20.0) -> bool:
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def counter(rt: Runtime, variant: str, finish: str) -> float:
    return rt.metrics.requests.labels(variant, finish)._value.get()


# ------------------------------------------------------------------ 1: a bundle that fails to open


def _break(bundle, how: str) -> None:
    raw = json.loads((bundle / "manifest.json").read_text())
    if how == "every variant broken":
        for v in raw["variants"]:
            (bundle / v["onnx"]).write_bytes(b"\x08garbage")
    elif how == "vocabulary mismatch":
        raw["model"]["vocab_size"] += 7
    elif how == "corrupt tokenizer":
        (bundle / "tokenizer.json").write_text("{not a tokenizer")
    elif how == "chat template":
        raw["model"]["chat_template"] = "{% for %}"
    (bundle / "manifest.json").write_text(json.dumps(raw))


@pytest.mark.parametrize("how, message", [
    ("every variant broken", "no variant of"),
    ("vocabulary mismatch", "is not the manifest's"),
    ("corrupt tokenizer", "cannot read the tokenizer"),
    ("chat template", "chat template does not compile"),
])
def test_a_bundle_that_fails_to_open_exits_2_and_says_why(bundle_copy, capsys, how, message):
    _break(bundle_copy, how)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = CLI.main(["--bundle", str(bundle_copy), "--port", str(free_port()), "--threads", "1",
                         "--signals", "static", "--log-level", "error"])
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    err = capsys.readouterr().err
    assert code == 2 and "edge-serve: error: the bundle could not be opened" in err and message in err, err


def test_context_length_zero_is_refused_before_binding(bundle_copy, capsys):
    raw = json.loads((bundle_copy / "manifest.json").read_text())
    raw["model"]["context_length"] = 0
    (bundle_copy / "manifest.json").write_text(json.dumps(raw))
    assert CLI.main(["--bundle", str(bundle_copy)]) == 2
    assert "'context_length' must be a positive integer, got 0" in capsys.readouterr().err


def test_failure_bodies_show_no_absolute_paths(bundle_copy):
    _break(bundle_copy, "corrupt tokenizer")
    with TestClient(S.create_app(S.ServerConfig(bundle=str(bundle_copy)))) as c:
        deadline = time.monotonic() + 20
        while c.get("/health").json()["status"] == "loading":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        health, models = c.get("/health"), c.get("/v1/models")
    assert health.status_code == 503 and "cannot read the tokenizer 'bundle/tokenizer.json'" in health.json()["detail"]
    for text in (health.text, models.text):
        assert str(bundle_copy.parent) not in text
    envelope(models, 503, "the model is error")


def test_variant_failures_show_no_absolute_paths(bundle_copy, make_policy):
    (bundle_copy / "variants/dense-int8/model.onnx").write_bytes(b"\x08garbage")
    with Runtime.open(bundle_copy, policy=make_policy(), threads=1) as rt:
        with TestClient(S.create_app(S.ServerConfig(bundle=str(bundle_copy)), runtime=rt)) as c:
            r = c.post("/v1/completions", json={"prompt": "hi", "max_tokens": 2, "model": "dense-int8"})
            again = c.post("/v1/completions", json={"prompt": "hi", "max_tokens": 2, "model": "dense-int8"})
    envelope(r, 503, "cannot load 'bundle/variants/dense-int8/model.onnx'")
    envelope(again, 400, "fenced after a failure")
    assert str(bundle_copy.parent) not in r.text + again.text


# ------------------------------------------------------------------ 2: clients that leave


def test_clients_that_leave_are_cancelled_queued_or_running(tiny_bundle, make_policy):
    policy = make_policy()
    policy.gate.clear()  # the worker holds the first request in the controller; the others queue
    rt = Runtime.open(tiny_bundle, policy=policy, signals=StaticSource(DeviceState()), threads=1, max_queue=2)
    server = LiveServer(S.create_app(S.ServerConfig(bundle=str(tiny_bundle)), runtime=rt))
    body = {"prompt": "x", "max_tokens": 200, "ignore_eos": True}

    def leave(stream: bool) -> None:  # the client gives up after 0.6 s and closes its connection
        with pytest.raises(httpx.ReadTimeout):
            with httpx.stream("POST", server.url + "/v1/completions", json={**body, "stream": stream},
                              timeout=0.6) as r:
                r.read()

    try:
        running = threading.Thread(target=leave, args=(False,))
        running.start()
        assert wait_until(lambda: rt._running is not None)
        queued = [threading.Thread(target=leave, args=(s,)) for s in (False, True)]
        for t in queued:
            t.start()
        assert wait_until(lambda: rt.queue.depth == 2)
        for t in (running, *queued):
            t.join(10)
        assert wait_until(lambda: rt.queue.depth == 0, 2.0)  # left the queue at once, not when served
        assert counter(rt, "none", "cancelled") == 2
        policy.gate.set()
        r = httpx.post(server.url + "/v1/completions", json={**body, "max_tokens": 3}, timeout=30)
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3
        assert counter(rt, "dense", "cancelled") == 1  # the running one stopped instead of making 200 tokens
        assert counter(rt, "dense", "length") == 1
    finally:
        policy.gate.set()
        server.stop()
        rt.close(grace_s=5)


# ------------------------------------------------------------------ 4, 9, 11: requests


@pytest.fixture
def keyed(tiny_bundle, runtime):
    app = S.create_app(S.ServerConfig(bundle=str(tiny_bundle), api_key="k", max_body_bytes=2000), runtime=runtime)
    with TestClient(app, headers={"Authorization": "Bearer k"}) as c:
        yield c


@pytest.mark.parametrize("raw, match", [
    ('{"prompt": "hi", "seed": -1}', "seed: Input should be greater than or equal to 0"),
    ('{"prompt": "a\\ud800b"}', "prompt holds an unpaired surrogate"),
    ('{"messages": [{"role": "user", "content": "\\udfff"}]}', r"messages[0].content holds an unpaired surrogate"),
    ('{"messages": [{"role": "user", "content": [{"type": "text", "text": "\\ud83d"}]}]}',
     "messages[0].content holds an unpaired surrogate"),
    ('{"prompt": "hi", "tools": [{"type": "function", "function": {"name": "f"}}]}',
     "tools: tool calling (on /v1/chat/completions only) is not supported by this server"),
    ('{"prompt": "hi", "response_format": {"type": "json_object"}}',
     "response_format: structured output (on /v1/chat/completions only) is not supported"),
    ('{"messages": [{"role": "user", "content": "hi"}], "logit_bias": {"7": 5}}',
     "logit_bias: logit bias is not supported by this server"),
])
def test_bad_input_is_400_naming_the_field(keyed, raw, match):
    route = "/v1/chat/completions" if "messages" in raw else "/v1/completions"
    envelope(keyed.post(route, content=raw, headers={"Content-Type": "application/json"}), 400, match)


def test_unsupported_list_allows_empty_values(keyed):
    r = keyed.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
                                                 "tools": [], "response_format": None})
    assert r.status_code == 200, r.text


def test_key_before_body_413_counted_head_health(keyed, tiny_bundle):
    envelope(keyed.post("/v1/completions", content=b"{not json", headers={"Authorization": ""}), 401,
             "missing or wrong API key")
    envelope(keyed.post("/v1/completions", json={"prompt": 3}, headers={"Authorization": "Bearer no"}), 401)
    envelope(keyed.post("/v1/completions", content=b"{not json", headers={"Content-Type": "application/json"}), 400,
             "not valid JSON")
    envelope(keyed.post("/v1/completions", json={"prompt": "x" * 5000}), 413, "larger than 2000 bytes")
    assert 'edge_http_requests_total{route="/v1/completions",status="413"} 1.0' in keyed.get("/metrics").text
    head = keyed.head("/health")
    assert head.status_code == 200 and head.content == b""
    loading = S.create_app(S.ServerConfig(bundle=str(tiny_bundle)))
    loading.state.edge.status = "loading"
    assert TestClient(loading).head("/health").status_code == 503  # no lifespan: never opens


# ------------------------------------------------------------------ 10: slow clients


def health_becomes(url: str, status: int, within_s: float = 5.0) -> bool:
    """True once GET /health answers `status` (the server sees connections open and close a little late)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if httpx.get(url + "/health", timeout=5).status_code == status:
            return True
        time.sleep(0.05)
    return False


def test_slow_clients_are_cut_and_connections_capped(tiny_bundle, runtime):
    app = S.create_app(S.ServerConfig(bundle=str(tiny_bundle), timeout_s=0.5), runtime=runtime)
    server = LiveServer(app, http=HeaderTimeoutH11.with_timeout(0.5), limit_concurrency=3)
    try:
        with socket.create_connection(("127.0.0.1", server.port)) as slowloris:
            slowloris.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # the head never ends
            slowloris.settimeout(5)
            t0 = time.monotonic()
            assert slowloris.recv(100) == b"" and time.monotonic() - t0 < 3  # closed by the server
        with socket.create_connection(("127.0.0.1", server.port)) as slow_body:
            slow_body.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                              b"Content-Length: 100\r\n\r\n{\"prompt\"")
            slow_body.settimeout(5)
            answer = b""
            while chunk := slow_body.recv(1000):  # the server closes the connection after its answer
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive within 0.5 s" in answer
        idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(3)]
        try:
            assert health_becomes(server.url, 503)  # over the cap
        finally:
            for s in idle:
                s.close()
        assert health_becomes(server.url, 200)
    finally:
        server.stop()
