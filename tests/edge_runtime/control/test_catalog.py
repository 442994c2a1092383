from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest

from edge_runtime.bundle import Cost, Quality
from edge_runtime.control.catalog import HARD_EXPONENT, VariantCatalog
from edge_runtime.errors import BundleError
from edge_runtime.sim.synthetic import synthetic_manifest


def test_dense_is_the_reference_and_hard_requests_lose_more():
    cat = VariantCatalog.from_manifest(synthetic_manifest("smollm2"))
    assert cat.names[cat.dense] == "dense"
    assert cat.quality(cat.dense, 0.0) == pytest.approx(1.0)
    assert cat.quality(cat.dense, 1.0) == pytest.approx(1.0)
    for i in range(1, len(cat)):
        assert cat.quality(i, 1.0) < cat.quality(i, 0.0) < 1.0


def test_scores_give_slice_retention():
    cat = VariantCatalog.from_manifest(synthetic_manifest("small"))
    i = cat.names.index("dense-int4")
    assert cat.quality_source == "scores"
    assert cat.quality_easy[i] == pytest.approx((0.65 + 0.47) / (0.72 + 0.55))
    assert cat.quality_hard[i] == pytest.approx(((0.25 + 0.15) / (0.42 + 0.30)) ** HARD_EXPONENT)


def test_perplexity_fallback_is_logged(caplog):
    with caplog.at_level(logging.INFO, logger="edge_runtime.control.catalog"):
        cat = VariantCatalog.from_manifest(synthetic_manifest("small", scores=False))
    assert cat.quality_source == "perplexity"
    assert "perplexity retention" in caplog.text
    i = cat.names.index("dense-int8")
    assert cat.quality_easy[i] == pytest.approx(20.1 / 34.0)


def test_work_seconds_from_measured_costs():
    cat = VariantCatalog.from_manifest(synthetic_manifest("small"))
    assert cat.work_s(cat.dense, 100, 50) == pytest.approx((100 * 2.6 + 50 * 30.0) / 1000)


def test_failed_gate_is_not_offered_and_dominated_variants_are_pruned():
    cat = VariantCatalog.from_manifest(synthetic_manifest("small"))
    assert "magnitude-50" not in [cat.names[i] for i in cat.offered]
    assert not cat.allowed[cat.names.index("magnitude-50")]
    # structured-50 is slower than dense-int4 and worse on both easy and hard requests
    assert [cat.names[i] for i in cat.undominated()] == ["dense", "dense-int8", "dense-int4"]


def test_bundle_without_measured_costs_is_rejected():
    with pytest.raises(BundleError, match=r"variant 'dense' has no measured cost .*re-export"):
        VariantCatalog.from_manifest(synthetic_manifest("small", costs=False))


def test_variant_without_any_quality_is_rejected():
    m = synthetic_manifest("small")
    v = m.variants[1]
    m = m.replace_variant(replace(v, quality=Quality(perplexity=None, scores={})))
    with pytest.raises(BundleError, match=r"'dense-int8' has neither harness scores .* run edge-eval"):
        VariantCatalog.from_manifest(m)


def test_non_positive_cost_is_rejected():
    m = synthetic_manifest("small")
    v = m.variants[0]
    m = m.replace_variant(replace(v, cost=Cost(0.0, 30.0, 700)))
    with pytest.raises(BundleError, match=r"must be > 0 ms per token"):
        VariantCatalog.from_manifest(m)


def test_arrays_are_in_manifest_order():
    m = synthetic_manifest("smollm2")
    cat = VariantCatalog.from_manifest(m)
    assert cat.names == m.names
    assert np.allclose(cat.decode_ms, [v.cost.decode_ms_per_token for v in m.variants])
