"""Fixtures of the device-side tests: a short profile, a scripted policy and runtimes over
the shared tiny bundle (synthetic bundles: tests/conftest.py)."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edge_runtime.control.observation import DeviceState
from edge_runtime.control.policy import Decision
from edge_runtime.control.signals import StaticSource
from edge_runtime.runtime import Runtime

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


class ScriptedPolicy:
    """A policy the test steers: picks `index` (first allowed if it may not run); waits for `gate`."""

    def __init__(self, index: int = 0) -> None:
        self.index = index
        self.gate = threading.Event()
        self.gate.set()
        self.seen: list[tuple[np.ndarray, np.ndarray]] = []

    def decide(self, obs: np.ndarray, allowed: np.ndarray) -> Decision:
        assert self.gate.wait(30), "test gate never opened"
        self.seen.append((obs.copy(), allowed.copy()))
        if allowed[self.index]:
            return Decision(self.index, f"scripted {self.index}")
        return Decision(int(np.flatnonzero(allowed)[0]), "scripted: first allowed")


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
def runtime_default(tiny_bundle: Path):
    """A runtime over the tiny bundle with its own controller (the rule policy: no trained one)."""
    rt = Runtime.open(tiny_bundle, signals=StaticSource(DeviceState()), threads=1)
    yield rt
    rt.close(grace_s=5)


@pytest.fixture
def bundle_copy(tiny_bundle: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny bundle that a test may damage."""
    dst = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, dst)
    return dst


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """edge-serve's app under a real uvicorn in a thread (stopped by `stop`)."""

    def __init__(self, app, **config) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    timeout_graceful_shutdown=5, **config))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        import time

        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def live(tiny_bundle: Path):
    """One real server per test module: runtime (ScriptedPolicy, max_queue 2), API key "sekrit"."""
    from edge_runtime.serve.app import ServerConfig, create_app

    policy = ScriptedPolicy()
    rt = Runtime.open(tiny_bundle, policy=policy, signals=StaticSource(DeviceState()), threads=1, max_queue=2)
    server = LiveServer(create_app(ServerConfig(bundle=str(tiny_bundle), api_key="sekrit"), runtime=rt))
    yield SimpleNamespace(url=server.url, runtime=rt, policy=policy, key="sekrit")
    policy.gate.set()
    server.stop()
    rt.close(grace_s=5)


@pytest.fixture
def port() -> int:
    """A free TCP port on 127.0.0.1."""
    return free_port()
