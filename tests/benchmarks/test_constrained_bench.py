"""benchmarks/constrained.py runs on the tiny bundle and writes its table."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "constrained.py"


def test_constrained_benchmark_smoke(tiny_bundle, tmp_path):
    spec = importlib.util.spec_from_file_location("constrained_bench", SCRIPT)
    constrained = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(constrained)
    assert constrained.main(["--bundle", str(tiny_bundle), "--runs", "1", "--tokens", "32", "--threads", "1",
                             "--out", str(tmp_path)]) == 0
    r = json.loads((tmp_path / "constrained.json").read_text())
    assert r["plain_tok_s"] > 0 and r["constrained_tok_s"] > 0 and r["mask_us_per_token"] > 0
    assert "JSON-schema tok/s" in (tmp_path / "constrained.md").read_text()
