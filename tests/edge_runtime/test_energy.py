"""Joules per request: measured power reaches `timings` and /metrics where a source exists."""

from __future__ import annotations

from edge_runtime import Runtime, SamplingParams
from edge_runtime.control.observation import DeviceState
from edge_runtime.control.power import EnergyMeter, Ina3221Source
from edge_runtime.control.signals import StaticSource
from edge_runtime.serve import schemas

from .control.test_power import NANO_TREE, write


def test_measured_energy_in_timings_and_metrics(tiny_bundle, tmp_path):
    meter = EnergyMeter(Ina3221Source(write(tmp_path, NANO_TREE)))  # a steady 3.124 W board
    with Runtime.open(tiny_bundle, signals=StaticSource(DeviceState()), threads=1, power=meter) as rt:
        r = rt.generate("hello", params=SamplingParams(max_tokens=4))
        metrics = rt.metrics.export().decode()
    assert 0 < r.timings.energy_j <= 3.124 * r.timings.total_s
    assert schemas.timings(r)["energy_j"] == r.timings.energy_j
    assert f'edge_energy_joules_total{{variant="{r.variant}"}} {r.timings.energy_j}' in metrics
    assert "edge_signal_power_watts 3.124" in metrics


def test_no_power_source_means_no_energy_and_no_failure(tiny_bundle):
    with Runtime.open(tiny_bundle, signals=StaticSource(DeviceState()), threads=1, power=None) as rt:
        r = rt.generate("hello", params=SamplingParams(max_tokens=2))
        metrics = rt.metrics.export().decode()
    assert r.timings.energy_j is None and "energy_j" not in schemas.timings(r)
    assert "edge_energy_joules_total{" not in metrics and "edge_signal_power_watts NaN" in metrics
