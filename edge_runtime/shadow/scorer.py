"""The shadow scorer: served requests re-run greedily on the dense variant in idle time.

The runtime's worker hands every finished request to `ShadowScorer.offer`; a sampled share
(and, if asked, every one a non-dense variant served) waits in a bounded backlog. When the
queue is empty, nothing is generating and the device is on mains or above `min_battery`
(`may_run`), the worker calls `run_one`: the dense variant answers the same prompt greedily
(and the served variant again, greedily, if the request was sampled), polling `busy` once per
token; a live request that arrives preempts the shadow job at the next token and the job
goes back to the front of the backlog. The served answer is then scored per dimension:

- `format`, `instruction`: the answer has the form the prompt asked for
  (`checks.infer_constraint`; only prompts that carry a checkable instruction);
- `exact`, `prefix`, `token_f1`: agreement with the dense answer over token ids (`checks.agreement`).

The dense answer's own `format` and `instruction` are recorded under the dense variant, so a
parent that drifts (or traffic that changes) is told apart from a variant that does
(`drift.Drift`). Scored requests become regression cases when capture is on (`capture.Capture`).
"""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from edge_runtime.bundle import Manifest
from edge_runtime.config import read_toml
from edge_runtime.control.observation import DeviceState
from edge_runtime.engine.generate import Generation
from edge_runtime.engine.pool import VariantPool
from edge_runtime.engine.sampling import SamplingParams
from edge_runtime.engine.tokenizer import Tokenizer
from edge_runtime.errors import EdgeError, VariantError
from edge_runtime.shadow.capture import Capture, load_redactions
from edge_runtime.shadow.checks import Constraint, agreement, infer_constraint
from edge_runtime.shadow.config import ShadowConfig
from edge_runtime.shadow.drift import CHECKS, Drift, ShadowMetrics

log = logging.getLogger(__name__)

FLOORS_FILE = "floors.toml"  # the gate's floors inside the bundle (harness.evaluate.FLOORS_FILE)
MAX_CASE_TOKENS = 256  # a suite case's generation budget at most (harness.suite)


@dataclass
class Served:
    """What the runtime served, as the scorer needs it."""

    variant: str
    prompt_ids: list[int]
    params: SamplingParams
    text: str
    token_ids: list[int]
    prompt: str | None = None  # the raw prompt, when the request sent one
    messages: Sequence[dict[str, Any]] | None = None  # the chat messages, when the request sent them


@dataclass
class _Job:
    served: Served
    constraint: Constraint | None
    max_tokens: int
    dense: tuple[list[int], str] | None = None  # kept across a preemption of the served re-run
    preempted: int = 0


def dense_index(manifest: Manifest) -> int:
    """The dense fp32 variant: the reference every other variant is scored against."""
    for i, v in enumerate(manifest.variants):
        if v.method == "dense" and v.quantization == "none" and not v.structured:
            return i
    return 0  # variants are stored densest first


def read_floors(bundle_dir: Path) -> dict[str, float]:
    """The gate's floors for the checks shadow scoring shares with it (format, instruction), if the bundle has them."""
    path = bundle_dir / FLOORS_FILE
    if not path.is_file():
        return {}
    try:
        floors = read_toml(path, "floors file", EdgeError).get("floors", {})
    except EdgeError as e:
        log.warning("shadow: %s; format and instruction drift are tracked without floors", e)
        return {}
    return {d: float(floors[d]) for d in CHECKS if isinstance(floors.get(d), (int, float))}


