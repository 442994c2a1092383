"""The acceptance checks of benchmarks/results/controller.md (controller.evaluation.criteria)."""

import pytest

from controller.evaluation import criteria
from edge_runtime.sim.simulator import SimReport


def report(name: str, reward: float, quality: float, energy: float, serving: float, miss: float = 0.0,
           requests: int = 100) -> SimReport:
    return SimReport(profile="p", controller=name, reward=reward, mean_quality=quality, hard_quality=quality,
                     deadline_miss_rate=miss, p50_latency_s=1.0, p95_latency_s=2.0, energy_wh=energy,
                     battery_end=0.5, throttled_s=0.0, failed=0, requests=requests, variant_share={},
                     decision_reasons={}, serving_wh=serving)


def test_battery_energy_counts_what_serving_drew_not_the_idle_draw():
    # idle draw 10 Wh for everyone: total energy 0.93x dense, serving energy 0.6x
    results = {"static:dense": report("static:dense", 90, 1.0, 15.0, 5.0),
               "static:int8": report("static:int8", 95, 0.98, 13.0, 3.0),
               "rule": report("rule", 94, 0.99, 14.0, 4.0),
               "rl": report("rl", 96, 0.99, 13.0, 3.0)}
    c = criteria(results, "dense", battery=True)
    assert c["energy_ratio"] == pytest.approx(0.6) and c["total_energy_ratio"] == pytest.approx(13 / 15)
    assert c["battery_energy"] is True
    assert c["beats_static"] and c["beats_rule"]
    assert c["matched_static"] == "static:int8" and c["quality_ratio"] == pytest.approx(0.99 / 0.98)
    assert c["quality_gain"] is False


def test_battery_energy_needs_quality_and_a_battery():
    results = {"static:dense": report("static:dense", 90, 1.0, 15.0, 5.0),
               "rule": report("rule", 94, 0.99, 14.0, 4.0),
               "rl": report("rl", 80, 0.90, 12.0, 2.0)}  # cheap, but below 0.98 of dense's quality
    assert criteria(results, "dense", battery=True)["battery_energy"] is False
    assert criteria(results, "dense", battery=False)["battery_energy"] is None
    assert criteria(results, "dense")["beats_static"] is False


def test_deadline_check_applies_only_where_dense_misses_over_a_tenth():
    ok = {"static:dense": report("static:dense", 90, 1.0, 15.0, 5.0, miss=0.2),
          "rule": report("rule", 94, 0.99, 14.0, 4.0), "rl": report("rl", 96, 0.99, 13.0, 3.0, miss=0.01)}
    assert criteria(ok, "dense")["deadline"] is True
    ok["rl"] = report("rl", 96, 0.99, 13.0, 3.0, miss=0.05)
    assert criteria(ok, "dense")["deadline"] is False
    ok["static:dense"] = report("static:dense", 90, 1.0, 15.0, 5.0, miss=0.05)
    assert criteria(ok, "dense")["deadline"] is None
