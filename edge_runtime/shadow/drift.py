"""Drift: rolling shadow scores per variant and dimension, held against their floors.

Each (variant, dimension) keeps the last `window` scores (0-1). Its mean is published on
`/metrics` and in `/status` with the floor beside it. When a window that holds at least
`min_samples` scores falls below its floor, the variant is reported once (a warning and
`edge_shadow_floor_crossings_total`) until it recovers. The cause is `parent` when the
dimension is a check the dense variant also fails below its floor (the traffic or the
parent changed, not the variant), else `own`; only an `own` crossing may fence the variant.

| metric | type | labels |
|---|---|---|
| `edge_shadow_agreement` | gauge | variant, dimension: the rolling mean (format, instruction, exact, prefix, token_f1) |
| `edge_shadow_floor` | gauge | variant, dimension: the floor beside it (absent where there is none) |
| `edge_shadow_samples` | gauge | variant, dimension: scores in the window |
| `edge_shadow_below_floor` | gauge | variant, dimension: 1 while below the floor |
| `edge_shadow_floor_crossings_total` | counter | variant, dimension, cause (own, parent) |
| `edge_shadow_jobs_total` | counter | outcome (queued, scored, preempted, dropped, failed) |
| `edge_shadow_busy_seconds_total` | counter | time the worker spent on shadow work |
| `edge_shadow_captured_total` | counter | regression cases written |
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from edge_runtime.metrics import PREFIX

log = logging.getLogger(__name__)

CHECKS = ("format", "instruction")  # the checks the dense variant is scored on too


class ShadowMetrics:
    """The shadow scorer's Prometheus series, on the runtime's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        p, r, vd = f"{PREFIX}_shadow", registry, ["variant", "dimension"]
        self.score = Gauge(f"{p}_agreement", "Rolling shadow score (0-1)", vd, registry=r)
        self.floor = Gauge(f"{p}_floor", "Floor of the shadow score", vd, registry=r)
        self.samples = Gauge(f"{p}_samples", "Scores in the rolling window", vd, registry=r)
        self.below = Gauge(f"{p}_below_floor", "1 while the rolling score is below its floor", vd, registry=r)
        self.crossings = Counter(f"{p}_floor_crossings", "Rolling score fell below its floor",
                                 [*vd, "cause"], registry=r)
        self.jobs = Counter(f"{p}_jobs", "Shadow jobs by outcome", ["outcome"], registry=r)
        self.busy = Counter(f"{p}_busy_seconds", "Worker time spent on shadow work", registry=r)
        self.captured = Counter(f"{p}_captured", "Regression cases written", registry=r)


class Drift:
    """Rolling windows of shadow scores, their floors, and what happens when one is crossed.

    Args:
        dense: the dense variant's name (its own check failures mark a `parent` cause).
        floors: dimension -> floor; dimensions without one are tracked but never reported.
        window, min_samples: see `ShadowConfig`.
        metrics: where the gauges go.
        on_own_crossing: called with (variant, reason) for an `own` crossing (fencing), if set.
    """

    def __init__(self, dense: str, floors: Mapping[str, float], window: int, min_samples: int,
                 metrics: ShadowMetrics, on_own_crossing: Callable[[str, str], None] | None = None) -> None:
        self.dense = dense
        self.floors = dict(floors)
        self.window = window
        self.min_samples = min_samples
        self.metrics = metrics
        self.on_own_crossing = on_own_crossing
        self._scores: dict[tuple[str, str], deque[float]] = {}
        self._below: set[tuple[str, str]] = set()
        self._lock = threading.Lock()  # /status reads from the HTTP thread pool

    def mean(self, variant: str, dimension: str) -> float | None:
        """The rolling mean, or None before the first score."""
        with self._lock:
            w = self._scores.get((variant, dimension))
            return sum(w) / len(w) if w else None

    def below(self, variant: str, dimension: str) -> bool:
        """True while (variant, dimension) is reported below its floor."""
        return (variant, dimension) in self._below

    def record(self, variant: str, scores: Mapping[str, float]) -> None:
        """Add one shadow-scored request's scores for `variant`, then check each against its floor."""
        for dim, value in scores.items():
            key = (variant, dim)
            with self._lock:
                w = self._scores.setdefault(key, deque(maxlen=self.window))
                w.append(float(value))
                mean, n = sum(w) / len(w), len(w)
            m = self.metrics
            m.score.labels(variant, dim).set(mean)
            m.samples.labels(variant, dim).set(n)
            floor = self.floors.get(dim)
            if floor is None:
                continue
            m.floor.labels(variant, dim).set(floor)
            if mean < floor and n >= self.min_samples and key not in self._below:
                self._cross(variant, dim, mean, floor, n)
            elif mean >= floor and key in self._below:
                self._below.discard(key)
                m.below.labels(variant, dim).set(0)
                log.info("shadow: %s %s is back at %.3f, above its floor %.3f", variant, dim, mean, floor)
            elif key not in self._below:
                m.below.labels(variant, dim).set(0)

    def _cross(self, variant: str, dim: str, mean: float, floor: float, n: int) -> None:
        self._below.add((variant, dim))
        parent = variant != self.dense and dim in CHECKS and self.below(self.dense, dim)
        cause = "parent" if parent else "own"
        self.metrics.below.labels(variant, dim).set(1)
        self.metrics.crossings.labels(variant, dim, cause).inc()
        why = (f"shadow: variant {variant!r} drifted below its {dim} floor: {mean:.3f} < {floor:.3f} over the last "
               f"{n} shadow-scored requests")
        if parent:
            log.warning("%s; the dense variant is below it too, so the traffic or the parent changed", why)
            return
        log.warning("%s%s", why, "" if variant == self.dense else " (dense is not: the variant's own drift)")
        if variant != self.dense and self.on_own_crossing is not None:
            self.on_own_crossing(variant, f"{dim} {mean:.3f} below its floor {floor:.3f} in shadow scoring")

    def snapshot(self) -> dict[str, dict[str, dict[str, Any]]]:
        """{variant: {dimension: {"score", "n", "floor", "below"}}} for `/status`."""
        with self._lock:
            items = [(k, sum(w) / len(w), len(w)) for k, w in self._scores.items() if w]
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for (variant, dim), mean, n in sorted(items):
            out.setdefault(variant, {})[dim] = {"score": round(mean, 4), "n": n, "floor": self.floors.get(dim),
                                                "below": (variant, dim) in self._below}
        return out
