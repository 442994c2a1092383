"""The simulated device: battery, heat and throttling, integrated in closed form.

One model, shared by training (`controller.env`) and `edge-sim`, so that a policy is
trained on exactly the physics it is evaluated on. Power is piecewise constant (idle, or
generating at full or throttled speed), so every quantity has a closed form between
*breakpoints* (work done, throttle on/off, battery empty, a time limit); `Device.run`
jumps from breakpoint to breakpoint. An hour of device time is a few thousand breakpoints:
about ten milliseconds of Python.

Equations (symbols are `DeviceConfig` fields):

    speed factor   s = throttle_speed if throttled else 1                               (D1)
    power          P = idle_w + busy * active_w * s                                     (D2)
    compute rate   d(work)/dt = busy * speed * s        (work in bundle-machine seconds) (D3)
    steady temp    T_inf = ambient_c + thermal_resistance_c_per_w * P                   (D4)
    temperature    T(t) = T_inf + (T0 - T_inf) * exp(-t / thermal_time_constant_s)      (D5)
    throttling     on when T >= throttle_c, off when T <= throttle_c - throttle_hysteresis_c (D6)
    battery        dE/dt = -P / 3600 on battery, +charge_w / 3600 plugged in (E in Wh,
                   capped at battery_wh); mains-only devices (battery_wh = 0) never drain (D7)
    shutdown       E reaches 0 on battery: the device is off for good (`alive = False`)  (D8)

(D2)/(D3): throttling lowers clock and active power together (power taken as linear in
speed, a conservative stand-in for DVFS where it falls faster); energy per unit of work is
therefore the same throttled or not, but the work takes 1/s times longer. The crossing time
for (D6) solves (D5) for T(t) = threshold: t = tau * ln((T0 - T_inf) / (threshold - T_inf)).

The observation's power (`state()`) is (D2) over the latest segment, idle draw before the
first: what a meter sampled at a decision point shows (the work just finished, or idling).
It is reported as measured on a board with `power_meter`, as modelled otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from edge_runtime.control.observation import DeviceState
from edge_runtime.sim.profile import DeviceConfig

_EPS = 1e-9


@dataclass(frozen=True)
class RunResult:
    """What one `Device.run` call did."""

    elapsed_s: float  # virtual time that passed
    work_done_s: float  # bundle-machine compute seconds completed
    energy_wh: float  # energy drawn (battery or mains)
    battery_wh: float  # of which from the battery
    active_wh: float  # of `energy_wh`, the part above idle draw (what generating cost)
    active_battery_wh: float  # of `active_wh`, the part from the battery
    throttled_s: float  # time spent throttled
    died: bool  # the battery ran out during this call


class Device:
    """Mutable state of one simulated device (`DeviceConfig` holds the constants).

    Args:
        config: the constants; `apply` swaps them when a profile event fires.
    """

    __slots__ = ("config", "charge_wh", "temperature_c", "plugged", "throttled", "alive", "energy_wh",
                 "battery_used_wh", "throttled_s", "t", "power_w")

    def __init__(self, config: DeviceConfig) -> None:
        self.config = config
        self.charge_wh = config.battery_wh * config.battery_start
        self.plugged = config.plugged or not config.has_battery
        idle_ss = config.ambient_c + config.thermal_resistance_c_per_w * config.idle_w
        self.temperature_c = idle_ss if config.start_c is None else config.start_c
        self.throttled = self.temperature_c >= config.throttle_c
        self.alive = not (config.has_battery and not self.plugged and self.charge_wh <= 0)
        self.t = 0.0  # virtual seconds since start
        self.energy_wh = 0.0  # totals since start
        self.battery_used_wh = 0.0
        self.throttled_s = 0.0
        self.power_w = config.idle_w  # draw (D2) over the latest segment

    def copy(self) -> Device:
        new = Device.__new__(Device)
        for k in Device.__slots__:
            setattr(new, k, getattr(self, k))
        return new

    # ---- reading

    @property
    def battery_level(self) -> float:
        """State of charge 0-1; 1.0 on mains-only devices (as the observation encodes it)."""
        c = self.config
        return self.charge_wh / c.battery_wh if c.has_battery else 1.0

    def state(self) -> DeviceState:
        """The signals the observation encoder reads; the draw is measured only with `power_meter`."""
        return DeviceState(
            battery_level=self.battery_level,
            plugged_in=self.plugged,
            temperature_c=self.temperature_c,
            throttle_c=self.config.throttle_c,
            throttled=self.throttled,
            cpu_load=self.config.cpu_load,
            power_w=self.power_w if self.config.power_meter else None,
            modelled_power_w=self.power_w,
        )

    # ---- events

    def apply(self, overrides: dict[str, Any]) -> None:
        """A profile event: new constants; `battery_start` sets the charge, `plugged` the supply."""
        if not overrides:
            return
        old = self.config
        self.config = c = replace(old, **overrides)
        if "battery_start" in overrides:
            self.charge_wh = c.battery_wh * c.battery_start
        elif c.battery_wh != old.battery_wh:
            self.charge_wh = min(self.charge_wh, c.battery_wh)
        if "plugged" in overrides or not c.has_battery:
            self.plugged = c.plugged or not c.has_battery
        if "start_c" in overrides and c.start_c is not None:
            self.temperature_c = c.start_c
        if c.has_battery and not self.plugged and self.charge_wh <= 0:
            self.alive = False

    # ---- time

    def run(self, max_s: float, work_s: float = 0.0) -> RunResult:
        """Advance until `work_s` bundle-machine seconds of compute are done or `max_s` passed.

        With `work_s = 0` the device idles for `max_s`. Stops early if the battery runs out
        (`died`); a dead device does nothing.
        """
        c = self.config
        elapsed = done = energy = batt = active = active_batt = thr = 0.0
        died = False
        busy = work_s > 0
        tau, r = c.thermal_time_constant_s, c.thermal_resistance_c_per_w
        on_battery = c.has_battery and not self.plugged
        while self.alive and elapsed < max_s - _EPS and (not busy or done < work_s - _EPS):
            # (D6) for states an event or the start put beyond a threshold
            if not self.throttled and self.temperature_c >= c.throttle_c:
                self.throttled = True
            elif self.throttled and self.temperature_c <= c.throttle_c - c.throttle_hysteresis_c:
                self.throttled = False
            s = c.throttle_speed if self.throttled else 1.0  # (D1)
            p = self.power_w = c.idle_w + (c.active_w * s if busy else 0.0)  # (D2)
            rate = c.speed * s if busy else 0.0  # (D3)
            t_inf = c.ambient_c + r * p  # (D4)
            dt = max_s - elapsed
            if busy:
                dt = min(dt, (work_s - done) / rate)
            # (D6): time until the throttle state flips, from (D5)
            thr_at = c.throttle_c - c.throttle_hysteresis_c if self.throttled else c.throttle_c
            d0, d1 = self.temperature_c - t_inf, thr_at - t_inf
            flip = math.inf
            if self.throttled and d1 > 0 and d0 > d1:  # cooling down through thr_at
                flip = tau * math.log(d0 / d1)
            elif not self.throttled and d1 < 0 and d0 < d1:  # heating up through thr_at
                flip = tau * math.log(d0 / d1)
            dt = min(dt, flip)
            empty = math.inf  # (D7)/(D8)
            if on_battery and p > 0:
                empty = self.charge_wh * 3600.0 / p
                dt = min(dt, empty)
            dt = max(dt, 0.0)
            # advance the segment
            self.temperature_c = t_inf + d0 * math.exp(-dt / tau)  # (D5)
            e = p * dt / 3600.0
            ea = (p - c.idle_w) * dt / 3600.0
            energy += e
            active += ea
            if on_battery:
                batt += e
                active_batt += ea
                self.charge_wh = max(self.charge_wh - e, 0.0)
            elif c.has_battery and c.charge_w > 0:
                self.charge_wh = min(self.charge_wh + c.charge_w * dt / 3600.0, c.battery_wh)
            if self.throttled:
                thr += dt
            done += rate * dt
            elapsed += dt
            if dt >= flip - _EPS:
                self.throttled = not self.throttled
                self.temperature_c = thr_at
            if on_battery and dt >= empty - _EPS:
                self.charge_wh = 0.0
                self.alive = False
                died = True
        if not busy and self.alive and elapsed < max_s:
            elapsed = max_s  # a sub-nanosecond remainder: let the time pass, physics unchanged
        self.t += elapsed
        self.energy_wh += energy
        self.battery_used_wh += batt
        self.throttled_s += thr
        return RunResult(elapsed, min(done, work_s) if busy else 0.0, energy, batt, active, active_batt, thr, died)
