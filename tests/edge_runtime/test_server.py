"""edge-serve over HTTP: the OpenAI client, errors, health, metrics, admission, pinning, API key."""

from __future__ import annotations

import json
import threading
import time

import httpx
import openai
import pytest
from fastapi.testclient import TestClient

from edge_runtime.errors import BundleError
from edge_runtime.runtime import Runtime
from edge_runtime.serve import app as S


@pytest.fixture
def client(tiny_bundle, runtime):
    app = S.create_app(S.ServerConfig(bundle=str(tiny_bundle), max_body_bytes=20_000), runtime=runtime)
    with TestClient(app) as c:
        yield c


def ok_completion(client):
    r = client.post("/v1/completions", json={"prompt": "hi", "max_tokens": 2})
    assert r.status_code == 200, r.text
    return r


def assert_envelope(r, code, kind, match=""):
    assert r.status_code == code, r.text
    err = r.json()["error"]
    assert set(err) == {"code", "message", "type"} and err["code"] == code and err["type"] == kind
    assert match in err["message"], err["message"]


# ------------------------------------------------------------------ the OpenAI client, live


def oa(live) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.url + "/v1", api_key=live.key, max_retries=0, timeout=30)


def test_openai_completion_and_chat(live):
    c = oa(live)
    r = c.completions.create(model="tiny", prompt="Once upon a time", max_tokens=8, extra_body={"ignore_eos": True})
    assert r.model == "dense" and r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 8
    assert r.model_extra["edge"]["variant"] == "dense" and r.model_extra["timings"]["predicted_n"] == 8
    chat = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=6,
                                     seed=1, temperature=0.7)
    assert chat.choices[0].message.role == "assistant" and chat.usage.prompt_tokens > 0
    raw = c.chat.completions.with_raw_response.create(model="dense-int8", messages=[{"role": "user", "content": "Hi"}],
                                                      max_tokens=2)
    assert raw.headers["x-edge-variant"] == "dense-int8" and raw.headers["x-edge-reason"] == "pinned"


