"""Fixtures for the export tests: pruning on tiny models, and the real model for slow tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def one_thread():
    """Tiny matrices: a second OpenMP thread only adds barrier waits (worse on a busy machine)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def smollm2():
    """The real default model (slow tests only); skipped where its wheel is missing."""
    from edge_runtime.errors import ExportError
    from export.load import load_model

    try:
        return load_model("smollm2-135m")
    except ExportError as e:
        pytest.skip(str(e))
