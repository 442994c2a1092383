"""Profile replay through the real runtime (edge-sim's runtime mode), and the one observation
both of them encode."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from edge_runtime.control import observation
from edge_runtime.control.catalog import VariantCatalog
from edge_runtime.control.policy import StaticPolicy
from edge_runtime.control.power import EnergyMeter
from edge_runtime.control.signals import StaticSource
from edge_runtime.runtime import Runtime
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


class SteadySource:
    """A board's power meter that reads `watts` (here: the simulated device's draw)."""

    name, counter = "steady", False

    def __init__(self, watts: float) -> None:
        self.w = watts

    def watts(self) -> float:
        return self.w

    def joules(self) -> None:
        return None


@pytest.mark.parametrize("metered", [False, True])
def test_simulator_and_runtime_encode_the_same_vector(tiny_bundle, metered):
    device = DeviceConfig(battery_wh=20.0, battery_start=0.6, idle_w=3.0, active_w=12.0, power_meter=metered)
    rows = (TraceRequest(0.0, 40, 32, None, 0.3), TraceRequest(0.0, 80, 16, None, 0.9))  # the second waits
    profile = Profile(name="t", duration_s=30.0, device=device,
                      workload=WorkloadConfig(arrival="trace", deadline_s=10.0), trace_requests=rows)
    with Runtime.open(tiny_bundle, signals=StaticSource(), threads=1, preload="none", power=None) as rt:
        sim = Simulator(profile, VariantCatalog.from_manifest(rt.manifest))
        sim.step(0)  # the second request's decision comes as the first one's generation ends
        state, req = sim.device.state(), sim.current
        # the runtime's sources: sysfs-like signals, a meter where the board has one, its own latency
        rt.signals = StaticSource(replace(state, power_w=None))
        rt.power = EnergyMeter(SteadySource(state.modelled_power_w)) if metered else None
        if rt.power is not None:
            rt.power.sample()  # as the worker does before it reads the signals
        rt.latency.update(sim.recent_ms)
        _, served = rt.decide(req.prompt_tokens, req.max_new_tokens, req.arrival_s + req.deadline_s - sim.now, req.hard)
    simulated = sim.observation()
    assert np.array_equal(served, simulated)
    f = observation.describe(simulated)
    assert f["power"] == pytest.approx(15.0 / observation.POWER_SCALE) and f["power_measured"] == float(metered)
    assert f["recent_latency"] > 0 and f["battery_level"] < 0.6
