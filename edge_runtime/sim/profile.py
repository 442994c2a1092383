"""Resource profiles: a device and a workload over time (docs/DESIGN.md, section 5).

A profile is a TOML file; the same file drives training (`controller.env`), `edge-sim` and
the tests. `load_profile("laptop-battery")` finds a bundled profile by name,
`load_profile("path/to/x.toml")` reads any file. Bundled profiles live in `profiles/` at the
repository root, which the wheel ships as the package `edge_runtime.profiles` (pyproject's
package-dir); `EDGE_PROFILES` (a `os.pathsep`-separated list of directories) is searched
first, then the installed package (read through importlib.resources), then the source
tree's `profiles/`, then `./profiles`.

Every key but `name` has a default. Unknown keys, wrong types, negative durations and a
missing trace file are `ProfileError`s that name the key. Keys added to the DESIGN.md
format (all optional, defaults keep the old meaning):

* `tier`: the floors tier the profile runs under (`normal`, `saver`, `critical`), or `auto`
  (default) to follow the device's signals (`edge_runtime.control.tiers.select_tier`).
* `[device] plugged` (bool): on external power at t=0 (always true when `battery_wh = 0`).
* `[device] charge_w`: charging power while plugged in (0: plugging in only stops the drain).
* `[device] start_c`: temperature at t=0 (default: the idle steady state).
* `[device] throttle_hysteresis_c`: throttling ends this many degrees below `throttle_c`.
* `[device] cpu_load`: 0-1 CPU share used by other programs (reported in the observation).
* `[device] power_meter` (bool): the board measures its own draw; the observation then
  reports the modelled power as measured (`power_measured` = 1).
* `[[events]]` take any `[device]` or `[workload]` key except `arrival` and `trace`;
  `battery_start` in an event sets the state of charge at that time.

Trace CSVs (`arrival = "trace"`, `trace = "file.csv"`, relative to the profile's folder)
have a header with `arrival_s` and optionally `prompt_tokens`, `max_new_tokens`,
`deadline_s`, `hard`; missing columns are drawn from the `[workload]` ranges.
"""

from __future__ import annotations

import csv
import importlib.resources
import json
import os
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from edge_runtime.config import check_table, coerce, read_toml
from edge_runtime.control.tiers import AUTO, check_tier
from edge_runtime.errors import ProfileError

PROFILES_ENV = "EDGE_PROFILES"
ARRIVALS = ("poisson", "bursty", "trace")
TRACE_COLUMNS = ("arrival_s", "prompt_tokens", "max_new_tokens", "deadline_s", "hard")


