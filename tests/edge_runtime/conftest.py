"""Fixtures of the runtime tests: a scripted policy and runtimes over the shared tiny bundle."""

from __future__ import annotations

import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.observation import DeviceState
from edge_runtime.runtime import Runtime
from edge_runtime.signals import StaticSource


@dataclass
class Choice:
    variant: int
    reason: str
    latency_s: float = 0.0


class ScriptedPolicy:
    """A policy the test steers: picks `index` (first allowed if it may not run); waits for `gate`."""

    def __init__(self, index: int = 0) -> None:
        self.index = index
        self.gate = threading.Event()
        self.gate.set()
        self.seen: list[tuple[np.ndarray, np.ndarray]] = []

    def decide(self, obs: np.ndarray, allowed: np.ndarray) -> Choice:
        assert self.gate.wait(30), "test gate never opened"
        self.seen.append((obs.copy(), allowed.copy()))
        if allowed[self.index]:
            return Choice(self.index, f"scripted {self.index}")
        return Choice(int(np.flatnonzero(allowed)[0]), "scripted: first allowed")


@pytest.fixture
def make_policy() -> type[ScriptedPolicy]:
    """The ScriptedPolicy class, for tests that open their own runtimes."""
    return ScriptedPolicy


@pytest.fixture
def policy() -> ScriptedPolicy:
    return ScriptedPolicy()


@pytest.fixture
def runtime(tiny_bundle: Path, policy: ScriptedPolicy):
    """A fresh runtime over the tiny bundle, steered by `policy`, with static signals."""
    rt = Runtime.open(tiny_bundle, policy=policy, signals=StaticSource(DeviceState()), threads=1)
    yield rt
    policy.gate.set()
    rt.close(grace_s=5)


@pytest.fixture
def bundle_copy(tiny_bundle: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny bundle that a test may damage."""
    dst = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, dst)
    return dst
