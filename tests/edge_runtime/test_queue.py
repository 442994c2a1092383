"""The request queue: priority, deadlines, admission control, shutdown."""

from __future__ import annotations

import threading
import time

import pytest

from edge_runtime.errors import Overloaded, Unavailable
from edge_runtime.queue import RequestQueue


def test_priority_then_deadline_then_arrival():
    q = RequestQueue(10)
    q.put("low")
    q.put("urgent", deadline=time.monotonic() + 1)
    q.put("high", priority=5)
    q.put("low2")
    assert [q.get(0).item for _ in range(4)] == ["high", "urgent", "low", "low2"]
    assert q.get(timeout=0.01) is None


def test_full_queue_refuses_with_retry_after():
    q = RequestQueue(2, retry_after=lambda depth: 3.4 * depth)
    q.put(1)
    q.put(2)
    with pytest.raises(Overloaded, match=r"queue is full \(2 waiting\); retry after 7 s") as e:
        q.put(3)
    assert e.value.retry_after_s == pytest.approx(6.8)
    assert q.depth == 2  # nothing accepted was dropped


def test_close_refuses_new_and_drains_old():
    q = RequestQueue(4)
    q.put("a")
    q.close()
    with pytest.raises(Unavailable, match="shutting down"):
        q.put("b")
    assert q.get().item == "a"
    assert q.get() is None  # closed and empty: no blocking


def test_get_blocks_until_put():
    q = RequestQueue(4)
    got = []
    t = threading.Thread(target=lambda: got.append(q.get(5).item))
    t.start()
    time.sleep(0.05)
    q.put("x")
    t.join(5)
    assert got == ["x"]


def test_expiry_remove_and_oldest_wait():
    q = RequestQueue(4)
    now = time.monotonic()
    e1 = q.put("a", deadline=now + 10)
    e2 = q.put("b")
    assert not e1.expired(now) and e1.expired(now + 11) and not e2.expired(now + 1e9)
    assert q.oldest_wait_frac(now + 5) == pytest.approx(0.5, abs=0.01)
    assert q.remove(e1) and not q.remove(e1)
    assert q.oldest_wait_frac() == 0.0
    assert [e.item for e in q.drain()] == ["b"] and q.depth == 0


@pytest.mark.parametrize("bad", [0, -1, True, 2.5])
def test_bad_size(bad):
    with pytest.raises(ValueError, match="max_size must be an integer >= 1"):
        RequestQueue(bad)
