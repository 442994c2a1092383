"""What a request gives back: its `Result`, the `Event`s it emits, and the `Handle` that collects them.

`Runtime.submit` returns a `Handle` at once; the worker thread emits "start" (variant
chosen, first token ready), "text" (deltas, streaming requests only), then "done" (with the
`Result`) or "error" (with the `EdgeError`). A handle either buffers the events for
iteration and `result()`, or hands each one to a `sink` (edge-serve bridges them into
asyncio that way).
"""

from __future__ import annotations

import logging
import queue as _stdqueue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from edge_runtime.errors import EdgeError
from edge_runtime.engine.generate import Timings
from edge_runtime.queue import Entry

log = logging.getLogger(__name__)


@dataclass
class Result:
    """A finished request."""

    id: str
    text: str
    token_ids: list[int]
    finish_reason: str  # stop | length | cancelled
    variant: str  # the variant that produced the text
    reason: str  # why it was chosen ("rl", "rule: battery<20%", "pinned", "retry: ...")
    timings: Timings
    cold_start: bool = False  # the variant was loaded for this request (timings.load_s)
    retried_from: str | None = None  # the variant that failed first, if any
    observation: dict[str, float] = field(default_factory=dict)  # what the policy saw

    @property
    def prompt_tokens(self) -> int:
        return self.timings.prompt_tokens

    @property
    def completion_tokens(self) -> int:
        return self.timings.completion_tokens

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "text": self.text, "finish_reason": self.finish_reason, "variant": self.variant,
                "reason": self.reason, "cold_start": self.cold_start, "retried_from": self.retried_from,
                "timings": self.timings.to_dict(), "observation": self.observation}


@dataclass(frozen=True)
class Event:
    """What a request's handle receives: "start" (variant chosen, first token ready), "text", "done", "error"."""

    kind: str
    text: str = ""
    variant: str = ""
    reason: str = ""
    result: Result | None = None
    error: EdgeError | None = None


class Handle:
    """A submitted request: iterate for text deltas, or wait for the `Result`.

    Events go to `sink` when one is given (e.g. an asyncio bridge); otherwise they are
    kept for `__iter__` / `result`. A request submitted with `stream=False` sends no
    "text" events: iterating it yields nothing, `result().text` has the text.
    """

    def __init__(self, request_id: str, sink: Callable[[Event], None] | None = None, stream: bool = True) -> None:
        self.id = request_id
        self.stream = stream  # send "text" events (else only start/done/error)
        self._events: _stdqueue.SimpleQueue[Event] = _stdqueue.SimpleQueue()
        self._buffered = sink is None  # events kept for __iter__ (else they go to the sink only)
        self._sink = sink or self._events.put
        self._done = threading.Event()
        self._cancel = threading.Event()
        self.entry: Entry | None = None
        self.outcome: Result | EdgeError | None = None
        self.streamed = False  # text already handed out (no transparent retry past this point)

    def emit(self, event: Event) -> None:
        if event.kind == "text":
            self.streamed = True
        elif event.kind in ("done", "error"):
            self.outcome = event.result if event.kind == "done" else event.error
            self._done.set()
        try:
            self._sink(event)
        except Exception as e:  # the consumer is gone (closed event loop): the request still completes
            log.debug("request %s: event sink failed (%s)", self.id, e)
            self._cancel.set()

    def cancel(self) -> None:
        """Stop generating (the result ends with finish_reason "cancelled")."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def done(self) -> bool:
        return self._done.is_set()

    def __iter__(self) -> Iterator[str]:
        if not self._buffered:
            raise RuntimeError(f"request {self.id} sends its events to a sink; read them there")
        while True:
            ev = self._events.get()
            if ev.kind == "text":
                yield ev.text
            elif ev.kind == "done":
                return
            elif ev.kind == "error":
                assert ev.error is not None
                raise ev.error

    def result(self, timeout: float | None = None) -> Result:
        """Wait for the end; raises the request's error."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"request {self.id} still running after {timeout} s")
        if isinstance(self.outcome, EdgeError):
            raise self.outcome
        assert isinstance(self.outcome, Result)
        return self.outcome