class ShadowScorer:
    """Shadow scoring for one runtime (see the module docstring). Build it with `ShadowScorer.open`."""

    POLL_S = 0.5  # while work waits on a busy queue or a low battery, the worker looks again this often

    def __init__(self, config: ShadowConfig, manifest: Manifest, tokenizer: Tokenizer, pool: VariantPool,
                 floors: dict[str, float], registry: CollectorRegistry, capture: Capture | None) -> None:
        self.config = config
        self.manifest = manifest
        self.tokenizer = tokenizer
        self.pool = pool
        self.dense = manifest.variants[dense_index(manifest)].name
        self.metrics = ShadowMetrics(registry)
        self.floors = {**floors, "token_f1": config.agreement_floor}
        self.drift = Drift(self.dense, self.floors, config.window, config.min_samples, self.metrics,
                           self._fence if config.fence else None)
        self.capture = capture
        self.scored = 0
        self._backlog: deque[_Job] = deque()
        self._active = False  # a job is running
        self._rng = random.Random(config.seed)

    @classmethod
    def open(cls, config: ShadowConfig, bundle_dir: Path, manifest: Manifest, tokenizer: Tokenizer,
             pool: VariantPool, registry: CollectorRegistry) -> ShadowScorer:
        """Check the settings, read the floors, open capture.

        Raises:
            ShadowError: a redaction pattern that does not compile (checked even with capture off).
        """
        redactions = load_redactions(config.redact) if config.redact is not None else ()
        capture = None
        if config.capture_dir is not None:
            capture = Capture(config.capture_dir, config.capture_max_bytes, config.capture_max_age_s, redactions)
        scorer = cls(config, manifest, tokenizer, pool, read_floors(bundle_dir), registry, capture)
        log.info("shadow scoring on: %.0f%% of requests%s against %r, floors %s, capture %s", 100 * config.sample,
                 " and every non-dense one" if config.all_non_dense else "", scorer.dense, scorer.floors,
                 capture.path if capture is not None and capture.active else "off")
        return scorer

    # ------------------------------------------------------------------ the worker's side

    @property
    def pending(self) -> bool:
        """True while served requests wait to be shadow-scored."""
        return bool(self._backlog)

    @property
    def idle(self) -> bool:
        """True when nothing waits and nothing runs (tests and benchmarks wait for it)."""
        return not self._backlog and not self._active

    def offer(self, served: Served) -> None:
        """Consider one finished request for shadow scoring (cheap: a draw and an append)."""
        chosen = self._rng.random() < self.config.sample
        if not chosen and not (self.config.all_non_dense and served.variant != self.dense):
            return
        if len(self._backlog) >= self.config.backlog:
            self._backlog.popleft()
            self.metrics.jobs.labels("dropped").inc()
        text = served.prompt if served.prompt is not None else _last_user(served.messages)
        max_tokens = min(served.params.max_tokens, self.config.max_tokens, MAX_CASE_TOKENS)
        self._backlog.append(_Job(served, infer_constraint(text) if text else None, max_tokens))
        self.metrics.jobs.labels("queued").inc()

    def may_run(self, device: DeviceState) -> bool:
        """Shadow work is allowed on mains, or on battery above `min_battery`, and never while throttled."""
        return (device.plugged_in or device.battery_level >= self.config.min_battery) and not device.throttled

    def run_one(self, busy: Callable[[], bool]) -> bool:
        """Shadow-score the oldest waiting request; False if live traffic (`busy()`) preempted it."""
        job = self._backlog.popleft()
        t0 = time.perf_counter()
        self._active = True
        try:
            done = self._run(job, busy)
        except VariantError as e:
            log.warning("shadow: a job for %r failed and is dropped: %s", job.served.variant, e)
            self.metrics.jobs.labels("failed").inc()
            return True
        finally:
            self._active = False
            self.metrics.busy.inc(time.perf_counter() - t0)
        if not done:
            job.preempted += 1
            self.metrics.jobs.labels("preempted").inc()
            if job.preempted <= self.config.max_preemptions:
                self._backlog.appendleft(job)
            else:
                self.metrics.jobs.labels("dropped").inc()
        return done

    def _run(self, job: _Job, busy: Callable[[], bool]) -> bool:
        s = job.served
        greedy = s.params.temperature == 0 and not (s.params.presence_penalty or s.params.frequency_penalty
                                                    or s.params.ignore_eos)
        if job.dense is None:
            if s.variant == self.dense and greedy:
                job.dense = (s.token_ids, s.text)
            else:
                job.dense = self._generate(self.dense, job, busy)
                if job.dense is None:
                    return False
        served = (s.token_ids, s.text) if greedy else self._generate(s.variant, job, busy)
        if served is None:
            return False
        self._score(job, served, job.dense)
        return True

    def _generate(self, variant: str, job: _Job, busy: Callable[[], bool]) -> tuple[list[int], str] | None:
        """Greedy answer of `variant`, or None if `busy()` turned True first."""
        if busy():
            return None
        index = self.manifest.index(variant)
        why = self.pool.why_not(index)
        if why is not None:
            raise VariantError(f"variant {variant!r} may not run: {why}")
        loaded, _ = self.pool.get(index, len(job.served.prompt_ids) + job.max_tokens)
        params = SamplingParams(max_tokens=job.max_tokens, stop=job.served.params.stop)
        gen = Generation(loaded.decoder, self.tokenizer, job.served.prompt_ids, params, cancelled=busy)
        gen.run()
        if gen.finish_reason == "cancelled":
            return None
        return gen.token_ids, gen.text

    def _score(self, job: _Job, served: tuple[list[int], str], dense: tuple[list[int], str]) -> None:
        s, c, k = job.served, job.constraint, job.max_tokens
        eos = self.tokenizer.eos_token_ids
        scores: dict[str, float] = {}
        own: dict[str, float] = {}  # the dense answer's own checks
        if c is not None:
            scores["instruction"], own["instruction"] = float(c.check(served[1])), float(c.check(dense[1]))
            if c.format:
                scores["format"], own["format"] = scores["instruction"], own["instruction"]
        if s.variant != self.dense:
            scores.update(agreement([t for t in served[0][:k] if t not in eos], [t for t in dense[0][:k] if t not in eos]))
            self.drift.record(s.variant, scores)
            if own:
                self.drift.record(self.dense, own)
        elif own:
            self.drift.record(self.dense, own)
        if self.capture is not None and self.capture.active:
            case = regression_case(job, self.tokenizer, dense[1], s.variant, scores)
            if case is not None and self.capture.add(case):
                self.metrics.captured.inc()
        self.metrics.jobs.labels("scored").inc()
        self.scored += 1  # last: a caller that waits on it sees the capture written

    def _fence(self, variant: str, why: str) -> None:
        self.pool.fence(self.manifest.index(variant), why)

    def status(self) -> dict[str, Any]:
        """For `/status`: settings, backlog, and the rolling scores with their floors."""
        cap = self.capture
        return {
            "dense": self.dense, "sample": self.config.sample, "all_non_dense": self.config.all_non_dense,
            "backlog": len(self._backlog), "scored": self.scored, "floors": self.floors,
            "drift": self.drift.snapshot(),
            "capture": None if cap is None else {"active": cap.active, "path": str(cap.path), "written": cap.written},
        }


