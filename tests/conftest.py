"""Shared fixtures: the tiny in-process model and bundles built from it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge_runtime.bundle import read_manifest
from edge_runtime.catalog import VariantCatalog
from edge_runtime.synthetic import write_synthetic_bundle

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    """A manifest-only synthetic bundle: 5 variants, one failing its gate, harness scores."""
    return write_synthetic_bundle(tmp_path / "bundle", "small")


@pytest.fixture
def catalog(bundle: Path) -> VariantCatalog:
    return VariantCatalog.from_manifest(read_manifest(bundle))
