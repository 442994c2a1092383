"""A request: the `Intake` that checks what it brings, and what it gives back: its `Result`,
the `Event`s it emits, and the `Handle` that collects them.

`Runtime.submit` returns a `Handle` at once; the worker thread emits "start" (variant
chosen, first token ready), "text" (deltas, streaming requests only), then "done" (with the
`Result`) or "error" (with the `EdgeError`). A handle either buffers the events for
iteration and `result()`, or hands each one to a `sink` (edge-serve bridges them into
asyncio that way).
"""

from __future__ import annotations

import logging
import math
import queue as _stdqueue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from edge_runtime.engine.generate import Timings
from edge_runtime.engine.sampling import SamplingParams, TokenLogprob
from edge_runtime.engine.tokenizer import Tokenizer, check_text
from edge_runtime.errors import EdgeError, RequestError
from edge_runtime.queue import Entry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Intake:
    """What a request may bring: its prompt, token budget and fields, checked before it is queued."""

    tokenizer: Tokenizer
    vocab_size: int
    context_length: int
    max_prompt_tokens: int
    default_max_tokens: int  # when a request sets none (capped by what fits the context)
    default_deadline_s: float | None  # when a request sets none; None: no deadline

    def prompt(self, prompt: str | None = None, messages: Sequence[dict[str, Any]] | None = None,
               prompt_ids: Sequence[int] | None = None, tools: Sequence[dict[str, Any]] | None = None) -> list[int]:
        """The prompt's token ids from exactly one of text, chat messages (with `tools` for the
        chat template) or ids; checks its length."""
        given = [x is not None for x in (prompt, messages, prompt_ids)]
        if sum(given) != 1:
            raise RequestError("give exactly one of prompt, messages or prompt_ids")
        if messages is not None:
            ids = self.tokenizer.encode_chat(messages, tools=tools)
        elif prompt is not None:
            if not isinstance(prompt, str):
                raise RequestError(f"prompt must be a string, got {type(prompt).__name__}")
            ids = self.tokenizer.encode(check_text(prompt, "prompt"))
        else:
            ids = [int(i) for i in prompt_ids or []]
            if any(not 0 <= i < self.vocab_size for i in ids):
                raise RequestError(f"prompt token ids must be in [0, {self.vocab_size})")
        if not ids:
            raise RequestError("the prompt is empty: give at least one token of text")
        if len(ids) > self.max_prompt_tokens:
            raise RequestError(f"the prompt has {len(ids)} tokens, more than the limit of {self.max_prompt_tokens}; "
                               "shorten it")
        return ids

    def sampling(self, prompt_tokens: int, params: SamplingParams | None = None, **kw: Any) -> SamplingParams:
        """Sampling parameters with `max_tokens` defaulted and checked against the context length."""
        room = self.context_length - prompt_tokens
        explicit = kw.get("max_tokens") is not None or params is not None
        kw = {k: v for k, v in kw.items() if v is not None}
        if params is None:
            kw.setdefault("max_tokens", min(self.default_max_tokens, room))
            params = SamplingParams(**kw)
        elif kw:
            params = replace(params, **kw)
        if explicit and params.max_tokens > room:
            raise RequestError(
                f"max_tokens ({params.max_tokens}) + the prompt ({prompt_tokens} tokens) exceed the context length "
                f"({self.context_length}); ask for at most {room} tokens"
            )
        return params

    def fields(self, difficulty: Any, priority: Any, deadline_s: Any) -> float:
        """Check the scheduling fields; returns the deadline budget in seconds (inf: none)."""
        if isinstance(difficulty, bool) or not isinstance(difficulty, (int, float)) or not 0 <= difficulty <= 1:
            raise RequestError(f"difficulty must be a number in [0, 1], got {difficulty!r}")
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise RequestError(f"priority must be an integer, got {priority!r}")
        budget = self.default_deadline_s if deadline_s is None else deadline_s
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float))
                                   or not budget > 0):
            raise RequestError(f"deadline_s must be a number > 0, got {budget!r}")
        return math.inf if budget is None else float(budget)


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
    source: str = ""  # where the choice came from: a `Decision.source` ("policy", "rule", "pinned", ...)
    cold_start: bool = False  # the variant was loaded for this request (timings.load_s)
    retried_from: str | None = None  # the variant that failed first, if any
    observation: dict[str, float] = field(default_factory=dict)  # what the policy saw
    logprobs: list[TokenLogprob] = field(default_factory=list)  # per returned token, when asked

    @property
    def prompt_tokens(self) -> int:
        return self.timings.prompt_tokens

    @property
    def completion_tokens(self) -> int:
        return self.timings.completion_tokens

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "text": self.text, "finish_reason": self.finish_reason, "variant": self.variant,
                "reason": self.reason, "source": self.source, "cold_start": self.cold_start, "retried_from": self.retried_from,
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
    logprobs: Sequence[TokenLogprob] = ()  # "text": the logprobs of the tokens behind this delta


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
