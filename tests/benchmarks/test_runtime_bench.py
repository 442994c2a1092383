"""The runtime benchmark runs on the tiny bundle (quick settings), so that it cannot rot."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "runtime_bench.py"


def test_runtime_bench_quick(tiny_bundle, tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("runtime_bench", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "runtime_bench", bench)  # dataclasses look their module up
    spec.loader.exec_module(bench)
    assert bench.main(["--bundle", str(tiny_bundle), "--quick", "--threads", "1", "--skip", "server",
                       "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "runtime.json").read_text())
    assert [v["name"] for v in res["variants"]] == ["dense", "dense-int8"]
    for v in res["variants"]:  # the manifest's keys, plus the measurements
        assert {"name", "method", "sparsity", "quantization", "gate", "cost"} <= set(v)
        assert v["bench"]["decode_tok_s"] > 0 and v["bench"]["runtime_decode_tok_s"] > 0
    assert res["controller"]["decide_p99_ms"] > 0 and res["memory"]["requests"] == 60
    assert {"decision_p99_ms", "rss_growth_frac", "runtime_overhead_frac"} <= set(res["targets"])
    assert "| dense-int8 |" in (tmp_path / "runtime.md").read_text()
