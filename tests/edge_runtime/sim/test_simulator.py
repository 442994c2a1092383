from __future__ import annotations

import json
import time

import numpy as np
import pytest

from edge_runtime.control import observation
from edge_runtime.control.catalog import VariantCatalog
from edge_runtime.control.policy import RulePolicy, StaticPolicy
from edge_runtime.errors import PolicyError, ProfileError
from edge_runtime.sim.profile import (
    DeviceConfig,
    Event,
    Profile,
    TraceRequest,
    WorkloadConfig,
    load_profile,
)
from edge_runtime.sim.simulator import Generation, RewardConfig, SimReport, Simulator
from edge_runtime.sim.synthetic import synthetic_manifest

MAINS = DeviceConfig(battery_wh=0.0, idle_w=2.0, active_w=10.0, ambient_c=20.0, thermal_resistance_c_per_w=1.0)


@pytest.fixture(scope="module")
def cat() -> VariantCatalog:
    return VariantCatalog.from_manifest(synthetic_manifest("smollm2"))


def traced(rows, device=MAINS, duration=100.0, deadline=10.0, events=()) -> Profile:
    return Profile(name="t", duration_s=duration, device=device, events=tuple(events),
                   workload=WorkloadConfig(arrival="trace", deadline_s=deadline),
                   trace_requests=tuple(TraceRequest(*r) for r in rows))


def test_an_hour_simulates_in_well_under_a_second(cat):
    p = load_profile("laptop-battery")
    assert p.duration_s >= 3600
    t0 = time.perf_counter()
    r = Simulator(p, cat).run(RulePolicy(cat))
    assert time.perf_counter() - t0 < 1.0
    assert r.requests > 400


def test_one_request_reward_is_quality_minus_weighted_active_energy(cat):
    w = RewardConfig()
    sim = Simulator(traced([(1.0, 100, 50, None, 1.0)]), cat, w)
    assert sim.now == pytest.approx(1.0) and sim.current.hard == 1.0
    i = cat.names.index("dense-int4")
    work = cat.work_s(i, 100, 50)
    r = sim.step(i)
    active_wh = MAINS.active_w * work / 3600
    assert r == pytest.approx(cat.quality(i, 1.0) - w.energy_per_wh * active_wh)
    assert sim.done
    rep = sim.report("static")
    assert rep.p50_latency_s == pytest.approx(work)
    assert rep.energy_wh == pytest.approx(MAINS.idle_w * 100 / 3600 + active_wh)
    assert rep.serving_wh == pytest.approx(active_wh)  # the idle draw is not the request's
    assert rep.variant_share == {"dense-int4": 1.0}


def test_requests_past_their_deadline_in_the_queue_are_dropped(cat):
    rows = [(0.0, 256, 128, None, 0.0)] * 6  # six at once, 2 s deadline: dense takes ~4 s each
    sim = Simulator(traced(rows, deadline=2.0), cat)
    rep = sim.run(StaticPolicy(cat.dense))
    assert sim.totals.answered == 1 and sim.totals.expired == 5 and sim.totals.late == 1
    assert rep.deadline_miss_rate == 1.0
    assert rep.mean_quality == pytest.approx(1.0 / 6)


def test_battery_exhaustion_fails_the_rest_and_is_penalized(cat):
    dev = DeviceConfig(battery_wh=1.0, battery_start=0.002, idle_w=1.0, active_w=20.0)
    rows = [(float(t), 200, 128, None, 0.0) for t in range(0, 100, 10)]
    w = RewardConfig()
    sim = Simulator(traced(rows, device=dev), cat, w)
    rep = sim.run(StaticPolicy(cat.dense))
    assert sim.totals.died and rep.failed == 10 - sim.totals.answered
    assert rep.battery_end == 0.0
    assert rep.reward < -w.exhaustion
    assert rep.deadline_miss_rate == pytest.approx(rep.failed / 10)


