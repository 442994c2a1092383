"""Shared fixtures: the tiny in-process model and bundles built from it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge_runtime.bundle import read_manifest
from edge_runtime.control.catalog import VariantCatalog
from edge_runtime.sim.synthetic import write_synthetic_bundle

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The variants of the shared tiny bundle: one of each kind the runtime must handle.
TINY_RECIPE = {
    "name": "tiny",
    "evaluation": {"ppl_windows": 2, "ppl_seq_len": 64},
    "variant": [
        {"name": "dense", "method": "dense"},
        {"name": "dense-int8", "parent": "dense", "quantization": "int8"},
    ],
}


def build_tiny_bundle(out: Path, recipe: dict | None = None, measure_cost: bool = True) -> Path:
    """Export the tiny model into a real bundle at `out` (a few seconds)."""
    from export.load import tiny_model
    from export.pipeline import ExportOptions, export_bundle
    from export.recipe import Recipe

    export_bundle(
        tiny_model(),
        out,
        Recipe.from_dict(recipe or TINY_RECIPE),
        force=True,
        options=ExportOptions(threads=1, measure_cost=measure_cost, progress=False),
    )
    return out


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real bundle exported from the tiny model, shared by the whole session: do not modify it
    (copy it with `shutil.copytree` first)."""
    return build_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    """A manifest-only synthetic bundle: 5 variants, one failing its gate, harness scores."""
    return write_synthetic_bundle(tmp_path / "bundle", "small")


@pytest.fixture
def catalog(bundle: Path) -> VariantCatalog:
    return VariantCatalog.from_manifest(read_manifest(bundle))


SHORT_PROFILE_TEMPLATE = """
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


@pytest.fixture
def profiles(tmp_path: Path) -> dict[str, Path]:
    """Two short profiles to train on and one to hold out."""
    out = {}
    for name, seed, battery in (("short-a", 1, 0.8), ("short-b", 2, 0.1), ("short-held", 3, 0.4)):
        path = tmp_path / f"{name}.toml"
        path.write_text(SHORT_PROFILE_TEMPLATE.format(name=name, seed=seed, battery=battery))
        out[name] = path
    return out
