"""The embedded runtime: open a bundle, then generate; the controller picks the variant per request.

    from edge_runtime import Runtime

    with Runtime.open("bundles/smollm2-135m") as rt:
        r = rt.generate("Summarize: disk /dev/sda1 is 97% full", max_tokens=48)
        print(r.text, r.variant, r.reason, r.timings.decode_tokens_per_s)
        for piece in rt.stream(messages=[{"role": "user", "content": "Hi"}]):
            print(piece, end="")

Every request goes through one bounded queue (`edge_runtime.queue`) to one worker thread
that owns the onnxruntime sessions (onnxruntime already spreads each forward pass over
the cores). When the worker takes a request it checks the deadline, reads the signals
(and the power meter, where the board has one), encodes the observation
(`edge_runtime.control.observation.encode`), asks the policy for a variant among those
allowed, loads it if it is cold (`edge_runtime.engine.pool`), and generates
(`edge_runtime.engine.generate`). A variant that fails to load or run is fenced and the
request is retried once on the next allowed variant, provided no text had been streamed
yet. Every result says which variant served it, why, and where the time went.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.bundle import Manifest, check_files, read_manifest
from edge_runtime.config import RuntimeConfig
from edge_runtime.control import observation
from edge_runtime.control.difficulty import load_estimator, prompt_text
from edge_runtime.control.observation import DeviceState, RequestState
from edge_runtime.control.policy import Decision, Policy, StaticPolicy, load_policy, valid_choice
from edge_runtime.control.power import EnergyMeter, auto_meter
from edge_runtime.control.signals import SOURCES, LatencyTracker, SignalSource, StaticSource
from edge_runtime.control.tiers import TIERS, select_tier, tier_mask, tier_warning, tiered
from edge_runtime.engine.grammar import Constraint, Grammars
from edge_runtime.engine.pool import VariantPool
from edge_runtime.engine.residency import trim_heap
from edge_runtime.engine.sampling import SamplingParams
from edge_runtime.engine.tokenizer import Tokenizer
from edge_runtime.errors import (
    BundleError,
    EdgeError,
    Overloaded,
    RequestError,
    Unavailable,
    VariantError,
)
from edge_runtime.metrics import Metrics
from edge_runtime.queue import RequestQueue
from edge_runtime.request import Event, Handle, Intake, Result
from edge_runtime.shadow.scorer import ShadowScorer
from edge_runtime.worker import Job, Worker

log = logging.getLogger(__name__)


class Runtime(Worker):
    """A bundle opened for serving. Build it with `Runtime.open`; close it (or use `with`)."""

    def __init__(self, bundle_dir: Path, manifest: Manifest, tokenizer: Tokenizer, pool: VariantPool,
                 policy: Policy, signals: SignalSource, config: RuntimeConfig, metrics: Metrics,
                 shadow: ShadowScorer | None = None) -> None:
        self.bundle_dir = bundle_dir
        self.manifest = manifest
        self.tokenizer = tokenizer
        self.pool = pool
        self.policy = policy
        self.signals = signals
        self.config = config
        self.metrics = metrics
        self.shadow = shadow  # idle-time scoring against the dense variant (edge_runtime.shadow), or None
        self.latency = LatencyTracker()
        self.power: EnergyMeter | None = None  # set by `open`
        self.context_length = manifest.model.context_length
        self.max_prompt_tokens = min(config.max_prompt_tokens or self.context_length - 1, self.context_length - 1)
        self.intake = Intake(tokenizer, manifest.model.vocab_size, self.context_length, self.max_prompt_tokens,
                             config.default_max_tokens, config.default_deadline_s)
        self.grammars = Grammars(tokenizer.json, manifest.model.vocab_size, sorted(tokenizer.eos_token_ids))
        self._service_s = 1.0  # EWMA of a request's service time, for Retry-After
        self.queue = RequestQueue(config.max_queue, retry_after=self._retry_after)
        self._ids = itertools.count(1)
        self._running: Job | None = None
        self._closed = False
        self.difficulty = load_estimator(bundle_dir, manifest)
        warn = tier_warning(manifest)
        if warn:
            log.warning(warn)
        self._tier_masks = {}  # tier -> [A] bool over variants and pairs, empty for an untiered bundle
        if tiered(manifest):
            self._tier_masks = {t: tier_mask(manifest, t) for t in TIERS}
        self._worker = threading.Thread(target=self._work, name="edge-runtime-worker", daemon=True)
        self._worker.start()

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, bundle_dir: str | os.PathLike[str], config: RuntimeConfig | None = None, *,
             policy: Policy | None = None, signals: SignalSource | None = None, manifest: Manifest | None = None,
             power: EnergyMeter | None | str = "auto", **overrides: Any) -> Runtime:
        """Validate the bundle, load the tokenizer and the preloaded variants, start the worker.

        Args:
            bundle_dir: the bundle directory.
            config: runtime settings (default `RuntimeConfig()`); `overrides` replace single fields,
                e.g. `Runtime.open(d, threads=2, memory_budget_mb=800)`.
            policy: anything with `decide(obs, allowed) -> Decision` (default: the bundle's policy
                behind the rule fallback, `edge_runtime.control.policy.load_policy`).
            signals: a `SignalSource` (default: `config.signals`).
            manifest: the bundle's manifest when the caller has already read and checked it
                (`edge-serve` does, before binding its port); else it is read and checked here.
            power: an `EnergyMeter` for each request's measured joules, None for none, or "auto":
                the board's own power source where one exists (`edge_runtime.control.power`).

        Raises:
            BundleError: unknown format, missing file, malformed manifest, or no variant that may
                run and loads (a preloaded variant that fails to load is fenced, not fatal).
            VariantError: `preload` names an unknown variant.
        """
        config = replace(config or RuntimeConfig(), **overrides)
        root = Path(bundle_dir)
        if manifest is None:
            manifest = read_manifest(root)
            check_files(root, manifest)
        tokenizer = Tokenizer.from_bundle(root, manifest)
        trim_heap()  # what parsing tokenizer.json freed, before the variants load
        metrics = Metrics()
        pool = VariantPool(root, manifest, threads=config.threads,
                           providers=list(config.providers) if config.providers else None,
                           memory_budget_mb=config.memory_budget_mb, allow_ungated=config.allow_ungated,
                           prefill_chunk=config.prefill_chunk, spin=config.spin, metrics=metrics,
                           tiered=tiered(manifest))
        if policy is None:
            try:
                policy = load_policy(root, manifest)
            except EdgeError as e:  # e.g. a bundle exported without cost measurements
                first = int(np.flatnonzero(pool.allowed())[0])
                log.error("the controller cannot be built (%s): every request goes to variant %r", e,
                          manifest.variants[first].name)
                policy = StaticPolicy(first)
        if signals is None:
            signals = StaticSource() if config.signals == "static" else SOURCES[config.signals]()
        shadow = ShadowScorer.open(config.shadow, root, manifest, tokenizer, pool, metrics.registry) \
            if config.shadow.enabled else None  # a bad redaction pattern is refused here, before the worker starts
        rt = cls(root, manifest, tokenizer, pool, policy, signals, config, metrics, shadow)
        rt.power = auto_meter() if power == "auto" else power  # type: ignore[assignment]
        try:
            rt._preload()
        except BaseException:
            rt.close(grace_s=0)
            raise
        log.info("opened %s: %d variants (%s), %d servable", root, len(manifest.variants),
                 ", ".join(manifest.names), int(pool.allowed().sum()))
        return rt

    def _preload(self) -> None:
        """Load the variants `config.preload` names; a failing one is fenced and logged, not fatal,
        unless nothing servable is left ("first" moves on to the next variant)."""
        pre, allowed = self.config.preload, self.pool.allowed()[: len(self.manifest.variants)]
        if pre == "none":
            return
        if pre in ("first", "all"):
            todo = [int(i) for i in np.flatnonzero(allowed)]
        else:
            todo = [self.variant_index(n) for n in ([pre] if isinstance(pre, str) else pre)]
        errors = []
        for index in todo:
            try:
                self.pool.get(index, capacity=256)
            except VariantError as e:
                errors.append(str(e))
                continue
            if pre == "first":
                return
        if not self.pool.allowed()[: len(self.manifest.variants)].any():
            raise BundleError(f"no variant of {str(self.bundle_dir)!r} loads: " + "; ".join(errors)
                              + " (re-export the bundle)")

    # ------------------------------------------------------------------ lookups

    @property
    def name(self) -> str:
        """The bundle's name (its directory name): the model id that lets the controller choose."""
        return self.bundle_dir.resolve().name

    def variant_index(self, name: str) -> int:
        """Index of variant `name` (VariantError for an unknown one)."""
        return self.manifest.index(name)

    def allowed(self) -> np.ndarray:
        return self.pool.allowed()

    def status(self) -> dict[str, Any]:
        """A snapshot for dashboards and `/status`."""
        device = self._read_signals()
        return {
            "bundle": str(self.bundle_dir),
            "queue_depth": self.queue.depth,
            "max_queue": self.queue.max_size,
            "running": self._running.id if self._running else None,
            "recent_ms_per_token": self.latency.value,
            "signals": device.__dict__,
            "shadow": self.shadow.status() if self.shadow is not None else None,
            "tier": self.tier(device),
            "memory_used_mb": round(self.pool.used_mb, 1),
            "memory_budget_mb": self.config.memory_budget_mb,
            "variants": [
                {"name": v.name, "loaded": i in self.pool.loaded, "allowed": bool(self.pool.allowed()[i]),
                 "why_not": self.pool.why_not(i), "gate": v.gate.status}
                for i, v in enumerate(self.manifest.variants)
            ],
            "pairs": [{"name": p.name, "verifier": p.verifier, "drafter": p.drafter,
                       "why_not": self.pool.why_not_pair(p.name)} for p in self.manifest.pairs],
        }

    # ------------------------------------------------------------------ requests

    def submit(self, prompt: str | None = None, *, messages: Sequence[dict[str, Any]] | None = None,
               prompt_ids: Sequence[int] | None = None, params: SamplingParams | None = None,
               variant: str | None = None, priority: int = 0, deadline_s: float | None = None,
               difficulty: float | None = None, sink: Callable[[Event], None] | None = None, stream: bool = True,
               constraint: Constraint | None = None, tools: Sequence[dict[str, Any]] | None = None,
               **sampling: Any) -> Handle:
        """Queue a request and return its `Handle` at once.

        Args:
            prompt / messages / prompt_ids: exactly one: raw text, chat messages, or token ids.
            params: sampling parameters; `sampling` keywords (max_tokens, temperature, top_k,
                top_p, seed, stop, ...) override single fields.
            variant: run this variant or speculative pair (a name), bypassing the controller.
            priority: higher is served first.
            deadline_s: seconds from now by which generation must have started (default:
                the config's); past it the request is rejected with `DeadlineExceeded`.
            difficulty: 0 easy .. 1 needs the dense model's quality (the observation's `hard`);
                None: the bundle's difficulty model estimates it from the prompt
                (`edge_runtime.control.difficulty`).
            sink: receives the request's `Event`s instead of the handle's own buffer.
            stream: send "text" events as tokens arrive; without them, a variant that fails
                mid-generation can always be retried on another one.
            constraint: a grammar the output must follow, from `self.grammars.compile...`
                (one per request: it holds the request's position in the grammar).
            tools: OpenAI tool objects, passed to the chat template as transformers passes them.

        Raises:
            RequestError: bad prompt or parameters. VariantError: unknown or unservable variant.
            Overloaded: the queue is full. Unavailable: the runtime is closing.
        """
        try:
            ids = self.intake.prompt(prompt, messages, prompt_ids, tools)
            params = self.intake.sampling(len(ids), params, **sampling)
            budget = self.intake.fields(0.0 if difficulty is None else difficulty, priority, deadline_s)
            pinned, pair = None, None
            if variant is not None and variant in self.pool.pairs:
                pair, pinned = variant, self.variant_index(self.pool.pairs[variant].verifier)
                why = self.pool.why_not_pair(variant)
                if why is not None:
                    raise VariantError(f"pair {variant!r} may not run: {why}; choose another or let the "
                                       f"controller choose (model {self.name!r})")
            elif variant is not None:
                pinned = self.variant_index(variant)
                why = self.pool.why_not(pinned)
                if why is not None:
                    raise VariantError(f"variant {variant!r} may not run: {why}; choose another or let the "
                                       f"controller choose (model {self.name!r})")
        except RequestError:
            self.metrics.rejected.labels("invalid").inc()
            raise
        if self._closed:
            self.metrics.rejected.labels("shutdown").inc()
            raise Unavailable("the runtime is closed")
        rid = f"req-{next(self._ids)}-{uuid.uuid4().hex[:8]}"
        handle = Handle(rid, sink, stream)
        text = prompt_text(prompt, messages)
        hard, _ = self.difficulty.estimate(self.tokenizer.decode(ids) if text is None else text, len(ids), difficulty)
        now = time.monotonic()
        job = Job(rid, ids, params, pinned, pair, hard, budget, now, handle, constraint, prompt, messages)
        try:
            handle.entry = self.queue.put(job, priority=priority, deadline=now + budget)
        except (Overloaded, Unavailable) as e:
            self.metrics.rejected.labels("overloaded" if not isinstance(e, Unavailable) else "shutdown").inc()
            raise
        self.metrics.queue_depth.set(self.queue.depth)
        return handle

    def generate(self, prompt: str | None = None, **kw: Any) -> Result:
        """Run one request to the end (blocking); see `submit` for the arguments."""
        return self.submit(prompt, stream=False, **kw).result()

    def stream(self, prompt: str | None = None, **kw: Any) -> Iterator[str]:
        """Text deltas as they are generated; see `submit`. Closing the iterator cancels the request.

        The request is queued (and checked) by this call, not at the first `next`.
        """
        return self._deltas(self.submit(prompt, **kw))

    def _deltas(self, handle: Handle) -> Iterator[str]:
        try:
            yield from handle
        finally:
            if not handle.done():
                self.cancel(handle)

    def chat(self, messages: Sequence[dict[str, Any]], **kw: Any) -> Result:
        """`generate` for chat messages through the bundle's chat template."""
        return self.generate(messages=messages, **kw)

    def cancel(self, handle: Handle) -> None:
        """Cancel a request: dropped if still queued, stopped after the current token if running."""
        handle.cancel()
        if handle.entry is not None and self.queue.remove(handle.entry):
            self.metrics.queue_depth.set(self.queue.depth)
            job: Job = handle.entry.item
            self._finish_cancelled(job)

    # ------------------------------------------------------------------ the controller

    def decide(self, prompt_tokens: int, max_tokens: int, deadline_s: float = math.inf, difficulty: float = 0.0,
               device: DeviceState | None = None) -> tuple[Decision, np.ndarray]:
        """The policy's decision for a request like this one, now: (Decision, observation)."""
        device = device or self._read_signals()
        state = RequestState(
            prompt_tokens=prompt_tokens,
            max_new_tokens=max_tokens,
            deadline_s=deadline_s,
            hard=difficulty,
            queue_depth=self.queue.depth,
            oldest_wait_frac=self.queue.oldest_wait_frac(),
            recent_ms_per_token=self.latency.value,
        )
        obs = observation.encode(device, state)
        allowed = self.pool.allowed()
        if not allowed.any():
            raise Unavailable("no variant can run: every variant failed its gate or was fenced; restart "
                              "after fixing the bundle")
        tiered = allowed & self._tier_masks.get(self.tier(device), allowed)
        allowed = tiered if tiered.any() else allowed  # nothing servable clears the tier: serve anyway
        try:
            d = self.policy.decide(obs, allowed)
        except Exception as e:  # the policy (even its fallback) must never take a request down
            log.error("policy failed (%s: %s): serving the densest allowed variant", type(e).__name__, e)
            d = None
        if not valid_choice(d, allowed):
            d = Decision(int(np.flatnonzero(allowed)[0]), "policy error -> densest allowed", source="fallback")
        elif not isinstance(d, Decision):  # a duck-typed policy of the caller's: its answer, typed once
            d = Decision(int(d.variant), str(d.reason), float(getattr(d, "latency_s", 0.0)))
        return d, obs

    def tier(self, device: DeviceState | None = None) -> str:
        """The floors tier in force: the operator's `config.tier`, or with `auto` the signals' (control.tiers)."""
        return select_tier(device or self._read_signals(), self.config.tier)

    def _read_signals(self) -> DeviceState:
        """The signal source's state, the power meter's latest reading as its measured draw.

        Without a reading, `power_w` stays what the source says (None for the built-in sources)
        and the encoder falls back to `modelled_power_w` (a simulated device's), else neutral.
        """
        try:
            state = self.signals.read()
        except Exception as e:  # a SignalSource should not raise; one that does must not crash serving
            log.error("signal source failed (%s): using defaults", e)
            state = DeviceState()
        watts = self.power.power_w if self.power is not None else None
        return state if watts is None else replace(state, power_w=watts)

    # ------------------------------------------------------------------ closing

    def close(self, grace_s: float = 30.0) -> None:
        """Refuse new requests, finish the queued and running ones within `grace_s`, then stop.

        Requests still waiting after the grace period fail with `Unavailable`; a running
        one is cancelled (it ends with finish_reason "cancelled").
        """
        if self._closed:
            return
        self._closed = True
        self.queue.close()
        self._worker.join(grace_s)
        if self._worker.is_alive():
            for entry in self.queue.drain():
                self.metrics.rejected.labels("shutdown").inc()
                entry.item.handle.emit(Event("error", error=Unavailable("the runtime shut down before this "
                                                                        "request started")))
            if self._running is not None:
                self._running.handle.cancel()
            self._worker.join(5.0)
        self.pool.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

