"""Fixtures for the training-side tests: short profiles, a tiny training config (bundles: tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.train import TrainConfig

PROFILE = """
name = "{name}"
duration_s = 240
seed = {seed}

[device]
battery_wh = 5.0
battery_start = {battery}
idle_w = 1.0
active_w = 8.0
ambient_c = 30.0
thermal_resistance_c_per_w = 4.0
thermal_time_constant_s = 60.0

[workload]
rate_per_s = 0.25
deadline_s = 8.0
"""

# a few gradient steps: mechanics, not performance
TINY = TrainConfig(timesteps=512, n_envs=2, n_steps=128, batch_size=64, n_epochs=2, net_arch=(16, 16))


@pytest.fixture
def profiles(tmp_path: Path) -> dict[str, Path]:
    """Two short profiles to train on and one to hold out."""
    out = {}
    for name, seed, battery in (("short-a", 1, 0.8), ("short-b", 2, 0.1), ("short-held", 3, 0.4)):
        path = tmp_path / f"{name}.toml"
        path.write_text(PROFILE.format(name=name, seed=seed, battery=battery))
        out[name] = path
    return out
