"""Profile replay on a virtual clock: the one simulation behind `edge-sim` and `EdgeDevice-v0`.

The device serves one request at a time, first come first served. A *decision point* is a
moment when the device is free and a request waits: the controller picks a variant for the
request at the head of the queue, the generation backend says how much compute that takes,
and the device model (`edge_runtime.sim.device`) turns compute into time, energy and heat.
Between requests the device idles. Profile events fire at their time, also mid-request.

* A request still queued after its deadline is dropped (the runtime raises
  `DeadlineExceeded` for it): a deadline miss with quality 0.
* A request that finishes after its deadline is delivered late: its quality counts, and so
  does the miss.
* When the battery runs out, the request being generated and every later one fail and the
  run ends (`failed`).

Reward (per decision, summed over the run; weights in `RewardConfig`):

    r = quality * sum q(v, h)             over requests answered          (catalog Q4)
      - energy_per_wh * E_active          Wh that generating drew (above idle), from any source
      - battery_per_wh * E_active_battery of which from the battery
      - deadline_miss * misses            answered late or dropped
      - throttled_per_s * throttled time
      - exhaustion                        once, if the battery runs out
      - failed_request * failed           requests lost to the shutdown

The generation backend is swappable (`GenerationBackend`): `SimulatedBackend` prices a
request from the manifest's measured costs; a backend that runs the real runtime returns
measured times instead, and the rest of the replay stays as it is.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Protocol, runtime_checkable

import numpy as np

from edge_runtime.config import check_table, read_toml
from edge_runtime.control.catalog import VariantCatalog
from edge_runtime.control.observation import RequestState, encode
from edge_runtime.control.policy import Decision, Policy
from edge_runtime.control.tiers import select_tier
from edge_runtime.errors import PolicyError, ProfileError
from edge_runtime.sim.device import Device, RunResult
from edge_runtime.sim.profile import Profile
from edge_runtime.sim.workload import Request, generate_requests

HARD = 0.5  # a request with hard >= HARD counts as hard in `hard_quality`


# --------------------------------------------------------------------------- reward


@dataclass(frozen=True)
class RewardConfig:
    """Weights of the reward; one request answered by dense on time is worth `quality` = 1.

    Scale: a dense answer of ~70 new tokens on a 15 W laptop costs ~0.01 Wh, so
    `energy_per_wh + battery_per_wh` = 40 prices it at ~0.4, which is what makes a sparse
    variant worth it for easy requests on battery, and not for hard ones. Idle draw is the
    same whatever the controller picks, so the reward does not charge it; it still drains
    the battery, and running the battery flat is priced by `exhaustion` and `failed_request`.
    """

    quality: float = 1.0  # per unit of quality delivered (0-1 per request, dense = 1)
    energy_per_wh: float = 5.0  # per Wh generating draws above idle, any source (power bill, heat)
    battery_per_wh: float = 35.0  # extra per such Wh drawn from the battery (battery life)
    deadline_miss: float = 1.0  # per request answered late or dropped in the queue
    throttled_per_s: float = 0.05  # per second spent throttled (hot device, slow answers)
    exhaustion: float = 50.0  # once, when the battery runs out (the device shuts down)
    failed_request: float = 1.0  # per request lost to that shutdown

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "reward config") -> RewardConfig:
        """From a mapping; unknown keys, non-numbers and negative weights name the key (`ProfileError`)."""
        out = check_table(cls, data, where, ProfileError)
        for key, value in out.items():
            if value < 0:
                raise ProfileError(f"{where}.{key} must be >= 0 (it is a weight), got {value!r}")
        return cls(**out)

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str]) -> RewardConfig:
        return cls.from_dict(read_toml(path, "reward config", ProfileError), f"reward config {path}")

    def to_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# --------------------------------------------------------------------------- backends


@dataclass(frozen=True)
class Generation:
    """What serving one request with one variant takes."""

    work_s: float  # compute seconds at the bundle machine's speed (the device scales it)
    new_tokens: int


@runtime_checkable
class GenerationBackend(Protocol):
    """Turns (request, variant) into a `Generation`."""

    def generate(self, request: Request, variant: int) -> Generation: ...


class SimulatedBackend:
    """Prices a request from the manifest's measured costs (catalog C1); generates nothing."""

    def __init__(self, catalog: VariantCatalog) -> None:
        self.catalog = catalog

    def generate(self, request: Request, variant: int) -> Generation:
        return Generation(self.catalog.work_s(variant, request.prompt_tokens, request.max_new_tokens),
                          request.max_new_tokens)