def test_openai_streaming(live):
    c = oa(live)
    chunks = list(c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=10,
                                            stream=True, stream_options={"include_usage": True},
                                            extra_body={"ignore_eos": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    finals = [ch for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason == "length"
    assert finals[0].model_extra["edge"]["variant"] == "dense"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 10
    blocking = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=10,
                                         extra_body={"ignore_eos": True})
    assert text == blocking.choices[0].message.content  # greedy: streamed == blocking
    pieces = list(c.completions.create(model="tiny", prompt="abc", max_tokens=5, stream=True))
    assert pieces[-1].choices[0].finish_reason in ("stop", "length") and all(p.model == "dense" for p in pieces)


def test_openai_client_errors(live):
    c = oa(live)
    with pytest.raises(openai.NotFoundError, match="model 'gpt-4' not found"):
        c.completions.create(model="gpt-4", prompt="x", max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        c.completions.create(model="tiny", prompt="x", max_tokens=0)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=live.url + "/v1", api_key="wrong", max_retries=0).models.list()
    models = c.models.list()
    ids = [m.id for m in models.data]
    assert ids[:2] == ["tiny", "auto"] and ids[2:] == ["dense", "dense-int8"]
    dense = models.data[2].model_extra["edge"]
    assert dense["sparsity"] == 0.0 and dense["gate"] == "pending" and dense["allowed"]


def test_full_queue_answers_429_and_loses_nothing(live):
    live.policy.gate.clear()  # the worker blocks in its next decision
    url, headers = live.url + "/v1/completions", {"Authorization": f"Bearer {live.key}"}
    results: list[int] = []

    def send():
        results.append(httpx.post(url, json={"prompt": "x", "max_tokens": 2}, headers=headers, timeout=30).status_code)

    threads = [threading.Thread(target=send) for _ in range(3)]  # 1 running + 2 waiting (max_queue 2)
    for t in threads:
        t.start()
        time.sleep(0.05)
    deadline = time.monotonic() + 10
    while live.runtime.queue.depth < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    r = httpx.post(url, json={"prompt": "x", "max_tokens": 2}, headers=headers, timeout=30)
    assert_envelope(r, 429, "rate_limit_error", "queue is full")
    assert int(r.headers["retry-after"]) >= 1
    live.policy.gate.set()
    for t in threads:
        t.join(30)
    assert results == [200, 200, 200]


def test_client_disconnect_cancels_the_stream(live):
    body = {"prompt": "x", "max_tokens": 250, "stream": True, "ignore_eos": True}
    with httpx.stream("POST", live.url + "/v1/completions", json=body, timeout=30,
                      headers={"Authorization": f"Bearer {live.key}"}) as r:
        assert r.status_code == 200
        next(r.iter_lines())
    deadline = time.monotonic() + 10
    while live.runtime._running is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert 'finish_reason="cancelled"' in live.runtime.metrics.export().decode()


# ------------------------------------------------------------------ errors, in-process


BAD = [
    (b"{not json", 400, "not valid JSON"),
    (json.dumps({"max_tokens": 3}), 400, "prompt: Field required"),
    (json.dumps({"prompt": 3}), 400, "prompt"),
    (json.dumps({"prompt": "x", "max_tokens": "5"}), 400, "max_tokens: Input should be a valid integer"),
    (json.dumps({"prompt": "x", "max_tokens": -4}), 400, "max_tokens: Input should be greater than or equal to 1"),
    (json.dumps({"prompt": "x", "max_tokens": 10**12}), 400, "exceed the context length (256)"),
    (json.dumps({"prompt": "x", "temperature": True}), 400, "temperature"),
    (json.dumps({"prompt": "x", "n": 3}), 400, "n: Input should be less than or equal to 1"),
    (json.dumps({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}), 400, "stop must be at most 4"),
    (json.dumps({"prompt": "x", "model": "llama-70b"}), 404, "model 'llama-70b' not found"),
    (json.dumps({"prompt": "y " * 400}), 400, "more than the limit of 255"),
    (json.dumps({"prompt": ["a", "b"]}), 400, "one prompt per request"),
    (json.dumps({"prompt": [1, -2]}), 400, "prompt token ids must be in [0, 384)"),
    (json.dumps(["a list"]), 400, "Input should be a valid dictionary"),
]


@pytest.mark.parametrize("body, code, match", BAD)
def test_bad_completions(client, body, code, match):
    r = client.post("/v1/completions", content=body, headers={"content-type": "application/json"})
    assert_envelope(r, code, "not_found_error" if code == 404 else "invalid_request_error", match)
    ok_completion(client)  # and the daemon keeps serving


@pytest.mark.parametrize("body, match", [
    ({"messages": []}, "messages: List should have at least 1 item"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
    ({"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 0}, "max_completion_tokens"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "only text parts"),
])
def test_bad_chat(client, body, match):
    assert_envelope(client.post("/v1/chat/completions", json=body), 400, "invalid_request_error", match)


def test_body_size_routes_and_methods(client):
    r = client.post("/v1/completions", content=b'{"prompt": "' + b"x" * 30_000 + b'"}',
                    headers={"content-type": "application/json"})
    assert_envelope(r, 413, "invalid_request_error", "larger than 20000 bytes")

    def chunked():
        for _ in range(40):
            yield b"x" * 1000

    assert client.post("/v1/completions", content=chunked()).status_code == 413
    assert_envelope(client.get("/v2/nothing"), 404, "not_found_error")
    assert_envelope(client.get("/v1/completions"), 405, "invalid_request_error")
    ok_completion(client)


def test_response_says_which_variant_and_why(client, runtime, policy):
    r = ok_completion(client)
    body = r.json()
    assert r.headers["x-edge-variant"] == body["model"] == body["edge"]["variant"] == "dense"
    assert r.headers["x-edge-reason"] == body["edge"]["reason"] == "scripted 0"
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    assert body["timings"]["prompt_n"] == body["usage"]["prompt_tokens"] and body["timings"]["total_ms"] > 0
    pinned = client.post("/v1/completions", json={"prompt": "hi", "max_tokens": 2, "model": "dense-int8"}).json()
    assert pinned["edge"] == {"variant": "dense-int8", "reason": "pinned", "cold_start": True, "retried_from": None}
    policy.index = 1
    assert client.post("/v1/completions", json={"prompt": "hi", "max_tokens": 2, "model": "auto"}).json()[
        "model"] == "dense-int8"


def test_deadline_in_the_past_is_408(client, runtime, policy):
    policy.gate.clear()
    t = threading.Thread(target=lambda: client.post("/v1/completions", json={"prompt": "a", "max_tokens": 1}))
    t.start()
    time.sleep(0.1)
    threading.Timer(0.2, policy.gate.set).start()
    r = client.post("/v1/completions", json={"prompt": "b", "max_tokens": 1, "deadline_s": 0.05})
    t.join(10)
    assert_envelope(r, 408, "timeout_error", "past its deadline")


def test_health_metrics_status(client):
    assert client.get("/health").json() == {"status": "ok", "detail": None}
    ok_completion(client)
    text = client.get("/metrics").text
    assert 'edge_http_requests_total{route="/v1/completions",status="200"}' in text
    assert "edge_queue_depth" in text and "edge_signal_temperature_celsius" in text
    assert all(line.startswith(("#", "edge_")) for line in text.splitlines() if line)
    s = client.get("/status").json()
    assert s["max_queue"] == 16 and [v["name"] for v in s["variants"]] == ["dense", "dense-int8"]
    spec = client.get("/openapi.json").json()
    assert "422" not in json.dumps(spec["paths"]) and "/v1/chat/completions" in spec["paths"]


def test_api_key(tiny_bundle, runtime):
    app = S.create_app(S.ServerConfig(bundle=str(tiny_bundle), api_key="k1"), runtime=runtime)
    with TestClient(app) as c:
        assert c.get("/health").status_code == 200  # open, for load balancers
        assert_envelope(c.get("/v1/models"), 401, "authentication_error", "missing or wrong API key")
        assert_envelope(c.get("/metrics", headers={"Authorization": "Bearer k2"}), 401, "authentication_error")
        assert_envelope(c.get("/v1/models", headers={"Authorization": "Basic k1"}), 401, "authentication_error")
        assert c.get("/v1/models", headers={"Authorization": "Bearer k1"}).status_code == 200


def test_health_is_503_while_loading_then_200(tiny_bundle, monkeypatch):
    release = threading.Event()
    real_open = Runtime.open

    def slow_open(*a, **kw):
        assert release.wait(30)
        return real_open(*a, **kw)

    monkeypatch.setattr(S.Runtime, "open", slow_open)
    app = S.create_app(S.ServerConfig(bundle=str(tiny_bundle), runtime=S.RuntimeConfig(threads=1)))
    with TestClient(app) as c:
        r = c.get("/health")
        assert r.status_code == 503 and r.json()["status"] == "loading" and r.headers["retry-after"]
        assert_envelope(c.post("/v1/completions", json={"prompt": "x"}), 503, "unavailable_error", "loading")
        release.set()
        deadline = time.monotonic() + 30
        while c.get("/health").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        ok_completion(c)


def test_load_failure_is_fatal(tiny_bundle, monkeypatch):
    def broken(*a, **kw):
        raise BundleError("no variant loads")

    monkeypatch.setattr(S.Runtime, "open", broken)
    app = S.create_app(S.ServerConfig(bundle=str(tiny_bundle)))
    fatal = threading.Event()
    app.state.edge.on_fatal = fatal.set
    with TestClient(app) as c:
        assert fatal.wait(10)
        assert c.get("/health").json() == {"status": "error", "detail": "no variant loads"}


# ------------------------------------------------------------------ the command line


def test_flags_and_environment(monkeypatch):
    monkeypatch.setenv("EDGE_PORT", "9000")
    monkeypatch.setenv("EDGE_MAX_QUEUE", "5")
    monkeypatch.setenv("EDGE_ALLOW_UNGATED", "yes")
    monkeypatch.setenv("EDGE_PRELOAD", "dense,dense-int8")
    args = S.build_parser().parse_args(["--bundle", "b", "--port", "9001", "--memory-budget-mb", "700"])
    cfg = S.config_from_args(args)
    assert (cfg.port, cfg.host, cfg.runtime.max_queue, cfg.runtime.allow_ungated) == (9001, "127.0.0.1", 5, True)
    assert cfg.runtime.memory_budget_mb == 700 and cfg.runtime.preload == ("dense", "dense-int8")
    help_text = S.build_parser().format_help()
    for flag in ("--bundle", "--host", "--port", "--api-key", "--threads", "--memory-budget-mb", "--max-queue",
                 "--allow-ungated", "--grace-s", "--signals", "--preload", "--max-body-bytes"):
        assert flag in help_text
    assert help_text.count("[EDGE_") >= 19 and "(default: 127.0.0.1)" in help_text


def test_unknown_model_lists_only_servable_variants(bundle_copy, make_policy):
    raw = json.loads((bundle_copy / "manifest.json").read_text())
    names = [v["name"] for v in raw["variants"]]
    raw["variants"][1]["gate"] = {"status": "fail", "failed": ["common"]}
    (bundle_copy / "manifest.json").write_text(json.dumps(raw))
    with Runtime.open(bundle_copy, policy=make_policy(), threads=1) as rt:
        app = S.create_app(S.ServerConfig(bundle=str(bundle_copy)), runtime=rt)
        with TestClient(app) as c:
            r = c.post("/v1/completions", json={"prompt": "x", "model": "llama-70b"})
    servable = [n for n in names if n != names[1]]
    assert_envelope(r, 404, "not_found_error", f"one of the servable variants {servable}")


def test_startup_errors_exit_nonzero(tmp_path, bundle_copy, capsys):
    assert S.main(["--bundle", str(tmp_path / "missing")]) == 2
    assert "edge-serve: error: bundle directory" in capsys.readouterr().err
    raw = json.loads((bundle_copy / "manifest.json").read_text())
    failed = json.loads(json.dumps(raw))
    for v in failed["variants"]:
        v["gate"] = {"status": "fail", "failed": ["perplexity"]}
    (bundle_copy / "manifest.json").write_text(json.dumps(failed))
    assert S.main(["--bundle", str(bundle_copy)]) == 2
    assert "every variant of" in capsys.readouterr().err
    assert S.main(["--bundle", str(bundle_copy), "--max-queue", "0"]) == 2
    assert "max_queue must be an integer >= 1" in capsys.readouterr().err
    (bundle_copy / "manifest.json").write_text(json.dumps(raw))
    (bundle_copy / "variants/dense/model.onnx").unlink()
    assert S.main(["--bundle", str(bundle_copy)]) == 2
    assert "is missing 'variants/dense/model.onnx'" in capsys.readouterr().err
    raw["format"] = "edge-bundle/2"
    (bundle_copy / "manifest.json").write_text(json.dumps(raw))
    assert S.main(["--bundle", str(bundle_copy)]) == 2
    assert "unknown bundle format 'edge-bundle/2'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        S.main([])


def test_a_corrupt_variant_is_fenced_and_others_serve(bundle_copy, make_policy):
    (bundle_copy / "variants/dense-int8/model.onnx").write_bytes(b"\x08garbage")
    rt = Runtime.open(bundle_copy, policy=make_policy(1), threads=1)
    try:
        with TestClient(S.create_app(S.ServerConfig(bundle=str(bundle_copy)), runtime=rt)) as c:
            r = c.post("/v1/completions", json={"prompt": "hi", "max_tokens": 2})  # the policy picks the broken one
            assert r.status_code == 200 and r.json()["edge"]["retried_from"] == "dense-int8"
            assert r.headers["x-edge-variant"] == "dense" and r.headers["x-edge-reason"].startswith("retry")
            assert_envelope(c.post("/v1/completions", json={"prompt": "hi", "model": "dense-int8"}), 400,
                            "invalid_request_error", "fenced after a failure")
            models = {m["id"]: m["edge"] for m in c.get("/v1/models").json()["data"]}
            assert models["dense-int8"]["allowed"] is False and models["dense"]["allowed"] is True
            assert 'edge_variant_fenced{variant="dense-int8"} 1.0' in c.get("/metrics").text
    finally:
        rt.close(grace_s=5)
