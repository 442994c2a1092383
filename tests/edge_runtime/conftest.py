"""Fixtures for the device-side tests: synthetic bundles (manifest only) and small profiles."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_runtime.bundle import read_manifest
from edge_runtime.catalog import VariantCatalog
from edge_runtime.synthetic import write_synthetic_bundle

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
def bundle(tmp_path: Path) -> Path:
    """A 5-variant synthetic bundle (one fails its gate), harness scores included."""
    return write_synthetic_bundle(tmp_path / "bundle", "small")


@pytest.fixture
def catalog(bundle: Path) -> VariantCatalog:
    return VariantCatalog.from_manifest(read_manifest(bundle))


@pytest.fixture
def short_profile(tmp_path: Path) -> Path:
    path = tmp_path / "short.toml"
    path.write_text(SHORT_PROFILE)
    return path