@runtime_checkable
class Planner(Protocol):
    """A controller that reads the simulator itself (the lookahead oracle), not the observation."""

    def plan(self, sim: Simulator) -> Decision: ...


# --------------------------------------------------------------------------- results


@dataclass
class Totals:
    """Running sums of one replay (cheap to copy for lookahead)."""

    reward: float = 0.0
    serving_wh: float = 0.0  # energy drawn above idle: what serving the requests cost
    quality: float = 0.0  # sum over requests answered
    hard_quality: float = 0.0
    answered: int = 0
    late: int = 0
    expired: int = 0  # dropped in the queue after their deadline
    failed: int = 0  # lost to a shutdown
    died: bool = False
    per_variant: list[int] = field(default_factory=list)
    per_tier: dict[str, list[int]] = field(default_factory=dict)  # tier -> requests served per variant


@dataclass
class Trace:
    """Time series for plots: one point per decision, end of service and end of idling."""

    t: list[float] = field(default_factory=list)
    battery: list[float] = field(default_factory=list)
    temperature_c: list[float] = field(default_factory=list)
    queue: list[int] = field(default_factory=list)
    variant: list[int] = field(default_factory=list)  # -1 where no decision was made
    throttled: list[bool] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)  # per answered request
    reasons: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class SimReport:
    """The result of one replay; `summary()` is what `edge-sim --json` prints."""

    profile: str
    controller: str
    reward: float
    mean_quality: float
    hard_quality: float
    deadline_miss_rate: float
    p50_latency_s: float
    p95_latency_s: float
    energy_wh: float
    battery_end: float
    throttled_s: float
    failed: int
    requests: int
    variant_share: dict[str, float]
    decision_reasons: dict[str, int]
    trace: Trace | None = None
    tier_share: dict[str, dict[str, float]] = field(default_factory=dict)  # tier -> variant -> share
    tier_requests: dict[str, int] = field(default_factory=dict)  # tier -> requests served under it
    serving_wh: float = 0.0  # of `energy_wh`, the part above the device's idle draw: what serving cost

    SUMMARY_KEYS = ("reward", "mean_quality", "hard_quality", "deadline_miss_rate", "p50_latency_s",
                    "p95_latency_s", "energy_wh", "battery_end", "throttled_s", "failed", "variant_share",
                    "tier_requests", "tier_share", "serving_wh")

    def summary(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.SUMMARY_KEYS}


# --------------------------------------------------------------------------- simulator


