"""Signal sources: fake sysfs trees, psutil without sensors, simulated sources, defaults."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from edge_runtime.control import signals as S
from edge_runtime.control.observation import DeviceState


def write(root: Path, rel: str, text: str) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text + "\n")


def laptop(root: Path, capacity: int = 42, status: str = "Discharging", ac: str = "0", temp: int = 61000) -> Path:
    write(root, "class/power_supply/BAT0/type", "Battery")
    write(root, "class/power_supply/BAT0/present", "1")
    write(root, "class/power_supply/BAT0/capacity", str(capacity))
    write(root, "class/power_supply/BAT0/status", status)
    write(root, "class/power_supply/AC/type", "Mains")
    write(root, "class/power_supply/AC/online", ac)
    write(root, "class/thermal/thermal_zone0/type", "x86_pkg_temp")
    write(root, "class/thermal/thermal_zone0/temp", str(temp))
    write(root, "class/thermal/thermal_zone0/trip_point_0_type", "critical")
    write(root, "class/thermal/thermal_zone0/trip_point_0_temp", "105000")
    write(root, "class/thermal/thermal_zone0/trip_point_1_type", "passive")
    write(root, "class/thermal/thermal_zone0/trip_point_1_temp", "85000")
    return root


def jetson(root: Path, temp: int = 48500) -> Path:
    """Mains-powered board: no battery, several zones, one probe unplugged."""
    for i, (name, t) in enumerate([("CPU-therm", temp), ("GPU-therm", temp - 2000), ("PMIC-Die", 255000)]):
        write(root, f"class/thermal/thermal_zone{i}/type", name)
        write(root, f"class/thermal/thermal_zone{i}/temp", str(t))
    write(root, "class/thermal/thermal_zone0/trip_point_0_type", "passive")
    write(root, "class/thermal/thermal_zone0/trip_point_0_temp", "97000")
    write(root, "class/thermal/cooling_device0/type", "cpufreq-cpu0")
    write(root, "class/thermal/cooling_device0/cur_state", "0")
    return root


def load0() -> float:
    return 0.25


def test_sysfs_laptop_on_battery(tmp_path):
    s = S.SysfsSource(laptop(tmp_path), load=load0).read()
    assert s == DeviceState(battery_level=0.42, plugged_in=False, temperature_c=61.0, throttle_c=85.0,
                            throttled=False, cpu_load=0.25)


def test_sysfs_plugged_and_hot(tmp_path):
    s = S.SysfsSource(laptop(tmp_path, 90, "Charging", "1", 88000), load=load0).read()
    assert s.plugged_in and s.battery_level == 0.9 and s.throttled and s.temperature_c == 88.0


def test_sysfs_plugged_from_status_without_mains_node(tmp_path):
    write(tmp_path, "class/power_supply/battery/type", "Battery")
    write(tmp_path, "class/power_supply/battery/capacity", "77")
    write(tmp_path, "class/power_supply/battery/status", "Full")
    s = S.SysfsSource(tmp_path, load=load0).read()
    assert s.plugged_in and s.battery_level == 0.77


def test_sysfs_energy_instead_of_capacity(tmp_path):
    write(tmp_path, "class/power_supply/BAT1/type", "Battery")
    write(tmp_path, "class/power_supply/BAT1/energy_now", "25000000")
    write(tmp_path, "class/power_supply/BAT1/energy_full", "50000000")
    assert S.SysfsSource(tmp_path, load=load0).read().battery_level == 0.5


def test_sysfs_jetson_no_battery_ignores_bad_probe(tmp_path, caplog):
    caplog.set_level(logging.INFO, "edge_runtime.control.signals")
    src = S.SysfsSource(jetson(tmp_path), load=load0)
    s = src.read()
    assert s.battery_level == 1.0 and s.plugged_in  # mains
    assert s.temperature_c == 48.5 and s.throttle_c == 97.0 and not s.throttled
    src.read()
    assert caplog.text.count("no battery") == 1  # one line, not one per read


def test_sysfs_cooling_device_means_throttled(tmp_path):
    jetson(tmp_path)
    write(tmp_path, "class/thermal/cooling_device0/cur_state", "3")
    assert S.SysfsSource(tmp_path, load=load0).read().throttled


def test_sysfs_empty_tree_reads_defaults(tmp_path, caplog):
    caplog.set_level(logging.INFO, "edge_runtime.control.signals")
    src = S.SysfsSource(tmp_path / "nothing", load=load0)
    assert not src.has_sensors()
    assert src.read() == S.DEFAULTS.__class__(cpu_load=0.25)
    assert "no battery" in caplog.text and "no thermal zone" in caplog.text


def test_sysfs_garbage_values_do_not_crash(tmp_path):
    write(tmp_path, "class/power_supply/BAT0/type", "Battery")
    write(tmp_path, "class/power_supply/BAT0/capacity", "lots")
    write(tmp_path, "class/thermal/thermal_zone0/temp", "hot")
    (tmp_path / "class/thermal/thermal_zone1").mkdir(parents=True)
    assert S.SysfsSource(tmp_path, load=load0).read().temperature_c == S.DEFAULTS.temperature_c


def test_psutil_without_sensors(monkeypatch, caplog):
    caplog.set_level(logging.INFO, "edge_runtime.control.signals")
    monkeypatch.setattr(S.psutil, "sensors_battery", lambda: None, raising=False)
    monkeypatch.setattr(S.psutil, "sensors_temperatures", lambda: {}, raising=False)
    s = S.PsutilSource(load=load0).read()
    assert s == DeviceState(cpu_load=0.25)
    assert "no battery reported by psutil" in caplog.text


def test_psutil_with_sensors(monkeypatch):
    monkeypatch.setattr(S.psutil, "sensors_battery",
                        lambda: SimpleNamespace(percent=15.0, power_plugged=False, secsleft=600), raising=False)
    entry = SimpleNamespace(label="Package", current=71.0, high=82.0, critical=100.0)
    monkeypatch.setattr(S.psutil, "sensors_temperatures", lambda: {"coretemp": [entry]}, raising=False)
    s = S.PsutilSource(load=load0).read()
    assert (s.battery_level, s.plugged_in, s.temperature_c, s.throttle_c, s.throttled) == (0.15, False, 71.0, 82.0,
                                                                                           False)


def test_psutil_raising_sensors_degrade(monkeypatch):
    def boom():
        raise OSError("ACPI table broken")

    monkeypatch.setattr(S.psutil, "sensors_battery", boom, raising=False)
    monkeypatch.setattr(S.psutil, "sensors_temperatures", boom, raising=False)
    assert S.PsutilSource(load=boom).read() == DeviceState()


def test_callable_source_and_failures():
    states = iter([DeviceState(battery_level=0.3), "garbage"])
    src = S.CallableSource(lambda: next(states))
    assert src.read().battery_level == 0.3
    assert src.read().battery_level == 0.3  # a bad reading repeats the last good one
    assert S.StaticSource(DeviceState(throttled=True)).read().throttled


def test_auto_source_prefers_sysfs(tmp_path):
    assert isinstance(S.auto_source(laptop(tmp_path)), S.SysfsSource)
    assert isinstance(S.auto_source(tmp_path / "none"), S.PsutilSource)
    assert isinstance(S.StaticSource(), S.SignalSource)


def test_latency_tracker():
    t = S.LatencyTracker(alpha=0.5)
    t.update(10.0)
    t.update(20.0)
    t.update(0.0)  # ignored
    assert t.value == pytest.approx(15.0)
