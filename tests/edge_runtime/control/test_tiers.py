"""Tiers of floors on the device: selection from the signals, masks from the gate, bad input."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest

from edge_runtime.bundle import write_manifest
from edge_runtime.config import RuntimeConfig
from edge_runtime.control.catalog import VariantCatalog
from edge_runtime.control.observation import DeviceState
from edge_runtime.control.policy import RulePolicy
from edge_runtime.control.signals import StaticSource
from edge_runtime.control.tiers import select_tier, tier_mask, tier_warning
from edge_runtime.errors import ProfileError
from edge_runtime.runtime import Runtime
from edge_runtime.sim.profile import Profile, load_profile
from edge_runtime.sim.simulator import Simulator
from edge_runtime.sim.synthetic import synthetic_manifest


@pytest.mark.parametrize(("device", "tier"), [
    (DeviceState(), "normal"),
    (DeviceState(battery_level=0.4, plugged_in=False), "saver"),
    (DeviceState(battery_level=0.4, plugged_in=True), "normal"),
    (DeviceState(battery_level=0.1, plugged_in=False), "critical"),
    (DeviceState(throttled=True), "saver"),
    (DeviceState(temperature_c=77.0, throttle_c=80.0), "saver"),
])
def test_auto_tier_follows_battery_and_heat(device, tier):
    assert select_tier(device) == tier
    assert select_tier(device, "critical") == "critical"  # the operator's setting wins


def test_tier_masks_nest_and_exclude_failed_variants():
    m = synthetic_manifest("smollm2", tiers=True)
    masks = {t: tier_mask(m, t) for t in ("normal", "saver", "critical")}
    assert masks["normal"].sum() < masks["saver"].sum() < masks["critical"].sum()
    assert (masks["normal"] <= masks["saver"]).all() and (masks["saver"] <= masks["critical"]).all()
    assert not masks["critical"][m.index("magnitude-50")]
    cat = VariantCatalog.from_manifest(m)
    s50 = m.index("structured-50")
    assert m.variants[s50].gate.status == "fail" and cat.allowed[s50]  # fails normal, serves in critical
    assert cat.in_tier("normal")[cat.dense] and not cat.in_tier("normal")[m.index("structured-50")]


def test_bundle_with_tiers_but_no_per_tier_gate_results_warns_once(tmp_path, caplog):
    m = synthetic_manifest("small")
    m = replace(m, extra={**m.extra, "tiers": ["normal", "saver", "critical"]})
    msg = tier_warning(m)
    assert msg is not None and "no per-tier gate results" in msg and "edge-eval" in msg
    assert tier_mask(m, "normal").all()  # untiered: everything the pass/fail gate allows
    assert VariantCatalog.from_manifest(m).tier_masks == {}
    assert tier_warning(synthetic_manifest("small", tiers=True)) is None


def test_profile_naming_an_unknown_tier_is_refused():
    with pytest.raises(ProfileError, match=r"profile\.tier: unknown tier 'eco'; choose one of"):
        Profile.from_dict({"name": "p", "tier": "eco"})
    assert Profile.from_dict({"name": "p", "tier": "saver"}).tier == "saver"


def test_runtime_config_rejects_an_unknown_tier():
    with pytest.raises(ValueError, match=r"RuntimeConfig.tier: unknown tier 'low'"):
        RuntimeConfig(tier="low")


def test_simulator_offers_only_the_tier_and_reports_per_tier():
    cat = VariantCatalog.from_manifest(synthetic_manifest("smollm2", tiers=True))
    prof = load_profile("phone-low-battery")
    normal = replace(prof, tier="normal")
    rep = Simulator(normal, cat).run(RulePolicy(cat), "rule")
    assert set(rep.tier_requests) == {"normal"}
    assert set(rep.variant_share) <= {cat.names[i] for i in np.flatnonzero(cat.in_tier("normal"))}
    auto = Simulator(prof, cat).run(RulePolicy(cat), "rule")
    assert set(auto.tier_requests) - {"normal"}  # a phone on a low battery leaves normal


def test_runtime_serves_only_what_clears_the_tier(bundle_copy, make_policy, caplog):
    from edge_runtime.bundle import read_manifest

    m = read_manifest(bundle_copy)
    names = m.names
    # the last variant fails the normal gate but clears critical; everything else clears every tier
    variants = tuple(replace(v, gate=replace(v.gate, status="fail" if i == len(names) - 1 else "pass",
                                             extra={**v.gate.extra, "tiers": (
        ["critical"] if i == len(names) - 1 else ["normal", "saver", "critical"])}))
        for i, v in enumerate(m.variants))
    write_manifest(bundle_copy, replace(m, variants=variants, extra={**m.extra, "tiers": ["normal", "saver", "critical"]}))
    last = len(names) - 1
    for tier, offered in (("normal", False), ("critical", True)):
        pol = make_policy(last)
        rt = Runtime.open(bundle_copy, policy=pol, signals=StaticSource(DeviceState()), threads=1, tier=tier,
                          preload="none")
        try:
            d, _ = rt.decide(8, 4)
            assert (d.variant == last) is offered
            assert rt.status()["tier"] == tier
        finally:
            rt.close(grace_s=5)
    # per-tier results missing for one variant: one warning at open, the pass/fail gate alone decides
    variants = variants[:-1] + (replace(variants[-1], gate=replace(variants[-1].gate, status="pass", extra={})),)
    write_manifest(bundle_copy, replace(m, variants=variants, extra={**m.extra, "tiers": ["normal", "saver", "critical"]}))
    with caplog.at_level(logging.WARNING, logger="edge_runtime.runtime"):
        rt = Runtime.open(bundle_copy, policy=make_policy(last), signals=StaticSource(DeviceState()), threads=1,
                          tier="normal", preload="none")
    try:
        assert sum("no per-tier gate results" in r.getMessage() for r in caplog.records) == 1
        assert rt.decide(8, 4)[0].variant == last
    finally:
        rt.close(grace_s=5)


def test_edge_sim_reports_delivered_slice_quality_per_tier():
    from edge_runtime.sim.cli import format_tiers, tier_quality

    m = synthetic_manifest("smollm2", tiers=True)
    cat = VariantCatalog.from_manifest(m)
    rep = Simulator(load_profile("phone-low-battery"), cat).run(RulePolicy(cat), "rule")
    q = tier_quality(rep, m)
    assert set(q) == set(rep.tier_requests)
    dense = m.variant("dense").quality.scores
    for per_slice in q.values():
        assert set(per_slice) == {"common", "edge", "adversarial", "multilingual"}
        assert all(0 < per_slice[s] <= dense[s] + 1e-9 for s in per_slice)
    assert "tier critical" in format_tiers(rep, q) or "tier saver" in format_tiers(rep, q)


def test_a_pair_delivers_its_verifiers_slice_quality():
    """Pairs are actions with their verifier's quality: edge-sim's per-tier report and the
    whole-system gate read it through Manifest.slice_scores (a bundle with pairs once crashed here)."""
    from edge_runtime.bundle import Pair
    from edge_runtime.control.policy import StaticPolicy
    from edge_runtime.sim.cli import tier_quality

    m = synthetic_manifest("smollm2", tiers=True)
    m = replace(m, pairs=(Pair(name="dense+lookup", verifier="dense", drafter="prompt-lookup"),))
    assert m.slice_scores()["dense+lookup"] == m.variant("dense").quality.scores
    cat = VariantCatalog.from_manifest(m)
    rep = Simulator(load_profile("desk-plugged"), cat).run(StaticPolicy(m.action_index("dense+lookup")), "static")
    assert "dense+lookup" in rep.variant_share
    q = tier_quality(rep, m)
    dense = m.variant("dense").quality.scores
    only_pair = [tier for tier, share in rep.tier_share.items() if set(share) == {"dense+lookup"}]
    assert only_pair
    for tier in only_pair:
        assert q[tier] and q[tier] == pytest.approx({s: dense[s] for s in q[tier]}, abs=1e-4)


def test_runtime_offers_a_pair_where_its_verifier_clears_the_tier(bundle_copy, make_policy):
    """Tier masks span variants and pairs (a tiered bundle with pairs once failed every request)."""
    import json

    from edge_runtime.bundle import read_manifest

    raw = json.loads((bundle_copy / "manifest.json").read_text())
    raw["pairs"] = [{"name": "dense+lookup", "verifier": "dense", "drafter": "prompt-lookup", "k_max": 4}]
    raw["tiers"] = ["normal", "saver", "critical"]
    for v in raw["variants"]:  # dense clears only critical, everything else every tier
        v["gate"] = {**v.get("gate", {}), "status": "pass",
                     "tiers": ["critical"] if v["name"] == "dense" else ["normal", "saver", "critical"]}
    (bundle_copy / "manifest.json").write_text(json.dumps(raw))
    m = read_manifest(bundle_copy)
    pair = m.action_index("dense+lookup")
    assert tier_mask(m, "normal").tolist() == [False] + [True] * (len(m.names) - 1) + [False]
    for tier, offered in (("normal", False), ("critical", True)):
        rt = Runtime.open(bundle_copy, policy=make_policy(pair), signals=StaticSource(DeviceState()), threads=1,
                          tier=tier, preload="none")
        try:
            d, _ = rt.decide(8, 4)
            assert (rt.manifest.actions[d.variant] == "dense+lookup") is offered
            assert rt.generate("a b a b", max_tokens=4, ignore_eos=True).token_ids
        finally:
            rt.close(grace_s=5)
