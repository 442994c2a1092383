"""Device signals: battery, power, temperature, throttling and CPU load, from pluggable sources.

A `SignalSource` answers `read() -> DeviceState` (`edge_runtime.control.observation`). Sources:

* `PsutilSource`: `psutil.sensors_battery()`, `psutil.sensors_temperatures()` and CPU
  utilisation; works on Linux, macOS and Windows where psutil has the sensor.
* `SysfsSource`: Linux `/sys/class/power_supply` (battery `capacity`, `status`; mains/USB
  `online`) and `/sys/class/thermal` (zone `temp` in millidegrees, the lowest `passive`
  trip point as the throttle temperature). This is what a Jetson or a laptop exposes
  even when psutil does not. `root` can point at a fake tree for tests.
* `StaticSource(state)`: a fixed state; `CallableSource(fn)`: whatever `fn()` returns,
  e.g. a simulated device driven by a profile (`edge-sim --runtime`).
* `auto_source()`: sysfs where it finds sensors, else psutil.

Missing sensors never crash a read: each missing value takes its default from
`DEFAULTS` (battery 1.0 and plugged in, i.e. mains power; 40 C with throttling at 80 C;
not throttled; CPU load 0) and the source logs one line per missing sensor, once.

`LatencyTracker` keeps the runtime's own recent decode latency (ms per token), the
observation's `recent_latency` feature.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Protocol, runtime_checkable

import psutil

from edge_runtime.control.observation import DeviceState

log = logging.getLogger(__name__)

DEFAULTS = DeviceState()  # what a missing sensor reads as
_THROTTLE_TRIPS = ("passive", "hot")  # trip types at which a zone starts throttling, in order of preference


@runtime_checkable
class SignalSource(Protocol):
    """Anything that reports the device's state."""

    def read(self) -> DeviceState:
        """The current state; never raises (missing sensors read as `DEFAULTS`)."""
        ...


