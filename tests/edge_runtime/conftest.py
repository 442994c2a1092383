"""Fixtures for the device-side tests: a short profile (bundles: tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

SHORT_PROFILE = """
name = "short"
duration_s = 300
seed = 3

[device]
battery_wh = 10.0
battery_start = 0.5
idle_w = 2.0
active_w = 8.0
ambient_c = 30.0
thermal_resistance_c_per_w = 4.0
thermal_time_constant_s = 60.0

[workload]
rate_per_s = 0.2
deadline_s = 8.0
"""


@pytest.fixture
def short_profile(tmp_path: Path) -> Path:
    path = tmp_path / "short.toml"
    path.write_text(SHORT_PROFILE)
    return path
