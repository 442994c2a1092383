from __future__ import annotations

import math
from dataclasses import replace

import pytest

from edge_runtime.sim.device import Device
from edge_runtime.sim.profile import DeviceConfig

COOL = dict(ambient_c=20.0, thermal_resistance_c_per_w=1.0, throttle_c=90.0)


def test_idle_battery_drain_is_idle_power_times_time():
    d = Device(DeviceConfig(battery_wh=10.0, battery_start=0.5, idle_w=3.6, active_w=10.0, **COOL))
    r = d.run(3600.0)
    assert r.energy_wh == pytest.approx(3.6) and r.battery_wh == pytest.approx(3.6)
    assert r.active_wh == 0
    assert d.battery_level == pytest.approx((5.0 - 3.6) / 10.0)


def test_active_energy_is_active_power_times_compute_time():
    d = Device(DeviceConfig(battery_wh=10.0, idle_w=2.0, active_w=10.0, speed=2.0, **COOL))
    r = d.run(math.inf, work_s=36.0)
    assert r.elapsed_s == pytest.approx(18.0)  # speed 2: twice as fast as the bundle's machine
    assert r.active_wh == pytest.approx(10.0 * 18.0 / 3600)
    assert r.energy_wh == pytest.approx(12.0 * 18.0 / 3600)


def test_plugged_in_stops_the_drain_and_charges_if_asked():
    d = Device(DeviceConfig(battery_wh=10.0, battery_start=0.5, plugged=True, idle_w=5.0, **COOL))
    d.run(3600.0)
    assert d.battery_level == pytest.approx(0.5)
    d.apply({"charge_w": 2.0})
    d.run(3600.0)
    assert d.battery_level == pytest.approx(0.7)
    d.apply({"plugged": False})
    d.run(360.0)
    assert d.battery_level == pytest.approx(0.7 - 0.5 / 10.0)


def test_mains_device_never_drains():
    d = Device(DeviceConfig(battery_wh=0.0, idle_w=50.0, **COOL))
    d.run(36000.0)
    assert d.alive and d.battery_level == 1.0 and d.plugged


def test_first_order_thermal_response():
    cfg = DeviceConfig(idle_w=10.0, active_w=0.0, ambient_c=20.0, thermal_resistance_c_per_w=2.0,
                       thermal_time_constant_s=100.0, throttle_c=90.0, start_c=20.0)
    d = Device(cfg)
    d.run(100.0)
    # T(t) = T_inf + (T0 - T_inf) exp(-t / tau), T_inf = 20 + 2 * 10
    assert d.temperature_c == pytest.approx(40.0 - 20.0 * math.exp(-1.0))


def test_throttling_slows_compute_with_hysteresis():
    cfg = DeviceConfig(idle_w=0.0, active_w=20.0, ambient_c=40.0, thermal_resistance_c_per_w=3.0,
                       thermal_time_constant_s=10.0, throttle_c=80.0, throttle_hysteresis_c=2.0,
                       throttle_speed=0.5, start_c=79.0)
    hot = Device(cfg)
    r = hot.run(math.inf, work_s=100.0)
    cold = Device(DeviceConfig(idle_w=0.0, active_w=20.0, ambient_c=0.0, thermal_resistance_c_per_w=0.1,
                               throttle_c=80.0))
    r_cold = cold.run(math.inf, work_s=100.0)
    assert r_cold.elapsed_s == pytest.approx(100.0) and r_cold.throttled_s == 0
    assert r.throttled_s > 50.0 and r.elapsed_s > 150.0  # mostly at half speed
    assert 77.0 < hot.temperature_c < 81.0  # oscillates inside the hysteresis band
    # energy per unit of work is unchanged by throttling (power scales with speed)
    assert r.active_wh == pytest.approx(r_cold.active_wh)


def test_battery_at_zero_shuts_down():
    d = Device(DeviceConfig(battery_wh=1.0, battery_start=0.01, idle_w=1.0, active_w=35.0, **COOL))
    r = d.run(math.inf, work_s=100.0)
    assert r.died and not d.alive
    assert r.elapsed_s == pytest.approx(0.01 * 3600 / 36.0)
    assert d.battery_level == 0.0
    assert d.run(10.0).elapsed_s == 0.0  # a dead device does nothing


def test_event_sets_battery_and_copy_is_independent():
    d = Device(DeviceConfig(battery_wh=10.0, battery_start=0.5, **COOL))
    c = d.copy()
    d.apply({"battery_start": 0.9})
    assert d.battery_level == pytest.approx(0.9) and c.battery_level == pytest.approx(0.5)


def test_state_reports_the_latest_draw_as_modelled_unless_the_board_has_a_meter():
    cfg = DeviceConfig(idle_w=2.0, active_w=10.0, throttle_speed=0.5, **COOL)
    d = Device(cfg)
    assert (d.state().power_w, d.state().modelled_power_w) == (None, 2.0)  # idle before the first segment
    d.run(math.inf, work_s=5.0)
    assert (d.state().power_w, d.state().modelled_power_w) == (None, 12.0)  # generating just ended
    d.run(10.0)
    assert d.state().modelled_power_w == 2.0
    d.throttled = True
    d.temperature_c = cfg.throttle_c + 10.0  # throttled through the whole run
    d.run(math.inf, work_s=1.0)
    assert d.state().modelled_power_w == pytest.approx(2.0 + 10.0 * 0.5)  # (D2) at throttled speed
    metered = Device(replace(cfg, power_meter=True))
    assert (metered.state().power_w, metered.state().modelled_power_w) == (2.0, 2.0)
