"""The dependency rule (docs/DESIGN.md, section 2), checked for every room of the device side.

Each package below is imported module by module, recursively, in a fresh interpreter: none
may pull in torch, transformers, onnx, gymnasium, stable-baselines3 or the offline packages
(`export`, `controller`), not even lazily at import time. `harness` runs where the device runs, so
the same rule binds it; `edge_runtime` may not import `harness` either.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OFFLINE = ("torch", "transformers", "onnx", "gymnasium", "stable_baselines3", "export", "controller")
PACKAGES = {
    "edge_runtime": (*OFFLINE, "harness"),
    "edge_runtime.engine": (*OFFLINE, "harness"),
    "edge_runtime.control": (*OFFLINE, "harness"),
    "edge_runtime.serve": (*OFFLINE, "harness"),
    "edge_runtime.sim": (*OFFLINE, "harness"),
    "harness": OFFLINE,
}


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_package_imports_no_offline_tooling(package):
    forbidden = PACKAGES[package]
    code = (
        "import importlib, pkgutil, sys\n"
        f"pkg = importlib.import_module({package!r})\n"
        "names = [m.name for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.')]\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        f"bad = sorted({{m.split('.')[0] for m in sys.modules}} & set({forbidden!r}))\n"
        "print(len(names), bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    count, bad = out.stdout.strip().split(" ", 1)
    assert bad == "[]", f"{package} imports {bad}"
    assert int(count) > 0, out.stdout  # it really walked the modules