def _table(cls: type, data: Any, where: str, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    return check_table(cls, data, where, ProfileError, skip)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    return coerce(value, tp, where, ProfileError)


def _require(cond: bool, where: str, msg: str, value: Any) -> None:
    if not cond:
        raise ProfileError(f"{where} {msg}, got {value!r}")


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class DeviceConfig:
    """The device: battery, power draw, thermal model and speed (edge_runtime.sim.device)."""

    battery_wh: float = 0.0  # capacity; 0 = mains powered, no battery
    battery_start: float = 1.0  # state of charge at t=0, 0-1
    plugged: bool = False  # on external power at t=0 (implied when battery_wh = 0)
    charge_w: float = 0.0  # charging power while plugged in
    idle_w: float = 5.0  # draw when not generating
    active_w: float = 15.0  # extra draw while generating at full (unthrottled) speed
    ambient_c: float = 25.0
    thermal_resistance_c_per_w: float = 2.0  # steady-state rise per watt
    thermal_time_constant_s: float = 60.0  # how fast the temperature follows the power
    throttle_c: float = 80.0  # at or above this, compute runs at throttle_speed
    throttle_hysteresis_c: float = 2.0  # throttling ends at throttle_c minus this
    throttle_speed: float = 0.5  # compute speed (and active power) while throttled, 0-1
    speed: float = 1.0  # device speed relative to the machine that measured the bundle
    start_c: float | None = None  # temperature at t=0; default: idle steady state
    cpu_load: float = 0.0  # 0-1 CPU share used by other programs
    power_meter: bool = False  # the board measures its draw (INA3221, RAPL, fuel gauge): observed as measured

    def validate(self, where: str = "[device]") -> None:
        _require(self.throttle_hysteresis_c > 0, f"{where}.throttle_hysteresis_c", "must be > 0",
                 self.throttle_hysteresis_c)
        for key in ("battery_wh", "charge_w", "idle_w", "active_w", "thermal_resistance_c_per_w"):
            _require(getattr(self, key) >= 0, f"{where}.{key}", "must be >= 0", getattr(self, key))
        for key in ("battery_start", "cpu_load"):
            v = getattr(self, key)
            _require(0.0 <= v <= 1.0, f"{where}.{key}", "must be in [0, 1]", v)
        _require(self.thermal_time_constant_s > 0, f"{where}.thermal_time_constant_s", "must be > 0",
                 self.thermal_time_constant_s)
        _require(0.0 < self.throttle_speed <= 1.0, f"{where}.throttle_speed", "must be in (0, 1]",
                 self.throttle_speed)
        _require(self.speed > 0, f"{where}.speed", "must be > 0", self.speed)

    @property
    def has_battery(self) -> bool:
        return self.battery_wh > 0


@dataclass(frozen=True)
class WorkloadConfig:
    """How requests arrive and what they ask for (edge_runtime.sim.workload)."""

    arrival: str = "poisson"  # "poisson" | "bursty" | "trace"
    rate_per_s: float = 0.3  # mean arrivals per second (between bursts for "bursty")
    burst_rate_per_s: float = 3.0  # bursty only: rate inside a burst
    burst_every_s: float = 120.0  # bursty only: a burst starts every this many seconds
    burst_len_s: float = 15.0  # bursty only
    prompt_tokens: tuple[int, int] = (16, 256)  # uniform range, inclusive
    max_new_tokens: tuple[int, int] = (16, 128)  # uniform range, inclusive
    deadline_s: float = 6.0  # per request, from arrival
    hard_fraction: float = 0.3  # share of requests that need the dense model's quality
    trace: str = ""  # CSV of arrivals, for arrival = "trace"

    def validate(self, where: str = "[workload]") -> None:
        _require(self.arrival in ARRIVALS, f"{where}.arrival", f"must be one of {ARRIVALS}", self.arrival)
        for key in ("rate_per_s", "burst_rate_per_s", "burst_len_s"):
            _require(getattr(self, key) >= 0, f"{where}.{key}", "must be >= 0", getattr(self, key))
        _require(self.burst_every_s > 0, f"{where}.burst_every_s", "must be > 0", self.burst_every_s)
        _require(self.deadline_s > 0, f"{where}.deadline_s", "must be > 0", self.deadline_s)
        _require(0.0 <= self.hard_fraction <= 1.0, f"{where}.hard_fraction", "must be in [0, 1]",
                 self.hard_fraction)
        for key, low in (("prompt_tokens", 1), ("max_new_tokens", 1)):
            lo, hi = getattr(self, key)
            _require(low <= lo <= hi, f"{where}.{key}", f"must be [lo, hi] with {low} <= lo <= hi", [lo, hi])


@dataclass(frozen=True)
class TraceRequest:
    """One row of a trace CSV; None fields are drawn from the workload's ranges."""

    arrival_s: float
    prompt_tokens: int | None = None
    max_new_tokens: int | None = None
    deadline_s: float | None = None
    hard: float | None = None


@dataclass(frozen=True)
class Event:
    """A scripted change at `at_s`: new values for device and workload keys."""

    at_s: float
    device: dict[str, Any] = field(default_factory=dict)  # DeviceConfig overrides
    workload: dict[str, Any] = field(default_factory=dict)  # WorkloadConfig overrides

    def to_dict(self) -> dict[str, Any]:
        return {"at_s": self.at_s, **self.device, **self.workload}


@dataclass(frozen=True)
class Profile:
    """A device and a workload over `duration_s` seconds."""

    name: str
    description: str = ""
    duration_s: float = 900.0
    seed: int = 0  # arrivals and request sizes are drawn from this seed
    tier: str = AUTO  # floors tier (edge_runtime.control.tiers): auto follows the device's signals
    device: DeviceConfig = field(default_factory=DeviceConfig)
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    events: tuple[Event, ...] = ()  # sorted by at_s
    trace_requests: tuple[TraceRequest, ...] = ()  # parsed trace, when arrival = "trace"
    source: str = ""  # the file it was read from

    # ---- reading

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "", base_dir: Path | None = None) -> Profile:
        """Build and validate a profile from a parsed TOML document."""
        where = f"profile {source}" if source else "profile"
        if not isinstance(data, dict):
            raise ProfileError(f"{where} must be a TOML document, got {type(data).__name__}")
        nested = ("device", "workload", "events")
        top = _table(cls, {k: v for k, v in data.items() if k not in nested}, where,
                     skip=("trace_requests", "source", *nested))
        if "name" not in top:
            raise ProfileError(f"{where}: missing key 'name'; every profile needs a name")
        _require(bool(top["name"].strip()), f"{where}.name", "must not be empty", top["name"])
        duration = top.get("duration_s", 900.0)
        _require(duration > 0, f"{where}.duration_s", "must be > 0", duration)
        _require(top.get("seed", 0) >= 0, f"{where}.seed", "must be >= 0", top.get("seed"))
        check_tier(top.get("tier", AUTO), f"{where}.tier", ProfileError)
        device = DeviceConfig(**_table(DeviceConfig, data.get("device", {}), f"{where} [device]"))
        device.validate(f"{where} [device]")
        workload = WorkloadConfig(**_table(WorkloadConfig, data.get("workload", {}), f"{where} [workload]"))
        workload.validate(f"{where} [workload]")

        raw_events = data.get("events", [])
        if not isinstance(raw_events, list):
            raise ProfileError(f"{where}: 'events' must be an array of tables ([[events]]), got {raw_events!r}")
        events = []
        dev_keys = {f.name for f in fields(DeviceConfig)}
        wl_keys = {f.name for f in fields(WorkloadConfig)} - {"arrival", "trace"}
        dev_hints, wl_hints = typing.get_type_hints(DeviceConfig), typing.get_type_hints(WorkloadConfig)
        for i, ev in enumerate(raw_events):
            ew = f"{where} [[events]] #{i}"
            if not isinstance(ev, dict):
                raise ProfileError(f"{ew} must be a table, got {ev!r}")
            if "at_s" not in ev:
                raise ProfileError(f"{ew}: missing key 'at_s' (the time of the change, seconds)")
            at = _coerce(ev["at_s"], float, f"{ew}.at_s")
            _require(0 <= at <= duration, f"{ew}.at_s", f"must be in [0, duration_s={duration:g}]", at)
            dev, wl = {}, {}
            for key, value in ev.items():
                if key == "at_s":
                    continue
                if key in dev_keys:
                    dev[key] = _coerce(value, dev_hints[key], f"{ew}.{key}")
                elif key in wl_keys:
                    wl[key] = _coerce(value, wl_hints[key], f"{ew}.{key}")
                else:
                    raise ProfileError(
                        f"{ew}: unknown key {key!r}; events take at_s and these keys: "
                        f"{', '.join(sorted(dev_keys | wl_keys))}"
                    )
            if not dev and not wl:
                raise ProfileError(f"{ew} changes nothing; give at least one device or workload key")
            replace(device, **dev).validate(ew)
            replace(workload, **wl).validate(ew)
            events.append(Event(at, dev, wl))
        events.sort(key=lambda e: e.at_s)

        trace: tuple[TraceRequest, ...] = ()
        if workload.arrival == "trace":
            if not workload.trace:
                raise ProfileError(f"{where} [workload]: arrival = 'trace' needs trace = 'file.csv'")
            path = Path(workload.trace)
            if not path.is_absolute() and base_dir is not None:
                path = base_dir / path
            trace = read_trace(path, duration, f"{where} [workload].trace")
        return cls(
            name=top["name"],
            description=top.get("description", ""),
            duration_s=duration,
            seed=top.get("seed", 0),
            tier=top.get("tier", AUTO),
            device=device,
            workload=workload,
            events=tuple(events),
            trace_requests=trace,
            source=source,
        )

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str]) -> Profile:
        """Read and validate a profile file."""
        path = Path(path)
        if not path.is_file():
            raise ProfileError(f"profile file {str(path)!r} does not exist; pass a bundled name or an existing .toml")
        data = read_toml(path, "profile", ProfileError)
        return cls.from_dict(data, source=str(path), base_dir=path.parent)

    # ---- writing

    def to_dict(self) -> dict[str, Any]:
        """The TOML document this profile was read from (trace rows are not inlined)."""
        dev = {f.name: getattr(self.device, f.name) for f in fields(DeviceConfig)}
        if dev["start_c"] is None:
            del dev["start_c"]
        wl = {f.name: getattr(self.workload, f.name) for f in fields(WorkloadConfig)}
        wl["prompt_tokens"], wl["max_new_tokens"] = list(wl["prompt_tokens"]), list(wl["max_new_tokens"])
        return {
            "name": self.name,
            "description": self.description,
            "duration_s": self.duration_s,
            "seed": self.seed,
            "tier": self.tier,
            "device": dev,
            "workload": wl,
            "events": [e.to_dict() for e in self.events],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def read_trace(path: Path, duration_s: float, where: str) -> tuple[TraceRequest, ...]:
    """Parse a trace CSV (header `arrival_s[,prompt_tokens,max_new_tokens,deadline_s,hard]`)."""
    if not path.is_file():
        raise ProfileError(f"{where}: trace file {str(path)!r} does not exist; fix the path (relative to the profile)")
    rows = []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        cols = reader.fieldnames or []
        if "arrival_s" not in cols:
            raise ProfileError(f"{where}: trace {str(path)!r} needs a header with 'arrival_s', got {cols}")
        unknown = [c for c in cols if c not in TRACE_COLUMNS]
        if unknown:
            raise ProfileError(f"{where}: trace {str(path)!r} has unknown columns {unknown}; known: {TRACE_COLUMNS}")
        for n, row in enumerate(reader, start=2):
            try:
                vals: dict[str, Any] = {}
                for c in cols:
                    cell = (row.get(c) or "").strip()
                    if cell == "":
                        continue
                    vals[c] = int(cell) if c in ("prompt_tokens", "max_new_tokens") else float(cell)
            except ValueError as e:
                raise ProfileError(f"{where}: {str(path)!r} line {n}: {e}; cells must be numbers") from e
            if "arrival_s" not in vals:
                raise ProfileError(f"{where}: {str(path)!r} line {n}: empty arrival_s")
            t = vals["arrival_s"]
            if not 0 <= t <= duration_s:
                raise ProfileError(f"{where}: {str(path)!r} line {n}: arrival_s {t} outside [0, duration_s={duration_s:g}]")
            for c in ("prompt_tokens", "max_new_tokens"):
                if c in vals and vals[c] < 1:
                    raise ProfileError(f"{where}: {str(path)!r} line {n}: {c} must be >= 1, got {vals[c]}")
            if "deadline_s" in vals and vals["deadline_s"] <= 0:
                raise ProfileError(f"{where}: {str(path)!r} line {n}: deadline_s must be > 0, got {vals['deadline_s']}")
            if "hard" in vals and not 0 <= vals["hard"] <= 1:
                raise ProfileError(f"{where}: {str(path)!r} line {n}: hard must be in [0, 1], got {vals['hard']}")
            rows.append(TraceRequest(**vals))
    rows.sort(key=lambda r: r.arrival_s)
    return tuple(rows)


# --------------------------------------------------------------------------- finding


def _packaged_dirs() -> list[Path]:
    """The installed `edge_runtime.profiles` package's folders (wheel or editable), else [].

    The folder holds data only (no `__init__.py`), so importlib.resources sees a namespace
    package; its entries are plain files on disk (pip installs wheels unzipped).
    """
    try:
        root = importlib.resources.files("edge_runtime.profiles")
    except ModuleNotFoundError:  # running from a source tree: edge_runtime/profiles does not exist
        return []
    return sorted({Path(str(e)).parent for e in root.iterdir() if e.name.endswith(".toml")})


def profile_dirs() -> list[Path]:
    """Where bundled profile names are looked up, in order."""
    dirs = [Path(p) for p in os.environ.get(PROFILES_ENV, "").split(os.pathsep) if p]
    dirs += _packaged_dirs()
    source_root = Path(__file__).resolve().parents[2]
    if (source_root / "pyproject.toml").is_file():  # running from a checkout
        dirs.append(source_root / "profiles")
    dirs.append(Path.cwd() / "profiles")
    seen, out = set(), []
    for d in dirs:
        key = d.resolve() if d.exists() else d
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def list_profiles() -> dict[str, Path]:
    """Bundled profile name -> file (earlier directories win)."""
    found: dict[str, Path] = {}
    for d in profile_dirs():
        if d.is_dir():
            for p in sorted(d.glob("*.toml")):
                found.setdefault(p.stem, p)
    return found


def find_profile(name_or_path: str | os.PathLike[str]) -> Path:
    """The file for a bundled profile name or a path; `ProfileError` naming both if neither exists."""
    s = str(name_or_path)
    p = Path(s)
    if p.is_file():
        return p
    if p.suffix == ".toml" or os.sep in s or "/" in s:
        raise ProfileError(f"profile file {s!r} does not exist; pass a bundled name or an existing .toml")
    known = list_profiles()
    if s in known:
        return known[s]
    raise ProfileError(
        f"unknown profile {s!r}: bundled profiles are {sorted(known)} (searched "
        f"{[str(d) for d in profile_dirs()]}; set {PROFILES_ENV} to add folders), or pass a path to a .toml"
    )


def load_profile(name_or_path: str | os.PathLike[str]) -> Profile:
    """Find (`find_profile`) and read (`Profile.from_toml`) a profile."""
    return Profile.from_toml(find_profile(name_or_path))
