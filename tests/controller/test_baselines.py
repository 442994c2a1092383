from __future__ import annotations

from controller.baselines import LookaheadOracle, baseline_policies
from edge_runtime.control.policy import RulePolicy, StaticPolicy
from edge_runtime.sim.oracle import LookaheadOracle as Oracle


def test_baselines_are_every_offered_static_variant_and_the_rule(catalog):
    base = baseline_policies(catalog)
    assert set(base) == {"static:dense", "static:dense-int8", "static:structured-50", "static:dense-int4", "rule"}
    assert isinstance(base["rule"], RulePolicy)
    assert all(isinstance(p, StaticPolicy) and catalog.names[p.index] == k.split(":", 1)[1]
               for k, p in base.items() if k != "rule")


def test_the_oracle_is_reexported():
    assert LookaheadOracle is Oracle
