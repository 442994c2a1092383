"""benchmarks/peers.py runs on the tiny bundle (edge_runtime only, one round), so that it cannot rot;
its ratio rows are computed from whatever systems a run measured."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "peers.py"


def load():
    spec = importlib.util.spec_from_file_location("peers", SCRIPT)
    peers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peers)
    return peers


def test_peers_edge_only_on_the_tiny_bundle(tiny_bundle, tmp_path):
    peers = load()
    peers.main(["--bundle", str(tiny_bundle), "--edge", "dense-int8", "--llama", "--genai", "--rounds", "2", "--threads", "1",
                "--prompt", "16", "--new", "4", "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "peers")])
    res = json.loads((tmp_path / "peers.json").read_text())
    assert set(res["summary"]) == {"edge_runtime dense-int8"}
    for label, runs in res["runs"].items():
        assert len(runs) == 2, label  # one process per round
        assert all(r["decode_tok_s"] > 0 and r["prefill_tok_s"] > 0 and r["peak_rss_mb"] > 10 for r in runs)
    assert res["ratios"] == []  # no peer was measured, so no ratio is claimed
    assert "| edge_runtime dense-int8 |" in (tmp_path / "peers.md").read_text()


def test_ratios_are_medians_of_this_run():
    peers = load()
    med = {
        "edge_runtime dense": {"prefill_tok_s": 400, "decode_tok_s": 30, "ttft_ms": 300, "peak_rss_mb": 600},
        "llama.cpp F32": {"prefill_tok_s": 300, "decode_tok_s": 30, "ttft_ms": 400, "peak_rss_mb": 550},
    }
    summary = {k: {m: {"median": v, "min": v, "max": v} for m, v in d.items()} for k, d in med.items()}
    specs = [{"kind": "edge", "label": "edge_runtime dense", "gate": "pass"}]
    rows = {r["ratio"]: r for r in peers.ratios(summary, specs)}
    assert rows["dense fp32 prefill / llama.cpp F32"]["value"] == round(400 / 300, 3)
    assert rows["dense fp32 prefill / llama.cpp F32"]["pass"] is True  # >= 1.3
    assert rows["dense fp32 decode / llama.cpp F32"]["pass"] is False  # 1.0 < 1.1
    assert rows["dense fp32 peak RSS / llama.cpp F32 (lower is better)"]["pass"] is True  # 1.09 <= 1.2
    assert not any("Q8_0" in r for r in rows)
