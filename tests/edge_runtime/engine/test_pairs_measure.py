"""Measuring speculative pairs: the function the exporter and `probe --pairs` share."""

from __future__ import annotations

import json

from edge_runtime.bundle import read_manifest
from edge_runtime.engine import probe
from edge_runtime.engine.pairs import verify_costs
from edge_runtime.engine.session import VariantSession
from tests.edge_runtime.test_pairs import with_pairs


def test_probe_pairs_measures_and_rewrites_the_manifest(bundle_copy, capsys):
    with_pairs(bundle_copy)
    assert probe.main(["--pairs", str(bundle_copy), "--threads", "1"]) == 0
    printed = json.loads(capsys.readouterr().out)
    m = read_manifest(bundle_copy)
    assert [p["name"] for p in printed] == [p.name for p in m.pairs]
    for p in m.pairs:
        assert 0.0 <= p.acceptance <= 1.0 and p.cost.decode_ms_per_token > 0
        assert p.cost.extra["verifier_ms_per_token"] > 0 and p.extra["verify_slope"] >= 0
    assert m.pair("dense+int8").extra["draft_ratio"] > 0
    for p in m.pairs:  # priced on the mix of prompt kinds, each kind's speedup kept
        assert p.cost.extra["prompts"] == "grounded+open"
        assert p.cost.extra["speedup_grounded"] > 0 and p.cost.extra["speedup_open"] > 0
    assert m.pair("dense+int8").acceptance > 0.5  # the int8 copy agrees with its parent


def test_probe_needs_a_model_or_pairs(capsys):
    import pytest

    with pytest.raises(SystemExit):
        probe.main([])
    assert "give exactly one of MODEL.onnx, --bundle DIR or --pairs BUNDLE" in capsys.readouterr().err


def test_verify_costs_one_entry_per_token_count(tiny_bundle):
    m = read_manifest(tiny_bundle)
    s = VariantSession(tiny_bundle / m.variant("dense").onnx, threads=1, storage="dense")
    costs = verify_costs(s.decoder(64), list(range(5, 25)), max_n=4, repeats=2)
    assert len(costs) == 4 and all(c > 0 for c in costs)
