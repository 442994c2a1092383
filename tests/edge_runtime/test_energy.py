"""Joules per request: measured power reaches `timings`, /metrics and the observation where a
source exists; where none does, the observation carries the modelled or the neutral draw."""

from __future__ import annotations

import pytest

from edge_runtime import Runtime, SamplingParams
from edge_runtime.control.observation import NEUTRAL_POWER_W, POWER_SCALE, DeviceState
from edge_runtime.control.power import EnergyMeter, Ina3221Source
from edge_runtime.control.signals import StaticSource
from edge_runtime.serve import schemas

from .control.test_power import NANO, NANO_TREE, ORIN_TREE, write


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


def observed_power(rt: Runtime) -> tuple[float, float]:
    """(power, power_measured) of the observation the worker encoded for one request."""
    r = rt.generate("hello", params=SamplingParams(max_tokens=1))
    return r.observation["power"], r.observation["power_measured"]


@pytest.mark.parametrize(
    ("tree", "watts", "measured"),
    [
        (NANO_TREE, 3.124, 1.0),  # JetPack 4 iio: POM_5V_IN
        (ORIN_TREE, 7.50656, 1.0),  # JetPack 5 hwmon: VDD_IN
        ({**NANO_TREE, NANO + "in_power0_input": "garbage"}, NEUTRAL_POWER_W, 0.0),  # a bad file: not measured
    ],
)
def test_observation_power_from_the_board(tiny_bundle, tmp_path, tree, watts, measured):
    meter = EnergyMeter(Ina3221Source(write(tmp_path, tree)))
    with Runtime.open(tiny_bundle, signals=StaticSource(DeviceState()), threads=1, power=meter) as rt:
        assert observed_power(rt) == (pytest.approx(watts / POWER_SCALE), measured)


@pytest.mark.parametrize(("state", "watts"),
                         [(DeviceState(modelled_power_w=9.0), 9.0), (DeviceState(), NEUTRAL_POWER_W)])
def test_observation_power_without_a_source_is_modelled_else_neutral(tiny_bundle, state, watts):
    with Runtime.open(tiny_bundle, signals=StaticSource(state), threads=1, power=None) as rt:
        assert observed_power(rt) == (pytest.approx(watts / POWER_SCALE), 0.0)
