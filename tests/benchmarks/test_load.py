"""The load benchmark's smoke mode on the tiny bundle: its accounting must hold on any machine."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "load.py"
ACCOUNTING = ("every accepted request that stayed completed",
              "nothing accepted is lost (server: finished + refused = sent)",
              "every refusal is 429 with Retry-After", "no other status, no transport error")


def test_load_smoke(tiny_bundle, tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("load_bench", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "load_bench", bench)  # dataclasses look their module up
    spec.loader.exec_module(bench)
    # a short queue: refusals happen however fast or busy the machine is
    bench.main(["--bundle", str(tiny_bundle), "--smoke", "--threads", "1", "--out", str(tmp_path),
                "--max-queue", "2"])
    rep = json.loads((tmp_path / "load_smoke.json").read_text())
    for name in ACCOUNTING:  # timing checks (RSS, /health p99) depend on the machine: the full run's job
        assert rep["checks"][name]["passed"], (name, rep["checks"][name])
    c = rep["clients"]
    assert c["sent"] > 20 and c["completed"] > 0 and c["left"] > 0 and c["rejected_429"] > 0
    assert "| every refusal is 429 with Retry-After | pass |" in (tmp_path / "load_smoke.md").read_text()
