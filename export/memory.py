"""Process memory during an export: the peak resident set, and handing freed pages back.

Pruning holds a dense model, a pruned copy and per-layer statistics at once; these helpers
measure what that costs (reports and benchmarks quote `peak_rss_mb`) and keep a long
export from creeping up between variants.
"""

from __future__ import annotations

import ctypes
import gc
import resource
import threading

import psutil


class PeakRSS:
    """Samples this process's resident memory in a thread; `peak_mb` is the maximum seen."""

    def __init__(self, interval_s: float = 0.02) -> None:
        self.interval_s = interval_s
        self.peak_mb = 0.0
        self.start_mb = 0.0
        self._proc = psutil.Process()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> float:
        mb = self._proc.memory_info().rss / 2**20
        self.peak_mb = max(self.peak_mb, mb)
        return mb

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> PeakRSS:
        self.start_mb = self.sample()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="peak-rss")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()


def release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc `malloc_trim`).

    Between variants: glibc keeps freed blocks of a few MB on its heap, so a long export
    that prunes, evaluates and frees one copy after another creeps up in RSS without it.
    """
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def max_rss_mb() -> float:
    """The process's lifetime peak RSS (includes model loading)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
