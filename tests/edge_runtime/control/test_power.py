"""Measured power sources, on sysfs trees recorded into tmp_path (this VM has none)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from edge_runtime.control.power import (
    BatterySource,
    EnergyMeter,
    Ina3221Source,
    RaplSource,
    auto_meter,
)


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text + "\n")
    return root


ORIN = "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3/"  # Jetson Orin, JetPack 5+
ORIN_TREE = {
    ORIN + "in1_label": "VDD_IN", ORIN + "in1_input": "5072", ORIN + "curr1_input": "1480",
    ORIN + "in2_label": "VDD_CPU_GPU_CV", ORIN + "in2_input": "5064", ORIN + "curr2_input": "392",
    "var/lib/nvpmodel/status": "pmode:0002",
}
NANO = "sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0/"  # Jetson Nano, JetPack 4
NANO_TREE = {
    NANO + "rail_name_0": "POM_5V_IN", NANO + "in_power0_input": "3124",
    NANO + "rail_name_1": "POM_5V_GPU", NANO + "in_power1_input": "412",
}


def rapl_tree(uj: int, pkg1: int | None = None) -> dict[str, str]:
    files = {"sys/class/powercap/intel-rapl:0/name": "package-0",
             "sys/class/powercap/intel-rapl:0/energy_uj": str(uj),
             "sys/class/powercap/intel-rapl:0/max_energy_range_uj": "262143328850",
             "sys/class/powercap/intel-rapl:0:0/energy_uj": "999999"}  # a subdomain: not counted again
    if pkg1 is not None:
        files["sys/class/powercap/intel-rapl:1/energy_uj"] = str(pkg1)
    return files


BATTERY = "sys/class/power_supply/BAT0/"


def test_jetson_hwmon_reads_the_input_rail_and_the_mode(tmp_path):
    src = Ina3221Source(write(tmp_path, ORIN_TREE))
    assert src.rails() == pytest.approx({"VDD_IN": 5.072 * 1.48, "VDD_CPU_GPU_CV": 5.064 * 0.392})
    assert src.watts() == pytest.approx(7.50656)  # VDD_IN alone: the board's input, not input + its parts
    assert src.mode() == "0002"


def test_jetson_iio_reads_milliwatts(tmp_path):
    src = Ina3221Source(write(tmp_path, NANO_TREE))
    assert src.watts() == pytest.approx(3.124)
    assert src.mode() is None


def test_rails_without_an_input_rail_are_summed(tmp_path):
    src = Ina3221Source(write(tmp_path, {NANO + "rail_name_0": "GPU", NANO + "in_power0_input": "1000",
                                         NANO + "rail_name_1": "CPU", NANO + "in_power1_input": "500"}))
    assert src.watts() == pytest.approx(1.5)


@pytest.mark.parametrize("garbage", ["", "n/a", "nan", "-5", "1e30", "\x00\x01"])
def test_garbage_in_a_power_file_reads_as_missing(tmp_path, garbage):
    bad = {**NANO_TREE, NANO + "in_power0_input": garbage, NANO + "in_power1_input": garbage}
    assert Ina3221Source(write(tmp_path / "j", bad)).watts() is None
    assert RaplSource(write(tmp_path / "r", {**rapl_tree(0), "sys/class/powercap/intel-rapl:0/energy_uj": garbage
                                             })).joules() is None
    assert BatterySource(write(tmp_path / "b", {BATTERY + "type": "Battery", BATTERY + "status": "Discharging",
                                                BATTERY + "power_now": garbage})).watts() is None


def test_unreadable_rapl_counter_is_missing(tmp_path):
    root = write(tmp_path, rapl_tree(100))
    (root / "sys/class/powercap/intel-rapl:0/energy_uj").chmod(0)  # root-only on patched kernels
    import os

    if os.access(root / "sys/class/powercap/intel-rapl:0/energy_uj", os.R_OK):
        pytest.skip("running as root: permissions do not apply")
    assert RaplSource(root).joules() is None


def test_rapl_sums_packages_and_unwinds_a_wrap(tmp_path):
    root = write(tmp_path, rapl_tree(262143000000, pkg1=5_000_000))
    src = RaplSource(root)
    assert src.joules() == 0.0  # the first read is the origin
    write(root, rapl_tree(1_000_000, pkg1=7_000_000))  # package 0 wrapped past its range
    assert src.joules() == pytest.approx((262143328850 - 262143000000 + 1_000_000 + 2_000_000) / 1e6)


def test_battery_power_while_discharging_only(tmp_path):
    root = write(tmp_path, {BATTERY + "type": "Battery", BATTERY + "status": "Discharging",
                            BATTERY + "current_now": "-1500000", BATTERY + "voltage_now": "11400000",
                            "sys/class/power_supply/AC/type": "Mains"})
    assert BatterySource(root).watts() == pytest.approx(17.1)
    write(root, {BATTERY + "status": "Charging"})
    assert BatterySource(root).watts() is None


def test_meter_integrates_watts_and_skips_gaps(tmp_path):
    root = write(tmp_path, NANO_TREE)
    clock = iter([0.0, 2.0, 3.0, 4.0]).__next__
    meter = EnergyMeter(Ina3221Source(root), clock=clock)
    assert meter.sample() == 0.0
    write(root, {NANO + "in_power0_input": "5124"})
    assert meter.sample() == pytest.approx(0.5 * (3.124 + 5.124) * 2.0)
    write(root, {NANO + "in_power0_input": "garbage"})
    assert meter.sample() is None and meter.power_w is None
    write(root, {NANO + "in_power0_input": "4000"})
    assert meter.sample() == pytest.approx(8.248)  # the gap (3 s -> 4 s) is not integrated


def test_meter_over_a_counter_reports_its_rate(tmp_path):
    root = write(tmp_path, rapl_tree(1_000_000))
    meter = EnergyMeter(RaplSource(root), clock=iter([10.0, 12.0, 13.0]).__next__)
    meter.sample()
    write(root, rapl_tree(31_000_000))
    assert meter.sample() == pytest.approx(30.0)
    assert meter.power_w == pytest.approx(15.0)
    write(root, {"sys/class/powercap/intel-rapl:0/energy_uj": "garbage"})
    assert meter.sample() is None and meter.power_w is None  # no stale rate left behind for the observation


def test_auto_meter_finds_the_board_or_nothing(tmp_path, caplog):
    assert isinstance(auto_meter(write(tmp_path / "jetson", ORIN_TREE)).source, Ina3221Source)
    assert isinstance(auto_meter(write(tmp_path / "laptop", rapl_tree(5))).source, RaplSource)
    with caplog.at_level(logging.INFO, logger="edge_runtime.control.power"):
        assert auto_meter(tmp_path / "empty") is None
    assert "no power source" in caplog.text
