"""The harness runs where the device runs: it imports no torch, transformers, export or controller."""

from __future__ import annotations

import subprocess
import sys

FORBIDDEN = ("torch", "transformers", "export", "controller")


def test_harness_imports_no_offline_package():
    code = (
        "import sys\n"
        "import harness.cli, harness.evaluate, harness.floors, harness.report, harness.scoring, "
        "harness.suite, harness.text\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({FORBIDDEN!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
