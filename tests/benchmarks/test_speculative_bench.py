"""The speculative benchmark runs on the tiny bundle (quick settings), so that it cannot rot."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "speculative.py"


def test_speculative_bench_quick(tiny_bundle, tmp_path):
    spec = importlib.util.spec_from_file_location("speculative_bench", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "spec"
    assert bench.main(["--bundle", str(tiny_bundle), "--quick", "--threads", "1", "--max-tokens", "12",
                       "--out", str(out)]) == 0
    res = json.loads(Path(f"{out}.json").read_text())
    assert len(res["verify_cost"]["dense"]["ratio"]) == 8 and "prompt-lookup" in res["drafter_cost"]
    assert all(r["identical"] for r in res["runs"])  # greedy output is always the verifier's
    assert {t["target"] for t in res["targets"]} >= {"always-rejected drafter (worst case)"}
    assert "## Targets" in Path(f"{out}.md").read_text()
