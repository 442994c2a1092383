"""The observation the controller sees: one function, shared by training and serving.

`encode` turns the device's signals, the request and the queue into a fixed-length
float32 vector in about [0, 1] (docs/DESIGN.md, section 4). The gymnasium environment
(`controller.env`) and the runtime (`edge_runtime.runtime`) both call it, so a policy
trained in simulation sees exactly what it will see on the device.

Changing a feature, its order or its scale is a contract change: bump
`OBSERVATION_VERSION`; policies record the version they were trained with and the
runtime refuses a mismatch. Version 2 added `power` and `power_measured` (version 1 had the
first twelve features).

Power (`board_power`): the board's measured draw (`DeviceState.power_w`, from
`edge_runtime.control.power`) where a source reads; else the modelled draw
(`DeviceState.modelled_power_w`: the simulator's device model, or an estimate a signal source
supplies); else `NEUTRAL_POWER_W`. `power_measured` says which: 1 measured, 0 modelled or
neutral. A reading that is not a finite number >= 0 counts as missing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

OBSERVATION_VERSION = 2

# Scales: a raw value equal to the scale encodes as 1.0 (then clipped to [0, 1]).
QUEUE_SCALE = 16.0  # requests waiting
PROMPT_SCALE = 1024.0  # prompt tokens
NEW_TOKENS_SCALE = 512.0  # max new tokens asked for
DEADLINE_SCALE = 30.0  # seconds from arrival to deadline
HEADROOM_SCALE = 40.0  # degrees C below the throttle point
LATENCY_SCALE = 100.0  # recent decode ms per token
# Board draw: 50 W covers the edge range, from a phone (1-10 W) and a Jetson Orin Nano (7-15 W)
# to a laptop or AGX Orin under load (30-50 W) and every bundled profile (at most 33 W); more clips.
POWER_SCALE = 50.0  # watts
NEUTRAL_POWER_W = 5.0  # no reading and no model: a typical idle board (the device model's default idle_w)

FEATURES: tuple[str, ...] = (
    "battery_level",  # 0-1 state of charge; 1.0 on mains-only devices
    "plugged_in",  # 1 on external power
    "thermal_headroom",  # (throttle_c - temperature_c) / HEADROOM_SCALE
    "throttled",  # 1 while the device runs at its throttled speed
    "queue_depth",  # requests waiting behind this one / QUEUE_SCALE
    "oldest_wait",  # oldest queued request's wait / its deadline budget
    "prompt_tokens",  # this request's prompt / PROMPT_SCALE
    "max_new_tokens",  # this request's budget / NEW_TOKENS_SCALE
    "deadline",  # this request's time to deadline / DEADLINE_SCALE
    "hard",  # difficulty or priority hint, 0 easy .. 1 needs dense quality
    "recent_latency",  # recent decode ms per token / LATENCY_SCALE
    "cpu_load",  # 0-1 utilisation of the CPU by everything else
    "power",  # board draw / POWER_SCALE: measured, else modelled, else NEUTRAL_POWER_W (version 2)
    "power_measured",  # 1 when `power` is a measured reading, 0 when modelled or neutral (version 2)
)
SIZE = len(FEATURES)


@dataclass(frozen=True)
class DeviceState:
    """What the signal sources report (docs in `edge_runtime.control.signals`)."""

    battery_level: float = 1.0  # 0-1
    plugged_in: bool = True
    temperature_c: float = 40.0
    throttle_c: float = 80.0
    throttled: bool = False
    cpu_load: float = 0.0  # 0-1
    power_w: float | None = None  # measured board draw, W (None: no power source, control.power)
    modelled_power_w: float | None = None  # the device model's draw, W (None: no model)


@dataclass(frozen=True)
class RequestState:
    """The request being decided and the queue behind it."""

    prompt_tokens: int
    max_new_tokens: int
    deadline_s: float  # seconds left until its deadline (inf: none)
    hard: float = 0.0  # 0-1 difficulty or priority hint
    queue_depth: int = 0
    oldest_wait_frac: float = 0.0  # oldest queued wait / its deadline budget
    recent_ms_per_token: float = 0.0


def _watts(w: float | None) -> float | None:
    return w if w is not None and np.isfinite(w) and w >= 0 else None


def board_power(device: DeviceState) -> tuple[float, bool]:
    """(watts, measured): the reading where one exists, else the model's, else `NEUTRAL_POWER_W`."""
    measured = _watts(device.power_w)
    if measured is not None:
        return measured, True
    modelled = _watts(device.modelled_power_w)
    return (NEUTRAL_POWER_W if modelled is None else modelled), False


def encode(device: DeviceState, request: RequestState) -> np.ndarray:
    """The observation vector, shape [SIZE], float32, each entry clipped to [0, 1]."""
    deadline = request.deadline_s if np.isfinite(request.deadline_s) else DEADLINE_SCALE
    watts, measured = board_power(device)
    raw = (
        device.battery_level,
        float(device.plugged_in),
        (device.throttle_c - device.temperature_c) / HEADROOM_SCALE,
        float(device.throttled),
        request.queue_depth / QUEUE_SCALE,
        request.oldest_wait_frac,
        request.prompt_tokens / PROMPT_SCALE,
        request.max_new_tokens / NEW_TOKENS_SCALE,
        deadline / DEADLINE_SCALE,
        request.hard,
        request.recent_ms_per_token / LATENCY_SCALE,
        device.cpu_load,
        watts / POWER_SCALE,
        float(measured),
    )
    return np.clip(np.asarray(raw, dtype=np.float32), 0.0, 1.0)


def describe(obs: np.ndarray) -> dict[str, float]:
    """Feature name -> value, for logs and decision traces."""
    return {name: float(x) for name, x in zip(FEATURES, np.asarray(obs).reshape(-1), strict=True)}
