"""The worker: one thread takes queued requests, decides, generates and accounts for them.

`Runtime` (edge_runtime.runtime) is the public face: it opens the bundle, checks and queues
requests, and owns the state this mixin reads (`queue`, `pool`, `policy`, `metrics`,
`tokenizer`, `manifest`, `shadow`, `power`). The worker thread runs `_work`: for each job it
checks the deadline, reads the signals, asks `decide` for a variant or pair (unless the
client pinned one), loads it (`engine.pool`), generates (`engine.generate`), retries once on
the next allowed variant if a variant fails before any text was streamed, and records the
result; while no live request waits, it runs shadow work (`edge_runtime.shadow`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_runtime.control import observation
from edge_runtime.engine.generate import Generation, Timings
from edge_runtime.engine.grammar import Constraint
from edge_runtime.engine.sampling import SamplingParams
from edge_runtime.errors import DeadlineExceeded, EdgeError, Unavailable, VariantError
from edge_runtime.request import Event, Handle, Result
from edge_runtime.shadow.scorer import Served

log = logging.getLogger("edge_runtime.runtime")


@dataclass
class Job:
    """A queued request, as the worker takes it."""

    id: str
    prompt_ids: list[int]
    params: SamplingParams
    pinned: int | None
    pair: str | None  # a speculative pair pinned by name (`pinned` is then its verifier)
    difficulty: float
    deadline_s: float  # budget from submission (inf: none)
    submitted: float  # monotonic
    handle: Handle
    constraint: Constraint | None = None  # the grammar the output must follow
    prompt: str | None = None  # the request's own text, kept for shadow scoring
    messages: Sequence[dict[str, Any]] | None = None


class Worker:
    """The worker thread's half of `Runtime` (a mixin: `Runtime` holds the state it uses)."""

    _closed: bool
    _running: Job | None
    _service_s: float

    def _retry_after(self, depth: int) -> float:
        return (depth + 1) * self._service_s

    def _next(self) -> Any:
        """The next live request; while none waits, shadow work runs when the scorer has some and may."""
        while True:
            shadow = self.shadow
            if shadow is None or not shadow.pending or self._closed:
                return self.queue.get()
            if self.queue.depth == 0 and shadow.may_run(self._read_signals()):
                shadow.run_one(busy=lambda: self.queue.depth > 0 or self._closed)
                continue
            entry = self.queue.get(timeout=shadow.POLL_S)  # busy or on a low battery: look again later
            if entry is not None or self.queue.closed:
                return entry

    def _work(self) -> None:
        while True:
            entry = self._next()
            if entry is None:
                return
            job: Job = entry.item
            self.metrics.queue_depth.set(self.queue.depth)
            if job.handle.cancelled:
                self._finish_cancelled(job)
                continue
            now = time.monotonic()
            if entry.expired(now):
                self.metrics.rejected.labels("deadline").inc()
                job.handle.emit(Event("error", error=DeadlineExceeded(
                    f"request {job.id} waited {now - job.submitted:.2f} s in the queue, past its deadline of "
                    f"{job.deadline_s:.2f} s; retry with a longer deadline_s or when the queue is shorter")))
                continue
            self._running = job
            self.metrics.running.set(1)
            try:
                self._run(job, now)
            except Exception as e:  # a bug must fail one request, not the worker
                log.exception("request %s failed", job.id)
                err = e if isinstance(e, EdgeError) else EdgeError(f"internal error: {type(e).__name__}: {e}")
                if not job.handle.done():
                    job.handle.emit(Event("error", error=err))
            finally:
                self._running = None
                self.metrics.running.set(0)

    def _run(self, job: Job, started: float) -> None:
        t = Timings(queue_s=started - job.submitted)
        self.metrics.queue_wait.observe(t.queue_s)
        t0 = time.perf_counter()
        joules0 = self.power.sample() if self.power else None  # first: the signals carry this reading
        device = self._read_signals()
        self.metrics.signals(device)
        self.metrics.recent_latency.set(self.latency.value)
        obs: np.ndarray | None = None
        if job.pinned is not None:
            index, reason, source = job.pinned, "pinned", "pinned"
        else:
            left = job.submitted + job.deadline_s - started
            d, obs = self.decide(len(job.prompt_ids), job.params.max_tokens, left, job.difficulty, device)
            index, reason, source = int(d.variant), str(d.reason), d.source
            if index >= len(self.manifest.variants):  # the controller chose a speculative pair
                job.pair = self.manifest.pairs[index - len(self.manifest.variants)].name
                index = self.manifest.index(self.manifest.pairs[index - len(self.manifest.variants)].verifier)
            if source == "fallback":
                self.metrics.fallbacks.inc()
        t.decide_s = time.perf_counter() - t0
        self.metrics.decision.observe(t.decide_s)
        capacity = len(job.prompt_ids) + job.params.max_tokens
        retried_from = None
        for attempt in (0, 1):
            pair = job.pair if attempt == 0 else None
            name = pair or self.manifest.variants[index].name
            self.metrics.selections.labels(name, source).inc()
            try:
                loaded, speculator, load_s = self.pool.prepare(pair, index, capacity)
                if pair and speculator is None:
                    reason = f"{reason}; pair {pair!r} fenced: its verifier alone"
                    name = self.manifest.variants[index].name
                t.load_s += load_s
                gen = Generation(loaded.decoder, self.tokenizer, job.prompt_ids, job.params, timings=t,
                                 cancelled=lambda: job.handle.cancelled, constraint=job.constraint,
                                 speculator=speculator)
                started_ev = False
                for delta in gen:
                    if not started_ev:
                        job.handle.emit(Event("start", variant=name, reason=reason))
                        started_ev = True
                    if job.handle.stream:
                        job.handle.emit(Event("text", text=delta, logprobs=gen.take_logprobs()))
                if not started_ev:
                    job.handle.emit(Event("start", variant=name, reason=reason))
                if speculator is not None and speculator.failed and pair is not None:
                    self.pool.fence_pair(pair, f"its drafter failed while drafting: {speculator.failed}")
                break
            except VariantError as e:
                self.pool.fence(index, str(e))
                nxt = self.pool.next_allowed(index)
                if attempt == 1 or job.pinned is not None or job.handle.streamed or nxt is None:
                    self.metrics.requests.labels(name, "error").inc()
                    raise Unavailable(f"variant {name!r} failed ({e}) and the request cannot be retried") from e
                log.warning("request %s: variant %r failed, retrying on %r", job.id, name,
                            self.manifest.variants[nxt].name)
                retried_from, index, source = name, nxt, "retry"
                reason = f"retry: {name} failed; was {reason}"
                t = Timings(queue_s=t.queue_s, decide_s=t.decide_s, load_s=t.load_s)
        t.total_s = time.monotonic() - job.submitted
        if joules0 is not None and self.power and (joules1 := self.power.sample()) is not None:
            t.energy_j = joules1 - joules0
        result = Result(job.id, gen.text, gen.token_ids, gen.finish_reason or "stop", name, reason, t,
                        source=source, cold_start=t.load_s > 0, retried_from=retried_from, logprobs=gen.logprobs,
                        observation=observation.describe(obs) if obs is not None else {})
        self._account(result)
        job.handle.emit(Event("done", variant=name, reason=reason, result=result))
        if self.shadow is not None and result.finish_reason in ("stop", "length"):
            self.shadow.offer(Served(name, job.prompt_ids, job.params, result.text, result.token_ids, job.prompt,
                                     job.messages))

    def _account(self, r: Result) -> None:
        t, m = r.timings, self.metrics
        if t.drafted_tokens:
            m.drafted.labels(r.variant).inc(t.drafted_tokens)
            m.accepted.labels(r.variant).inc(t.accepted_tokens)
        m.requests.labels(r.variant, r.finish_reason).inc()
        m.prompt_tokens.labels(r.variant).inc(t.prompt_tokens)
        m.completion_tokens.labels(r.variant).inc(t.completion_tokens)
        m.duration.labels(r.variant).observe(t.total_s)
        m.prefill.observe(t.prefill_s)
        if t.energy_j is not None:
            m.energy.labels(r.variant).inc(max(t.energy_j, 0.0))
        if t.decode_steps:
            m.per_token.labels(r.variant).observe(t.decode_s / t.decode_steps)
            self.latency.update(t.decode_ms_per_token)
        service = t.total_s - t.queue_s
        self._service_s = 0.7 * self._service_s + 0.3 * max(service, 0.01)

    def _finish_cancelled(self, job: Job) -> None:
        if job.handle.done():
            return
        t = Timings(queue_s=time.monotonic() - job.submitted, total_s=time.monotonic() - job.submitted,
                    prompt_tokens=len(job.prompt_ids))
        self.metrics.requests.labels("none", "cancelled").inc()
        job.handle.emit(Event("done", result=Result(job.id, "", [], "cancelled", "", "cancelled before start", t)))
