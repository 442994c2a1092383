"""Profile replay through the real runtime (edge-sim's runtime mode)."""

from __future__ import annotations

from edge_runtime.control.catalog import VariantCatalog
from edge_runtime.control.policy import StaticPolicy
from edge_runtime.sim.profile import DeviceConfig, Profile, TraceRequest, WorkloadConfig
from edge_runtime.sim.replay import RuntimeBackend
from edge_runtime.sim.simulator import Simulator


def test_replay_runs_each_decision_on_the_runtime(runtime):
    rows = [(0.0, 40, 6, None, 0.0), (0.5, 300, 400, None, 1.0), (1.0, 10, 3, None, 0.2)]
    profile = Profile(name="t", duration_s=30.0, device=DeviceConfig(battery_wh=0.0),
                      workload=WorkloadConfig(arrival="trace", deadline_s=10.0),
                      trace_requests=tuple(TraceRequest(*r) for r in rows))
    backend = RuntimeBackend(runtime)
    sim = Simulator(profile, VariantCatalog.from_manifest(runtime.manifest), backend=backend)
    report = sim.run(StaticPolicy(1))
    assert [r.variant for r in backend.results] == ["dense-int8"] * 3
    assert [r.reason for r in backend.results] == ["pinned"] * 3
    assert [r.prompt_tokens for r in backend.results] == [40, 255, 10]  # clipped to the 256-token context
    assert [r.completion_tokens for r in backend.results] == [6, 1, 3]
    assert backend.results[0].cold_start and report.requests == 3 and report.failed == 0