class Simulator:
    """One replay of a profile; step it decision by decision or `run` it with a policy.

    Args:
        profile: device and workload.
        catalog: per-variant costs and quality from the bundle.
        reward: reward weights.
        requests: the arrivals; default `generate_requests(profile)` (the profile's seed).
        backend: the generation backend; default `SimulatedBackend(catalog)`.
        record: keep a `Trace` (plots, latencies); off for lookahead copies.
    """

    def __init__(
        self,
        profile: Profile,
        catalog: VariantCatalog,
        reward: RewardConfig | None = None,
        requests: Sequence[Request] | None = None,
        backend: GenerationBackend | None = None,
        record: bool = True,
    ) -> None:
        self.profile = profile
        self.catalog = catalog
        self.reward_config = reward or RewardConfig()
        self.requests = list(generate_requests(profile) if requests is None else requests)
        self.backend = backend or SimulatedBackend(catalog)
        self.record = record
        self.reset()

    # ---- state

    def reset(self) -> None:
        """Back to t = 0 and on to the first decision point."""
        self.device = Device(self.profile.device)
        self.head = 0  # next request to serve
        self.arrived = 0  # requests with arrival_s <= now
        self.event = 0  # next profile event
        self.recent_ms = 0.0  # decode ms per token of the last request, as measured
        self.done = False
        self.totals = Totals(per_variant=[0] * len(self.catalog))
        self.trace = Trace() if self.record else None
        self._last_obs = np.zeros(0, dtype=np.float32)
        self._apply_events()
        self._advance()

    def clone(self) -> Simulator:
        """An independent copy for lookahead (no trace; shares the immutable request list)."""
        new = copy.copy(self)
        new.device = self.device.copy()
        new.totals = copy.copy(self.totals)
        new.totals.per_variant = list(self.totals.per_variant)
        new.totals.per_tier = {k: list(v) for k, v in self.totals.per_tier.items()}
        new.trace = None
        new.record = False
        return new

    @property
    def tier(self) -> str:
        """The floors tier in force now: the profile's, or with `auto` the one the device's state calls for."""
        return select_tier(self.device.state(), self.profile.tier)

    @property
    def allowed(self) -> np.ndarray:
        """[V] bool: variants that may serve the current request (gate passed, clear the current tier)."""
        return self.catalog.in_tier(self.tier)

    @property
    def now(self) -> float:
        return self.device.t

    @property
    def current(self) -> Request:
        """The request waiting for a decision."""
        if self.done:
            raise RuntimeError("the replay is over; no request waits")
        return self.requests[self.head]

    def observation(self) -> np.ndarray:
        """`edge_runtime.control.observation.encode` of the current decision point, float32 [SIZE]."""
        if self.done:
            return self._last_obs
        req, t = self.requests[self.head], self.device.t
        depth = self.arrived - self.head - 1
        oldest = 0.0
        if depth > 0:
            nxt = self.requests[self.head + 1]
            oldest = (t - nxt.arrival_s) / nxt.deadline_s
        obs = encode(
            self.device.state(),
            RequestState(
                prompt_tokens=req.prompt_tokens,
                max_new_tokens=req.max_new_tokens,
                deadline_s=req.arrival_s + req.deadline_s - t,
                hard=req.hard,
                queue_depth=depth,
                oldest_wait_frac=oldest,
                recent_ms_per_token=self.recent_ms,
            ),
        )
        self._last_obs = obs
        return obs

    # ---- time

    def _apply_events(self) -> None:
        events = self.profile.events
        while self.event < len(events) and events[self.event].at_s <= self.device.t + 1e-9:
            self.device.apply(events[self.event].device)
            self.event += 1

    def _charge(self, res: RunResult) -> None:
        w = self.reward_config
        self.totals.serving_wh += res.active_wh
        self.totals.reward -= (w.energy_per_wh * res.active_wh + w.battery_per_wh * res.active_battery_wh
                               + w.throttled_per_s * res.throttled_s)

    def _run(self, max_s: float, work_s: float = 0.0) -> tuple[float, bool]:
        """Advance the device, firing events on the way; returns (work done, died)."""
        events, done, t_end = self.profile.events, 0.0, self.device.t + max_s
        while True:
            t_ev = events[self.event].at_s if self.event < len(events) else math.inf
            limit = min(t_end, t_ev) - self.device.t
            if work_s > 0 and work_s - done <= 1e-9:
                return done, False
            res = self.device.run(max(limit, 0.0), work_s - done if work_s > 0 else 0.0)
            self._charge(res)
            done += res.work_done_s
            if res.died:
                return done, True
            if self.device.t >= t_ev - 1e-9:
                self._apply_events()
                if not self.device.alive:
                    return done, True
                continue
            if work_s <= 0 or self.device.t >= t_end - 1e-9:
                return done, False

    def _point(self, variant: int = -1) -> None:
        tr, d = self.trace, self.device
        if tr is None:
            return
        tr.t.append(d.t)
        tr.battery.append(d.battery_level)
        tr.temperature_c.append(d.temperature_c)
        tr.queue.append(max(self.arrived - self.head, 0))
        tr.variant.append(variant)
        tr.throttled.append(d.throttled)

    def _shutdown(self) -> None:
        lost = len(self.requests) - self.head
        w, tot = self.reward_config, self.totals
        tot.failed += lost
        tot.died = True
        tot.reward -= w.exhaustion + w.failed_request * lost
        self.head = self.arrived = len(self.requests)
        self.done = True
        self._point()

    def _advance(self) -> None:
        """Idle (dropping expired requests) until a request waits, the run ends, or the device dies."""
        reqs, n = self.requests, len(self.requests)
        while not self.done:
            t = self.device.t
            while self.arrived < n and reqs[self.arrived].arrival_s <= t + 1e-9:
                self.arrived += 1
            while self.head < self.arrived and t > reqs[self.head].arrival_s + reqs[self.head].deadline_s:
                self.totals.expired += 1
                self.totals.reward -= self.reward_config.deadline_miss
                self.head += 1
            if self.head < self.arrived:
                return
            target = reqs[self.arrived].arrival_s if self.arrived < n else self.profile.duration_s
            if target <= t:
                if self.arrived >= n:
                    self.done = True
                    self._point()
                continue
            _, died = self._run(target - t)
            if died:
                self._shutdown()
                return
            self._point()

    # ---- decisions

    def step(self, variant: int) -> float:
        """Serve the current request with `variant`, idle to the next decision point; the reward."""
        if self.done:
            raise RuntimeError("the replay is over; call reset()")
        if not (0 <= variant < len(self.catalog)) or not self.allowed[variant]:
            raise PolicyError(f"variant {variant!r} is not allowed here (allowed: {np.flatnonzero(self.allowed).tolist()})")
        before = self.totals.reward
        tier = self.tier
        req = self.requests[self.head]
        self._point(variant)
        gen = self.backend.generate(req, variant)
        start = self.device.t
        _, died = self._run(math.inf, gen.work_s)
        if died:
            self._shutdown()
            return self.totals.reward - before
        elapsed = self.device.t - start
        latency = self.device.t - req.arrival_s
        late = bool(latency > req.deadline_s)
        q = self.catalog.quality(variant, req.hard)
        tot, w = self.totals, self.reward_config
        tot.reward += w.quality * q - (w.deadline_miss if late else 0.0)
        tot.quality += q
        tot.answered += 1
        tot.late += late
        tot.per_variant[variant] += 1
        tot.per_tier.setdefault(tier, [0] * len(self.catalog))[variant] += 1
        if req.hard >= HARD:
            tot.hard_quality += q
        if gen.work_s > 0:
            self.recent_ms = float(self.catalog.decode_ms[variant]) * elapsed / gen.work_s
        if self.trace is not None:
            self.trace.latencies.append(latency)
        self.head += 1
        self._point()
        self._advance()
        return self.totals.reward - before

    def run(self, controller: Policy | Planner, name: str = "") -> SimReport:
        """Replay to the end with `controller` deciding, then `report`."""
        while not self.done:
            if isinstance(controller, Planner):
                d = controller.plan(self)
            else:
                d = controller.decide(self.observation(), self.allowed)
            if self.trace is not None:
                key = d.source
                self.trace.reasons[key] = self.trace.reasons.get(key, 0) + 1
            self.step(d.variant)
        return self.report(name)

    # ---- results

    def report(self, controller: str = "") -> SimReport:
        tot, n = self.totals, len(self.requests)
        n_hard = sum(1 for r in self.requests if r.hard >= HARD)
        lat = np.asarray(self.trace.latencies if self.trace else [], dtype=np.float64)
        answered = max(tot.answered, 1)
        return SimReport(
            profile=self.profile.name,
            controller=controller,
            reward=float(tot.reward),
            mean_quality=float(tot.quality / n) if n else 0.0,
            hard_quality=float(tot.hard_quality / n_hard) if n_hard else 0.0,
            deadline_miss_rate=float((tot.late + tot.expired + tot.failed) / n) if n else 0.0,
            p50_latency_s=float(np.percentile(lat, 50)) if lat.size else 0.0,
            p95_latency_s=float(np.percentile(lat, 95)) if lat.size else 0.0,
            energy_wh=float(self.device.energy_wh),
            battery_end=float(self.device.battery_level),
            throttled_s=float(self.device.throttled_s),
            failed=int(tot.failed),
            requests=n,
            variant_share={name: c / answered for name, c in zip(self.catalog.names, tot.per_variant, strict=True) if c},
            decision_reasons=dict(self.trace.reasons) if self.trace else {},
            trace=self.trace,
            tier_share={t: {name: c / max(sum(counts), 1) for name, c in zip(self.catalog.names, counts, strict=True) if c}
                        for t, counts in tot.per_tier.items()},
            tier_requests={t: sum(counts) for t, counts in tot.per_tier.items()},
            serving_wh=float(tot.serving_wh),
        )
