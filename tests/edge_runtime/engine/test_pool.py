"""The variant pool: gates, memory budget with LRU unloading, fencing."""

from __future__ import annotations

import json
import logging

import pytest

from edge_runtime.bundle import read_manifest
from edge_runtime.engine.pool import VariantPool
from edge_runtime.errors import BundleError, VariantError


def edit(bundle, fn):
    path = bundle / "manifest.json"
    raw = json.loads(path.read_text())
    fn(raw)
    path.write_text(json.dumps(raw))
    return read_manifest(bundle)


def fail_gate(raw, i=1):
    raw["variants"][i]["gate"] = {"status": "fail", "failed": ["perplexity"]}


def test_failed_gate_is_excluded_unless_ungated(bundle_copy, caplog):
    m = edit(bundle_copy, fail_gate)
    pool = VariantPool(bundle_copy, m, threads=1)
    assert pool.allowed().tolist() == [True, False]
    assert "failed its evaluation gate (perplexity)" in pool.why_not(1)
    with pytest.raises(VariantError, match=r"'dense-int8' may not run: failed its evaluation gate"):
        pool.get(1, 16)
    ungated = VariantPool(bundle_copy, m, threads=1, allow_ungated=True)
    assert ungated.allowed().all()
    assert "RUNNING UNGATED" in caplog.text


def test_never_evaluated_variants_get_one_warning_naming_them(bundle_copy, caplog):
    m = edit(bundle_copy, fail_gate)  # dense stays pending (a fresh export), dense-int8 failed
    with caplog.at_level(logging.WARNING, logger="edge_runtime.engine.pool"):
        VariantPool(bundle_copy, m, threads=1)
    pending = [r.getMessage() for r in caplog.records if "never evaluated" in r.getMessage()]
    assert len(pending) == 1 and "never evaluated (no quality gate): dense;" in pending[0]
    caplog.clear()
    m = edit(bundle_copy, lambda r: [v.update(gate={"status": "pass", "failed": []}) for v in r["variants"]])
    VariantPool(bundle_copy, m, threads=1)
    assert "never evaluated" not in caplog.text


def test_nothing_servable_is_a_bundle_error(bundle_copy):
    m = edit(bundle_copy, lambda r: (fail_gate(r, 0), fail_gate(r, 1)))
    with pytest.raises(BundleError, match=r"no variant .* may be served: dense: failed its evaluation gate.*allow_ungated"):
        VariantPool(bundle_copy, m)


def test_budget_unloads_least_recently_used(bundle_copy, caplog):
    caplog.set_level(logging.INFO, "edge_runtime.engine.pool")

    def costs(raw):
        for v in raw["variants"]:
            v["cost"]["peak_rss_mb"] = 100.0

    m = edit(bundle_copy, costs)
    pool = VariantPool(bundle_copy, m, threads=1, memory_budget_mb=150)
    a, load_a = pool.get(0, 16)
    assert load_a > 0
    again, load_again = pool.get(0, 16)
    assert again is a and load_again == 0.0  # a switch to a loaded variant costs nothing
    pool.get(1, 16)
    assert list(pool.loaded) == [1] and pool.used_mb == 100.0
    assert "unloading variant 'dense'" in caplog.text


def test_variant_over_budget_is_excluded(bundle_copy):
    m = edit(bundle_copy, lambda r: r["variants"][0]["cost"].update(peak_rss_mb=900.0))
    pool = VariantPool(bundle_copy, m, threads=1, memory_budget_mb=500)
    assert pool.allowed().tolist() == [False, True]
    assert "over the memory budget of 500 MiB" in pool.why_not(0)


def test_estimate_without_cost_uses_weights_and_cache(bundle_copy):
    m = edit(bundle_copy, lambda r: [v.update(cost={}) for v in r["variants"]])
    pool = VariantPool(bundle_copy, m)
    dense, q = m.variants
    kv_mb = 2 * 2 * 2 * 16 * 4 * m.model.context_length / 2**20  # layers x (k, v) x kv_heads x head_dim x fp32
    assert pool.estimate_mb(dense) == pytest.approx(max(dense.params * 4, dense.file_bytes) / 2**20 + kv_mb)
    assert pool.estimate_mb(q) == pytest.approx(q.file_bytes / 2**20 + kv_mb)


def test_corrupt_file_fails_to_load_and_fencing(bundle_copy):
    m = read_manifest(bundle_copy)
    (bundle_copy / m.variants[1].onnx).write_bytes(b"\x00garbage")
    pool = VariantPool(bundle_copy, m, threads=1)
    with pytest.raises(VariantError, match="cannot load"):
        pool.get(1, 16)  # a variant that fails to load is fenced by the pool, counted once
    assert pool.allowed().tolist() == [True, False] and pool.next_allowed(1) == 0
    assert pool.why_not(1).startswith("fenced after a failure: onnxruntime cannot load")
    pool.fence(1, "broken again")  # fencing twice keeps the first reason and counts nothing more
    assert pool.why_not(1).startswith("fenced after a failure: onnxruntime cannot load")
    text = pool.metrics.export().decode()
    assert 'edge_variant_failures_total{variant="dense-int8"} 1.0' in text
    assert 'edge_variant_fenced{variant="dense-int8"} 1.0' in text


@pytest.mark.parametrize("where", ["../../../outside.data", "/ABS/outside.data"])
def test_external_data_outside_the_variant_is_refused(bundle_copy, tmp_path, where):
    """onnxruntime (>= 1.20, the floor in pyproject) refuses external data that escapes the model's
    folder; this pins that a bundle cannot make the runtime read a file outside it."""
    import onnx

    model = bundle_copy / "variants" / "dense-int8" / "model.onnx"
    outside = tmp_path / "outside.data"
    (model.parent / "model.onnx.data").rename(outside)
    where = where.replace("/ABS", str(tmp_path))
    assert (model.parent / where).resolve() == outside.resolve()
    proto = onnx.load(str(model), load_external_data=False)
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = where
    onnx.save(proto, str(model))
    pool = VariantPool(bundle_copy, read_manifest(bundle_copy), threads=1)
    with pytest.raises(VariantError, match="dense-int8"):
        pool.get(1, capacity=16)
