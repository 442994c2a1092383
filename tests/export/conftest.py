"""Fixtures for the export tests: pruning on tiny models."""

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