def test_events_fire_mid_request(cat):
    dev = DeviceConfig(battery_wh=10.0, battery_start=0.5, plugged=True, idle_w=0.0, active_w=36.0)
    p = traced([(0.0, 10, 100, None, 0.0)], device=dev, events=[Event(1.0, device={"plugged": False})])
    sim = Simulator(p, cat)
    sim.step(cat.dense)  # 3.026 s of work; unplugged after 1 s
    assert sim.device.battery_used_wh == pytest.approx(36.0 * (cat.work_s(cat.dense, 10, 100) - 1.0) / 3600)


def test_observation_is_the_shared_encoder(cat):
    sim = Simulator(load_profile("bursty-traffic"), cat)
    for _ in range(50):
        obs = sim.observation()
        assert obs.shape == (observation.SIZE,) and obs.dtype == np.float32
        assert np.all((obs >= 0) & (obs <= 1))
        sim.step(cat.dense)
    d = observation.describe(sim.observation())
    assert d["plugged_in"] == 1.0 and d["battery_level"] == 1.0
    assert d["power_measured"] == 0.0 and d["power"] > 0  # the device model's draw
    jetson = observation.describe(Simulator(load_profile("jetson-battery-pack"), cat).observation())
    assert jetson["power_measured"] == 1.0  # a board with INA3221 rails: the same draw, as measured


def test_clone_is_independent(cat):
    sim = Simulator(load_profile("laptop-battery"), cat)
    sim.step(0)
    before = (sim.now, sim.head, sim.totals.reward, sim.device.charge_wh)
    c = sim.clone()
    for _ in range(5):
        c.step(1)
    assert (sim.now, sim.head, sim.totals.reward, sim.device.charge_wh) == before
    assert c.head == sim.head + 5 and c.trace is None


def test_step_rejects_a_failed_gate_variant(cat):
    sim = Simulator(load_profile("desk-plugged"), cat)
    with pytest.raises(PolicyError, match=r"variant 7 is not allowed"):
        sim.step(cat.names.index("magnitude-50"))


def test_report_summary_keys(cat):
    rep = Simulator(load_profile("commute-phone"), cat).run(RulePolicy(cat), "rule")
    assert isinstance(rep, SimReport)
    assert list(rep.summary()) == ["reward", "mean_quality", "hard_quality", "deadline_miss_rate", "p50_latency_s",
                                   "p95_latency_s", "energy_wh", "battery_end", "throttled_s", "failed",
                                   "variant_share", "tier_requests", "tier_share", "serving_wh"]
    assert sum(rep.variant_share.values()) == pytest.approx(1.0)
    # plain Python types: strict JSON, as manifests and results files need
    assert json.loads(json.dumps(rep.summary(), allow_nan=False)) == rep.summary()
    assert all(type(v) in (float, int, dict) for v in rep.summary().values())
    assert rep.decision_reasons and all(k == "rule" for k in rep.decision_reasons)


def test_backend_is_swappable(cat):
    class Slow:
        def generate(self, request, variant):
            return Generation(work_s=5.0, new_tokens=request.max_new_tokens)

    sim = Simulator(traced([(0.0, 10, 10, None, 0.0)]), cat, backend=Slow())
    sim.step(cat.dense)
    assert sim.report().p50_latency_s == pytest.approx(5.0)


def test_reward_config_rejects_unknown_and_negative_keys(tmp_path):
    with pytest.raises(ProfileError, match=r"unknown key 'energy'"):
        RewardConfig.from_dict({"energy": 1.0})
    with pytest.raises(ProfileError, match=r"deadline_miss must be >= 0"):
        RewardConfig.from_dict({"deadline_miss": -1})
    with pytest.raises(ProfileError, match=r"quality must be a number, got str"):
        RewardConfig.from_dict({"quality": "high"})
    path = tmp_path / "r.toml"
    path.write_text("deadline_miss = 3\n")
    assert RewardConfig.from_toml(path).deadline_miss == 3.0
