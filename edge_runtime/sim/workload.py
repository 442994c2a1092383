"""Requests over time, drawn from a profile's `[workload]` (and its events).

Arrival processes (the rate is piecewise constant; `[[events]]` may change it):

* `poisson`: a Poisson process with `rate_per_s`.
* `bursty`: `rate_per_s`, raised to `burst_rate_per_s` for `burst_len_s` at the start of every
  `burst_every_s` window (the first burst at `burst_every_s`).
* `trace`: the CSV's arrival times; columns it lacks are drawn like the others.

On each constant-rate piece of length L, the count is Poisson(rate * L) and the times are
uniform on the piece, which is the same process as exponential gaps and vectorizes.
Per request: prompt and new-token counts uniform on the inclusive ranges, `deadline_s` from
arrival, `hard` = 1 with probability `hard_fraction` (else 0), all with the workload values
in force at its arrival time. Requests are generated up front; the same seed gives the same
list.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from edge_runtime.sim.profile import Profile, WorkloadConfig


@dataclass(frozen=True)
class Request:
    """One generation request as the simulator sees it."""

    id: int
    arrival_s: float
    prompt_tokens: int
    max_new_tokens: int
    deadline_s: float  # budget from arrival
    hard: float  # 0 easy .. 1 needs dense quality


def _workload_pieces(profile: Profile) -> list[tuple[float, float, WorkloadConfig]]:
    """[(start, end, workload in force)] covering [0, duration_s]."""
    wl, t, out = profile.workload, 0.0, []
    for ev in profile.events:
        if ev.workload:
            if ev.at_s > t:
                out.append((t, ev.at_s, wl))
            wl, t = replace(wl, **ev.workload), ev.at_s
    out.append((t, profile.duration_s, wl))
    return out


def _rate_pieces(start: float, end: float, wl: WorkloadConfig) -> list[tuple[float, float, float]]:
    """[(start, end, rate)] for one workload piece, bursts split out."""
    if wl.arrival != "bursty" or wl.burst_len_s <= 0:
        return [(start, end, wl.rate_per_s)]
    every, out, t = wl.burst_every_s, [], start
    for k in range(max(1, int(start // every)), int(end // every) + 1):
        b0, b1 = max(k * every, t), min(k * every + wl.burst_len_s, end)
        if b1 <= b0:
            continue
        if b0 > t:
            out.append((t, b0, wl.rate_per_s))
        out.append((b0, b1, wl.burst_rate_per_s))
        t = b1
    if t < end:
        out.append((t, end, wl.rate_per_s))
    return out


def _sample(rng: np.random.Generator, n: int, wl: WorkloadConfig) -> tuple[np.ndarray, ...]:
    prompt = rng.integers(wl.prompt_tokens[0], wl.prompt_tokens[1] + 1, size=n)
    new = rng.integers(wl.max_new_tokens[0], wl.max_new_tokens[1] + 1, size=n)
    hard = (rng.random(n) < wl.hard_fraction).astype(np.float64)
    return prompt, new, hard


def generate_requests(profile: Profile, seed: int | None = None) -> list[Request]:
    """All requests of one run of `profile`, sorted by arrival (`seed` defaults to the profile's)."""
    rng = np.random.default_rng(profile.seed if seed is None else seed)
    pieces = _workload_pieces(profile)

    def workload_at(t: float) -> WorkloadConfig:
        for a, b, wl in pieces:
            if a <= t < b:
                return wl
        return pieces[-1][2]

    out: list[Request] = []
    if profile.workload.arrival == "trace":
        for i, row in enumerate(profile.trace_requests):
            wl = workload_at(row.arrival_s)
            p, n, h = _sample(rng, 1, wl)
            out.append(Request(
                id=i,
                arrival_s=row.arrival_s,
                prompt_tokens=row.prompt_tokens if row.prompt_tokens is not None else int(p[0]),
                max_new_tokens=row.max_new_tokens if row.max_new_tokens is not None else int(n[0]),
                deadline_s=row.deadline_s if row.deadline_s is not None else wl.deadline_s,
                hard=row.hard if row.hard is not None else float(h[0]),
            ))
        return out
    for a, b, wl in pieces:
        for r0, r1, rate in _rate_pieces(a, b, wl):
            n = int(rng.poisson(rate * (r1 - r0)))
            if n == 0:
                continue
            times = np.sort(rng.uniform(r0, r1, size=n))
            prompt, new, hard = _sample(rng, n, wl)
            for t, p, m, h in zip(times, prompt, new, hard, strict=True):
                out.append(Request(len(out), float(t), int(p), int(m), wl.deadline_s, float(h)))
    return out