class _Once:
    """Logs each distinct message once per source."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def __call__(self, key: str, msg: str, *args: object) -> None:
        if key not in self.seen:
            self.seen.add(key)
            log.info(msg, *args)


def cpu_load() -> float:
    """CPU utilisation 0-1 since the previous call (non-blocking; the first call may read 0)."""
    return min(1.0, max(0.0, psutil.cpu_percent(interval=None) / 100.0))


class StaticSource:
    """Always the same state (tests, pinned deployments)."""

    def __init__(self, state: DeviceState = DEFAULTS) -> None:
        self.state = state

    def read(self) -> DeviceState:
        return self.state


class CallableSource:
    """The state `fn()` returns: the hook for simulated devices (`edge-sim --runtime`).

    A failing `fn` reads as the last good state (or `DEFAULTS`), logged once.
    """

    def __init__(self, fn: Callable[[], DeviceState]) -> None:
        self.fn = fn
        self.last = DEFAULTS
        self._once = _Once()

    def read(self) -> DeviceState:
        try:
            state = self.fn()
            if not isinstance(state, DeviceState):
                raise TypeError(f"returned {type(state).__name__}, not DeviceState")
        except Exception as e:  # a broken simulator must not take the runtime down
            self._once("fail", "simulated signal source failed (%s); using the last state", e)
            return self.last
        self.last = state
        return state


class PsutilSource:
    """Battery, temperature and CPU load through psutil."""

    def __init__(self, throttle_c: float = DEFAULTS.throttle_c, load: Callable[[], float] = cpu_load) -> None:
        self.throttle_c = throttle_c
        self._load = load
        self._once = _Once()
        _safe_load(self._load, self._once)  # prime psutil's CPU counters

    def read(self) -> DeviceState:
        state = replace(DEFAULTS, throttle_c=self.throttle_c)
        try:
            bat = psutil.sensors_battery() if hasattr(psutil, "sensors_battery") else None
        except Exception as e:  # psutil raises platform errors for broken ACPI tables
            self._once("battery-error", "psutil battery read failed (%s): assuming mains power", e)
            bat = None
        if bat is None:
            self._once("battery", "no battery reported by psutil: assuming mains power (battery 1.0, plugged in)")
        else:
            plugged = bat.power_plugged if bat.power_plugged is not None else DEFAULTS.plugged_in
            state = replace(state, battery_level=_clip(bat.percent / 100.0), plugged_in=bool(plugged))
        try:
            temps = psutil.sensors_temperatures() if hasattr(psutil, "sensors_temperatures") else {}
        except Exception as e:
            self._once("temp-error", "psutil temperature read failed (%s): assuming %.0f C", e, DEFAULTS.temperature_c)
            temps = {}
        readings = [t.current for entries in (temps or {}).values() for t in entries if t.current is not None]
        if not readings:
            self._once("temp", "no temperature sensor reported by psutil: assuming %.0f C", DEFAULTS.temperature_c)
        else:
            highs = [t.high for entries in temps.values() for t in entries if t.high]
            throttle = min(highs) if highs else self.throttle_c
            hottest = max(readings)
            state = replace(state, temperature_c=hottest, throttle_c=throttle, throttled=hottest >= throttle)
        return replace(state, cpu_load=_safe_load(self._load, self._once))


class SysfsSource:
    """Linux sysfs: `/sys/class/power_supply` and `/sys/class/thermal` under `root`.

    Args:
        root: the sysfs mount (a fake tree in tests).
        throttle_c: throttle temperature when no zone has a passive/hot trip point.
        load: CPU load 0-1 (default: psutil).
    """

    def __init__(self, root: str | os.PathLike[str] = "/sys", throttle_c: float = DEFAULTS.throttle_c,
                 load: Callable[[], float] = cpu_load) -> None:
        self.root = Path(root)
        self.throttle_c = throttle_c
        self._load = load
        self._once = _Once()
        _safe_load(self._load, self._once)

    def has_sensors(self) -> bool:
        """True if the tree holds a battery, a power supply or a thermal zone."""
        ps, th = self.root / "class/power_supply", self.root / "class/thermal"
        return (ps.is_dir() and any(ps.iterdir())) or (th.is_dir() and any(th.glob("thermal_zone*")))

    def read(self) -> DeviceState:
        state = replace(DEFAULTS, throttle_c=self.throttle_c)
        try:
            state = self._power(state)
        except OSError as e:
            self._once("power-error", "reading %s failed (%s): assuming mains power", self.root / "class/power_supply", e)
        try:
            state = self._thermal(state)
        except OSError as e:
            self._once("thermal-error", "reading %s failed (%s): assuming %.0f C", self.root / "class/thermal", e,
                       DEFAULTS.temperature_c)
        return replace(state, cpu_load=_safe_load(self._load, self._once))

    def _power(self, state: DeviceState) -> DeviceState:
        base = self.root / "class/power_supply"
        supplies = sorted(base.iterdir()) if base.is_dir() else []
        levels: list[float] = []
        charging: list[bool] = []
        online: list[bool] = []
        for d in supplies:
            kind = _read(d / "type")
            if kind == "Battery":
                if _read(d / "present") == "0":
                    continue
                cap = _number(d / "capacity")
                if cap is None:  # some fuel gauges report energy instead of a percentage
                    now, full = _number(d / "energy_now") or _number(d / "charge_now"), \
                        _number(d / "energy_full") or _number(d / "charge_full")
                    cap = 100.0 * now / full if now is not None and full else None
                if cap is not None:
                    levels.append(_clip(cap / 100.0))
                status = _read(d / "status")
                if status is not None:
                    charging.append(status in ("Charging", "Full", "Not charging"))
            elif kind in ("Mains", "USB", "USB_C", "USB_PD", "Wireless") and _read(d / "online") is not None:
                online.append(_read(d / "online") == "1")
        if not levels:
            self._once("battery", "no battery under %s: assuming mains power (battery 1.0, plugged in)", base)
            return state
        plugged = any(online) if online else (any(charging) if charging else DEFAULTS.plugged_in)
        return replace(state, battery_level=min(levels), plugged_in=plugged)

    def _thermal(self, state: DeviceState) -> DeviceState:
        base = self.root / "class/thermal"
        zones = sorted(base.glob("thermal_zone*")) if base.is_dir() else []
        temps: list[float] = []
        trips: list[float] = []
        throttled = False
        for z in zones:
            t = _number(z / "temp")
            if t is None:
                continue
            temp = t / 1000.0  # millidegrees
            if not -40.0 < temp < 200.0:  # unplugged probes read -273 or 255
                continue
            temps.append(temp)
            zone_trips = [
                v / 1000.0
                for p in sorted(z.glob("trip_point_*_type"))
                if _read(p) in _THROTTLE_TRIPS
                and (v := _number(p.with_name(p.name.replace("_type", "_temp")))) is not None
            ]
            if zone_trips:
                trips.append(min(zone_trips))
                throttled |= temp >= min(zone_trips)
        # a CPU cooling device above state 0 means the frequency is being capped
        cooling = [_number(c / "cur_state") for c in sorted(base.glob("cooling_device*"))
                   if (_read(c / "type") or "").lower().startswith(("processor", "cpufreq"))]
        throttled |= any(c for c in cooling if c)
        if not temps:
            self._once("temp", "no thermal zone under %s: assuming %.0f C", base, DEFAULTS.temperature_c)
            return state
        throttle = min(trips) if trips else self.throttle_c
        hottest = max(temps)
        return replace(state, temperature_c=hottest, throttle_c=throttle, throttled=throttled or hottest >= throttle)


def auto_source(root: str | os.PathLike[str] = "/sys") -> SignalSource:
    """`SysfsSource` when the machine exposes sensors there, else `PsutilSource`."""
    sysfs = SysfsSource(root)
    if sysfs.has_sensors():
        return sysfs
    return PsutilSource()


SOURCES: dict[str, Callable[[], SignalSource]] = {
    "auto": auto_source,
    "psutil": PsutilSource,
    "sysfs": SysfsSource,
    "static": StaticSource,
}


class LatencyTracker:
    """Exponentially weighted recent decode ms per token (the observation's `recent_latency`)."""

    def __init__(self, alpha: float = 0.3) -> None:
        self.alpha = alpha
        self.value = 0.0  # 0 until the first request
        self._lock = threading.Lock()

    def update(self, ms_per_token: float) -> None:
        if ms_per_token <= 0:
            return
        with self._lock:
            self.value = ms_per_token if self.value == 0 else (1 - self.alpha) * self.value + self.alpha * ms_per_token


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _number(path: Path) -> float | None:
    text = _read(path)
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def _clip(x: float) -> float:
    return min(1.0, max(0.0, float(x)))


def _safe_load(load: Callable[[], float], once: _Once) -> float:
    try:
        return _clip(load())
    except Exception as e:  # psutil can fail in containers without /proc/stat
        once("load", "CPU load unavailable (%s): assuming 0", e)
        return DEFAULTS.cpu_load
