"""edge-serve as a process: SIGTERM lets accepted requests finish, then exits 0."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from edge_runtime.errors import EdgeError
from edge_runtime.serve.client import wait_healthy

HERE = Path(__file__).parent
ROOT = HERE.parents[2]


def start_slow_server(bundle: Path, port: int, step_s: float, grace_s: float) -> tuple[str, subprocess.Popen]:
    """edge-serve in a process whose decode steps each take `step_s`; returns once it is healthy."""
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SLOW_STEP_S": str(step_s), "EDGE_SIGNALS": "static"}
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "slow_serve.py"), "--bundle", str(bundle), "--port", str(port),
         "--threads", "1", "--grace-s", str(grace_s), "--log-level", "warning"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_healthy(url, proc, poll_s=0.1)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return url, proc


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_drains_then_exits_zero(tiny_bundle, port):
    url, proc = start_slow_server(tiny_bundle, port, step_s=0.02, grace_s=20)
    try:
        streamed: list[str] = []
        queued: list[int] = []
        first_line = threading.Event()

        def stream():
            body = {"prompt": "x", "max_tokens": 40, "stream": True, "ignore_eos": True}
            with httpx.stream("POST", url + "/v1/completions", json=body, timeout=60) as r:
                for line in r.iter_lines():
                    if line:
                        streamed.append(line)
                        first_line.set()

        def blocking():
            r = httpx.post(url + "/v1/completions", json={"prompt": "y", "max_tokens": 20, "ignore_eos": True},
                           timeout=60)
            queued.append(r.status_code)

        threads = [threading.Thread(target=stream), threading.Thread(target=blocking)]
        threads[0].start()
        assert first_line.wait(30)
        threads[1].start()
        time.sleep(0.2)  # the second request is accepted and waiting in the queue
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        with pytest.raises(httpx.TransportError):  # no longer accepting connections
            httpx.post(url + "/v1/completions", json={"prompt": "late"}, timeout=5)
        for t in threads:
            t.join(60)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert streamed[-1] == "data: [DONE]"
    final = json.loads(streamed[-2].removeprefix("data: "))
    assert final["choices"][0]["finish_reason"] == "length" and final["timings"]["predicted_n"] == 40
    assert queued == [200]


def test_wait_healthy_fails_fast_on_exit_and_on_timeout(port):
    url = f"http://127.0.0.1:{port}"  # nothing listens there
    gone = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    gone.wait()
    with pytest.raises(EdgeError, match="edge-serve exited with code 3 before"):
        wait_healthy(url, gone)
    with pytest.raises(EdgeError, match=r"/health did not say ok within 0.3 s"):
        wait_healthy(url, timeout_s=0.3, poll_s=0.05)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_past_grace_accepted_requests_get_503_envelopes(tiny_bundle, port):
    url, proc = start_slow_server(tiny_bundle, port, step_s=0.05, grace_s=1)
    answers: list[httpx.Response] = []
    streamed: list[str] = []
    body = {"prompt": "y", "max_tokens": 200, "ignore_eos": True}  # ~10 s of decoding: far past the grace
    try:
        def stream():  # running when SIGTERM comes
            with httpx.stream("POST", url + "/v1/completions", json={**body, "stream": True}, timeout=60) as r:
                streamed.extend(line for line in r.iter_lines() if line)

        def blocking():  # queued when SIGTERM comes, then the running one
            answers.append(httpx.post(url + "/v1/completions", json=body, timeout=60))

        threads = [threading.Thread(target=f) for f in (stream, blocking, blocking)]
        for t in threads:
            t.start()
            time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(30)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert len(answers) == 2
    for r in answers:
        assert r.status_code == 503 and r.headers["retry-after"] == "5", r.text
        assert r.json()["error"]["type"] == "unavailable_error" and "shut down" in r.json()["error"]["message"]
    assert streamed[-1] == "data: [DONE]"
    error = json.loads(streamed[-2].removeprefix("data: "))["error"]
    assert error["code"] == 503 and "shut down before this request finished" in error["message"]
