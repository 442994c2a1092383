"""A client-side helper for scripts that start `edge-serve`: wait until it is ready (stdlib only)."""

from __future__ import annotations

import subprocess
import time
import urllib.request

from edge_runtime.errors import EdgeError


def wait_healthy(url: str, proc: subprocess.Popen | None = None, timeout_s: float = 60.0,
                 poll_s: float = 0.2) -> None:
    """Block until `GET url/health` answers 200 (`url` like `http://127.0.0.1:8080`).

    For scripts that start `edge-serve` and must wait for it (`proc`: the started process,
    watched so that an early exit fails at once). `EdgeError` on timeout or early exit.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        if proc is not None and proc.poll() is not None:
            raise EdgeError(f"edge-serve exited with code {proc.returncode} before {url}/health said ok")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:  # refused while starting, or 503 (HTTPError) while loading
            pass
        if time.monotonic() > deadline:
            raise EdgeError(f"{url}/health did not say ok within {timeout_s:g} s")
        time.sleep(poll_s)
