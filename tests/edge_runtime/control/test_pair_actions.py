"""Speculative pairs are actions like variants: in the catalog, edge-sim, the runtime's controller."""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.bundle import read_manifest
from edge_runtime.control.catalog import VariantCatalog
from edge_runtime.control.observation import DeviceState
from edge_runtime.control.signals import StaticSource
from edge_runtime.errors import VariantError
from edge_runtime.runtime import Runtime
from edge_runtime.sim.cli import simulate
from tests.edge_runtime.test_pairs import with_pairs

SYNTHETIC_PAIRS = [
    {"name": "dense+magnitude-50", "verifier": "dense", "drafter": "magnitude-50", "acceptance": 0.7,
     "cost": {"decode_ms_per_token": 18.0}},
    {"name": "magnitude-50+lookup", "verifier": "magnitude-50", "drafter": "prompt-lookup"},
]


def test_catalog_appends_pairs_with_the_verifiers_quality_and_their_own_decode_cost(bundle):
    with_pairs(bundle, SYNTHETIC_PAIRS)
    m = read_manifest(bundle)
    c = VariantCatalog.from_manifest(m)
    n = len(m.variants)
    assert c.names == (*m.names, "dense+magnitude-50", "magnitude-50+lookup") == m.actions
    # both models read the prompt: the verifier's prefill plus the model drafter's; a lookup drafter's is free
    assert c.decode_ms[n] == 18.0 and c.prefill_ms[n] == c.prefill_ms[0] + c.prefill_ms[m.index("magnitude-50")]
    assert c.prefill_ms[n + 1] == c.prefill_ms[m.index("magnitude-50")]
    assert c.quality_easy[n] == c.quality_easy[0] and c.quality_hard[n] == c.quality_hard[0]
    assert c.allowed[n] and not c.allowed[n + 1]  # the second pair's verifier failed its gate
    assert c.decode_ms[n + 1] == c.decode_ms[m.index("magnitude-50")]  # unmeasured: its verifier's cost
    # same quality as dense, cheaper to decode, dearer to prefill: neither dominates the other
    assert {0, n} <= set(c.undominated())


def test_edge_sim_runs_a_pair_as_a_static_controller(bundle, short_profile):
    with_pairs(bundle, SYNTHETIC_PAIRS)
    fast = simulate(bundle, str(short_profile), "static:dense+magnitude-50", seed=1, record=False)
    plain = simulate(bundle, str(short_profile), "static:dense", seed=1, record=False)
    assert fast.variant_share == {"dense+magnitude-50": 1.0}
    assert fast.energy_wh < plain.energy_wh and fast.reward > plain.reward  # 18 ms/token against 30
    with pytest.raises(VariantError, match=r"variant 'magnitude-50' failed its gate"):
        simulate(bundle, str(short_profile), "static:magnitude-50+lookup", seed=1, record=False)


def test_runtime_serves_a_pair_the_controller_chose(bundle_copy, make_policy):
    with_pairs(bundle_copy)
    policy = make_policy(index=2)  # actions: dense, dense-int8, dense+int8, dense+lookup
    rt = Runtime.open(bundle_copy, policy=policy, signals=StaticSource(DeviceState()), threads=1, preload="none")
    try:
        assert rt.allowed().tolist() == [True, True, True, True]
        r = rt.generate("one two one two one two", max_tokens=12, ignore_eos=True)
        assert r.variant == "dense+int8" and r.reason == "scripted 2" and r.timings.drafted_tokens > 0
        assert np.asarray(policy.seen[-1][1]).shape == (4,)
    finally:
        rt.close(grace_s=5)
