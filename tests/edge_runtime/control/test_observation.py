"""The observation encoder's power features (version 2): measured, else modelled, else neutral."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge_runtime.control import observation
from edge_runtime.control.observation import (
    NEUTRAL_POWER_W,
    POWER_SCALE,
    DeviceState,
    RequestState,
    board_power,
    encode,
)
from edge_runtime.sim.profile import DeviceConfig

REQUEST = RequestState(prompt_tokens=100, max_new_tokens=64, deadline_s=8.0)


def power_features(device: DeviceState) -> tuple[float, float]:
    f = observation.describe(encode(device, REQUEST))
    return f["power"], f["power_measured"]


def test_version_2_appends_the_power_features():
    assert observation.OBSERVATION_VERSION == 2
    assert observation.FEATURES[-2:] == ("power", "power_measured") and observation.SIZE == 14


@pytest.mark.parametrize(
    ("device", "watts", "measured"),
    [
        (DeviceState(power_w=12.5), 12.5, True),
        (DeviceState(power_w=12.5, modelled_power_w=20.0), 12.5, True),  # a reading beats the model
        (DeviceState(modelled_power_w=20.0), 20.0, False),
        (DeviceState(), NEUTRAL_POWER_W, False),
        (DeviceState(power_w=0.0), 0.0, True),  # zero is a reading, not a missing one
    ],
)
def test_measured_else_modelled_else_neutral(device, watts, measured):
    assert board_power(device) == (pytest.approx(watts), measured)
    assert power_features(device) == (pytest.approx(watts / POWER_SCALE), float(measured))


@pytest.mark.parametrize("garbage", [math.nan, math.inf, -3.0])
def test_a_garbage_reading_is_not_measured(garbage):
    assert power_features(DeviceState(power_w=garbage, modelled_power_w=10.0)) == (
        pytest.approx(10.0 / POWER_SCALE), 0.0)
    assert power_features(DeviceState(power_w=garbage, modelled_power_w=garbage)) == (
        pytest.approx(NEUTRAL_POWER_W / POWER_SCALE), 0.0)


def test_draws_beyond_the_scale_clip_and_the_vector_stays_in_range():
    obs = encode(DeviceState(power_w=4 * POWER_SCALE), REQUEST)
    assert obs[observation.FEATURES.index("power")] == 1.0
    assert obs.shape == (observation.SIZE,) and np.all((obs >= 0) & (obs <= 1))


def test_neutral_power_is_the_device_model_default_idle_draw():
    assert NEUTRAL_POWER_W == DeviceConfig().idle_w
