"""Measured power: what the board itself reports, turned into joules per request.

Where the modelled device (`edge_runtime.sim.device`) computes power from constants, a real
board can measure it. Sources, each reading files under a filesystem `root` (a recorded
tree in tests):

* `Ina3221Source`: a Jetson's INA3221 power monitors. JetPack 5+ exposes them through hwmon
  (`sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*/in{N}_label`, `in{N}_input` mV,
  `curr{N}_input` mA), JetPack 4 through the `ina3221x` iio driver
  (`sys/bus/i2c/drivers/ina3221x/*/iio:device*/rail_name_{N}`, `in_power{N}_input` mW).
  The board's input rail (`VDD_IN`, `POM_5V_IN`) when one is named so, else the sum of
  the rails. The nvpmodel power mode (`var/lib/nvpmodel/status`, "pmode:0002") is reported
  beside it.
* `RaplSource`: x86 RAPL package counters (`sys/class/powercap/intel-rapl:N/energy_uj`,
  wrapping at `max_energy_range_uj`), summed over packages: CPU package energy, not the
  screen or the rest of a laptop. Many kernels let only root read them (CVE-2020-8694):
  then the source is missing.
* `BatterySource`: `sys/class/power_supply/<battery>/power_now` (uW), or `current_now` (uA)
  x `voltage_now` (uV), while the battery discharges; on a charger the battery's flow is
  not the device's draw, so it reads as missing. (psutil reports no watts.)

A file that is absent, unreadable or holds garbage makes the source report missing for
that read (None), never raise. `EnergyMeter` integrates a source into a cumulative joule
count: counters (RAPL) exactly, instantaneous watts by the trapezoid rule between samples
(the runtime samples at a request's start and end, so a request's joules are its mean of
two readings times its duration: coarse for requests whose power swings).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

MAX_W = 10_000.0  # readings outside [0, MAX_W] are garbage, not power
INPUT_RAILS = ("VDD_IN", "POM_5V_IN")  # a Jetson's whole-board input rail, by module generation


class PowerSource(Protocol):
    """Reports either instantaneous watts or a cumulative joule counter (the other is None)."""

    name: str
    counter: bool  # True: `joules()` is meaningful; False: `watts()` is

    def watts(self) -> float | None: ...

    def joules(self) -> float | None: ...


def _number(path: Path) -> float | None:
    """The file's number, or None for a missing, unreadable or non-numeric file."""
    try:
        value = float(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return value if value == value and abs(value) != float("inf") else None  # NaN, inf: garbage


def _text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _plausible(w: float | None) -> float | None:
    return w if w is not None and 0.0 <= w <= MAX_W else None


class Ina3221Source:
    """A Jetson's INA3221 rails (hwmon or the older iio driver); see the module docstring."""

    name = "ina3221"
    counter = False

    def __init__(self, root: str | os.PathLike[str] = "/") -> None:
        self.root = Path(root)

    def rails(self) -> dict[str, float | None]:
        """Rail name -> watts now (None: the rail's files are unreadable or hold garbage)."""
        out: dict[str, float | None] = {}
        drivers = self.root / "sys/bus/i2c/drivers"
        for label in sorted(drivers.glob("ina3221/*/hwmon/hwmon*/in*_label")):
            n = label.name[2:-len("_label")]
            mv, ma = _number(label.with_name(f"in{n}_input")), _number(label.with_name(f"curr{n}_input"))
            name = _text(label)
            if name:
                out[name] = _plausible(mv * ma / 1e6) if mv is not None and ma is not None else None
        for rail in sorted(drivers.glob("ina3221x/*/iio:device*/rail_name_*")):
            n = rail.name.rsplit("_", 1)[1]
            mw, name = _number(rail.with_name(f"in_power{n}_input")), _text(rail)
            if name:
                out[name] = _plausible(mw / 1000.0) if mw is not None else None
        return out

    def watts(self) -> float | None:
        rails = self.rails()
        for name in INPUT_RAILS:
            if name in rails:  # the board's input rail, or nothing: its parts would under-count
                return rails[name]
        values = list(rails.values())
        return sum(values) if values and None not in values else None  # type: ignore[arg-type]

    def joules(self) -> float | None:
        return None

    def mode(self) -> str | None:
        """The nvpmodel power mode ("0002"), or None when the board has no nvpmodel status."""
        status = _text(self.root / "var/lib/nvpmodel/status")
        return status.split(":", 1)[1].strip() or None if status and status.startswith("pmode:") else None


class RaplSource:
    """x86 RAPL package energy counters, summed over packages; wraps are unwound."""

    name = "rapl"
    counter = True

    def __init__(self, root: str | os.PathLike[str] = "/") -> None:
        self.root = Path(root)
        self._last: dict[Path, float] = {}
        self._total_uj = 0.0

    def _domains(self) -> list[Path]:
        # packages are intel-rapl:N; their subdomains (intel-rapl:N:M, core/uncore/dram) are inside them
        return sorted(d for d in (self.root / "sys/class/powercap").glob("intel-rapl:*") if d.name.count(":") == 1)

    def watts(self) -> float | None:
        return None

    def joules(self) -> float | None:
        domains = self._domains()
        readings = {d: _number(d / "energy_uj") for d in domains}
        spans = {d: _number(d / "max_energy_range_uj") or 0.0 for d in domains}
        if not domains or any(v is None or v < 0 or (spans[d] and v > spans[d]) for d, v in readings.items()):
            return None
        for d, uj in readings.items():
            last = self._last.get(d)
            if last is not None:
                span = spans[d]
                delta = uj - last
                if delta < 0:  # the counter wrapped (or the domain reset: count nothing then)
                    delta = delta + span if span > last else 0.0
                self._total_uj += delta
            self._last[d] = uj  # type: ignore[assignment]
        return self._total_uj / 1e6


class BatterySource:
    """Battery discharge power from `sys/class/power_supply`; missing on a charger."""

    name = "battery"
    counter = False

    def __init__(self, root: str | os.PathLike[str] = "/") -> None:
        self.root = Path(root)

    def watts(self) -> float | None:
        total, found = 0.0, False
        for d in sorted((self.root / "sys/class/power_supply").glob("*")):
            if _text(d / "type") != "Battery" or _text(d / "status") != "Discharging":
                continue
            w = _number(d / "power_now")
            if w is not None:
                w = w / 1e6
            else:
                ua, uv = _number(d / "current_now"), _number(d / "voltage_now")
                w = abs(ua) * uv / 1e12 if ua is not None and uv is not None else None
            if (w := _plausible(w)) is not None:
                total, found = total + w, True
        return total if found else None

    def joules(self) -> float | None:
        return None


SOURCES: dict[str, Callable[[str | os.PathLike[str]], PowerSource]] = {
    "ina3221": Ina3221Source,
    "rapl": RaplSource,
    "battery": BatterySource,
}


class EnergyMeter:
    """A power source as a cumulative joule count and the latest watts (thread-safe).

    `sample()` returns joules since the meter started, or None when the source is missing
    now; a request's energy is the difference of two samples. Args: `clock` for tests.
    """

    def __init__(self, source: PowerSource, clock: Callable[[], float] = time.monotonic) -> None:
        self.source = source
        self.clock = clock
        self.power_w: float | None = None  # the latest instantaneous reading (or counter rate)
        self._total = 0.0
        self._last: tuple[float, float] | None = None  # (time, watts or counter joules)
        self._lock = threading.Lock()

    def sample(self) -> float | None:
        with self._lock:
            now = self.clock()
            if self.source.counter:
                j = self.source.joules()
                if j is None:  # no rate across a gap: the next two readings make the next one
                    self._last = None
                    self.power_w = None
                    return None
                if self._last is not None and now > self._last[0]:
                    self.power_w = (j - self._last[1]) / (now - self._last[0])
                self._last = (now, j)
                return j
            w = self.source.watts()
            if w is None:  # a gap is not integrated: the next reading starts afresh
                self._last = None
                self.power_w = None
                return None
            if self._last is not None:
                self._total += 0.5 * (w + self._last[1]) * (now - self._last[0])
            self._last, self.power_w = (now, w), w
            return self._total


def auto_meter(root: str | os.PathLike[str] = "/") -> EnergyMeter | None:
    """A meter over the first source that reads a value here (Jetson rails, RAPL, battery), else None."""
    for name, make in SOURCES.items():
        source = make(root)
        if source.watts() is not None or source.joules() is not None:
            mode = source.mode() if isinstance(source, Ina3221Source) else None
            log.info("measured power from %s%s", name, f" (nvpmodel mode {mode})" if mode else "")
            meter = EnergyMeter(source)
            meter.sample()
            return meter
    log.info("no power source under %s (no INA3221 rails, RAPL counters or discharging battery): "
             "responses carry no measured energy", root)
    return None
