"""The interleaved multi-round cost driver and the catalog's use of the device's own figures."""

from __future__ import annotations

import pytest

from edge_runtime.bundle import read_manifest
from edge_runtime.control.catalog import VariantCatalog
from edge_runtime.engine.probe import main, measure_bundle, record_device_costs
from edge_runtime.errors import BundleError


def test_rounds_interleave_and_record_median_and_spread(bundle_copy):
    calls = []
    fake = {0: 3.0, 1: 1.0, 2: 2.0}  # per-round decode ms: the median is 2.0, the spread 2.0

    def one(path, threads):
        calls.append(path.parent.name)
        k = sum(1 for c in calls if c == path.parent.name) - 1
        return {"prefill_ms_per_token": 0.5, "decode_ms_per_token": fake[k]}

    m = read_manifest(bundle_copy)
    gated = [v.name for v in m.variants if v.passed]
    figs = measure_bundle(bundle_copy, rounds=3, measure_one=one)
    assert calls[: len(gated)] == gated and calls[len(gated)] == gated[1 % len(gated)]  # rotated, not fixed
    assert {f["decode_ms_per_token"] for f in figs.values()} == {2.0}
    assert {f["decode_spread_ms"] for f in figs.values()} == {2.0}
    record_device_costs(bundle_copy, figs)
    cat = VariantCatalog.from_manifest(read_manifest(bundle_copy))
    assert all(cat.decode_ms[cat.names.index(n)] == 2.0 for n in gated)  # the device's own figures win


def test_zero_rounds_is_refused(bundle_copy):
    with pytest.raises(BundleError, match=r"rounds must be >= 1, got 0"):
        measure_bundle(bundle_copy, rounds=0)


def test_command_measures_a_real_bundle(bundle_copy, capsys):
    assert main(["--bundle", str(bundle_copy), "--rounds", "2", "--threads", "1"]) == 0
    m = read_manifest(bundle_copy)
    dev = [v.cost.extra["device"] for v in m.variants if v.passed]
    assert dev and all(d["rounds"] == 2 and d["decode_ms_per_token"] > 0 and d["decode_spread_ms"] >= 0 for d in dev)
    assert "decode" in capsys.readouterr().out