def _last_user(messages: Sequence[dict[str, Any]] | None) -> str:
    for m in reversed(messages or ()):
        if m.get("role") == "user" and isinstance(m.get("content"), str):
            return m["content"]
    return ""


def regression_case(job: _Job, tokenizer: Tokenizer, dense_text: str, variant: str,
                    scores: dict[str, float]) -> dict[str, Any] | None:
    """A suite case (harness.suite's format, `id` set by `Capture`) for a shadow-scored request.

    A prompt with a checkable instruction becomes a case of that check; any other becomes an
    `exact` case whose answer is the dense variant's. None when there is nothing to check.
    """
    s = job.served
    msgs = list(s.messages or ())
    if s.prompt is not None:
        template, prompt = "raw", s.prompt
    elif len(msgs) == 1 and msgs[0].get("role") == "user" and isinstance(msgs[0].get("content"), str):
        template, prompt = "chat", msgs[0]["content"]
    else:  # several turns, a system prompt or token ids: the rendered text, as a raw completion
        template, prompt = "raw", tokenizer.decode(s.prompt_ids, skip_special_tokens=False)
    if not prompt.strip():
        return None
    shown = ", ".join(f"{k} {v:.2f}" for k, v in scores.items())
    case: dict[str, Any] = {"slice": "common", "template": template, "prompt": prompt, "max_new_tokens": job.max_tokens,
                            "note": f"captured: served by {variant}; shadow scores: {shown or 'none'}"}
    if s.params.stop:
        case["stop"] = list(s.params.stop)
    c = job.constraint
    if c is None:
        if not dense_text.strip():
            return None
        return {**case, "type": "exact", "answer": [dense_text]}
    if c.kind == "list":
        return {**case, "type": "list", "n": c.n, "style": c.style, "tags": ["instruction"]}
    if c.kind == "regex":
        return {**case, "type": "regex", "pattern": c.pattern, "tags": ["instruction"]}
    return {**case, "type": "json", "tags": ["instruction"]}
