"""Fixtures of the shadow-scoring tests: a runtime with shadow scoring on, and a way to wait for it."""

from __future__ import annotations

import time

from edge_runtime.runtime import Runtime


def wait_scored(rt: Runtime, n: int, timeout_s: float = 60.0) -> None:
    """Block until the runtime's shadow scorer has scored `n` requests, or gave up on the rest."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if rt.shadow.scored >= n or rt.shadow.idle:
            assert rt.shadow.scored >= n, f"shadow scored {rt.shadow.scored} of {n} requests, then stopped"
            return
        time.sleep(0.02)
    raise AssertionError(f"shadow scored {rt.shadow.scored} of {n} requests in {timeout_s} s")
