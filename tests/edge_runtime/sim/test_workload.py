from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from edge_runtime.sim.profile import Event, Profile, WorkloadConfig, load_profile
from edge_runtime.sim.workload import generate_requests


def test_poisson_count_and_ranges():
    p = Profile(name="p", duration_s=10000.0, workload=WorkloadConfig(rate_per_s=0.5, prompt_tokens=(10, 20),
                                                                       max_new_tokens=(5, 6), hard_fraction=0.25))
    reqs = generate_requests(p)
    assert len(reqs) == pytest.approx(5000, rel=0.05)
    assert all(10 <= r.prompt_tokens <= 20 and 5 <= r.max_new_tokens <= 6 for r in reqs)
    assert np.mean([r.hard for r in reqs]) == pytest.approx(0.25, abs=0.03)
    times = [r.arrival_s for r in reqs]
    assert times == sorted(times) and [r.id for r in reqs] == list(range(len(reqs)))


def test_same_seed_same_requests_other_seed_other_requests():
    p = load_profile("laptop-battery")
    assert generate_requests(p) == generate_requests(p)
    assert generate_requests(p, seed=1) != generate_requests(p)


def test_bursts_raise_the_rate_inside_windows():
    p = Profile(name="b", duration_s=12000.0, workload=WorkloadConfig(
        arrival="bursty", rate_per_s=0.01, burst_rate_per_s=2.0, burst_every_s=100.0, burst_len_s=10.0))
    reqs = generate_requests(p)
    inside = sum(1 for r in reqs if r.arrival_s >= 100 and r.arrival_s % 100 < 10)
    assert inside == pytest.approx(119 * 10 * 2.0, rel=0.05)
    assert len(reqs) - inside == pytest.approx(0.01 * (12000 - 1190), rel=0.3)


def test_events_change_the_rate():
    p = Profile(name="e", duration_s=2000.0, workload=WorkloadConfig(rate_per_s=0.0),
                events=(Event(1000.0, workload={"rate_per_s": 1.0}),))
    reqs = generate_requests(p)
    assert min(r.arrival_s for r in reqs) >= 1000.0
    assert len(reqs) == pytest.approx(1000, rel=0.1)


def test_trace_arrivals_fill_missing_columns():
    p = load_profile("trace-office")
    reqs = generate_requests(p)
    assert len(reqs) == len(p.trace_requests)
    assert [r.arrival_s for r in reqs] == [t.arrival_s for t in p.trace_requests]
    assert all(r.deadline_s == p.workload.deadline_s for r in reqs)
    p2 = replace(p, trace_requests=tuple(replace(t, hard=None) for t in p.trace_requests))
    assert {r.hard for r in generate_requests(p2)} == {0.0, 1.0}
