"""The bounded request queue: priorities, deadlines, admission control.

Waiting requests are served highest `priority` first, then earliest deadline, then in
arrival order. The queue holds at most `max_size` waiting requests (the ones being
generated do not count); one more is refused at once with `Overloaded`, which carries a
`retry_after_s` estimate, rather than being accepted and left to time out. A closed
queue (shutdown) refuses new requests with `Unavailable` and hands out what it already
holds until it is empty.

Deadlines are absolute `time.monotonic()` values; the worker checks them when it takes a
request (`Entry.expired`), so a request whose deadline passed while it waited is
rejected with a clear reason instead of being run late.
"""

from __future__ import annotations

import heapq
import itertools
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edge_runtime.errors import Overloaded, Unavailable


@dataclass(order=True)
class Entry:
    """One waiting request; ordering is the service order."""

    sort_key: tuple[float, float, int] = field(init=False, repr=False)
    item: Any = field(compare=False)
    priority: int = field(default=0, compare=False)  # higher is served first
    deadline: float = field(default=math.inf, compare=False)  # monotonic seconds; inf: none
    enqueued: float = field(default_factory=time.monotonic, compare=False)
    seq: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        self.sort_key = (-self.priority, self.deadline, self.seq)

    def waited(self, now: float | None = None) -> float:
        return (time.monotonic() if now is None else now) - self.enqueued

    def expired(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) > self.deadline


class RequestQueue:
    """A thread-safe bounded priority queue.

    Args:
        max_size: waiting requests at most (>= 1).
        retry_after: estimates, from the current depth, how long a refused client should wait (s).
    """

    def __init__(self, max_size: int, retry_after: Callable[[int], float] | None = None) -> None:
        if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1:
            raise ValueError(f"max_size must be an integer >= 1, got {max_size!r}")
        self.max_size = max_size
        self.retry_after = retry_after or (lambda depth: 1.0)
        self._heap: list[Entry] = []
        self._cv = threading.Condition()
        self._seq = itertools.count()
        self.closed = False

    def __len__(self) -> int:
        return len(self._heap)

    @property
    def depth(self) -> int:
        """Requests waiting."""
        return len(self._heap)

    def put(self, item: Any, priority: int = 0, deadline: float = math.inf) -> Entry:
        """Queue `item`; raises `Overloaded` when full, `Unavailable` when closed."""
        with self._cv:
            if self.closed:
                raise Unavailable("the runtime is shutting down and accepts no new requests", retry_after_s=5.0)
            if len(self._heap) >= self.max_size:
                wait = max(1.0, float(self.retry_after(len(self._heap))))
                raise Overloaded(
                    f"the request queue is full ({self.max_size} waiting); retry after {wait:.0f} s",
                    retry_after_s=wait,
                )
            entry = Entry(item=item, priority=priority, deadline=deadline, seq=next(self._seq))
            heapq.heappush(self._heap, entry)
            self._cv.notify()
            return entry

    def get(self, timeout: float | None = None) -> Entry | None:
        """The next request; None after `timeout` seconds, or once closed and empty."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            while not self._heap:
                if self.closed:
                    return None
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cv.wait(left)
            return heapq.heappop(self._heap)

    def remove(self, entry: Entry) -> bool:
        """Take a waiting request out (its client went away); False if it already left the queue."""
        with self._cv:
            try:
                self._heap.remove(entry)
            except ValueError:
                return False
            heapq.heapify(self._heap)
            return True

    def oldest_wait_frac(self, now: float | None = None) -> float:
        """The largest wait / deadline budget among waiting requests (0 if none has a deadline)."""
        now = time.monotonic() if now is None else now
        with self._cv:
            fracs = [
                (now - e.enqueued) / (e.deadline - e.enqueued)
                for e in self._heap
                if math.isfinite(e.deadline) and e.deadline > e.enqueued
            ]
        return max(fracs, default=0.0)

    def close(self) -> None:
        """Refuse new requests; `get` drains what is left, then returns None."""
        with self._cv:
            self.closed = True
            self._cv.notify_all()

    def drain(self) -> list[Entry]:
        """Remove and return everything waiting (shutdown past its grace period)."""
        with self._cv:
            out, self._heap = sorted(self._heap), []
            return out
