"""Baselines the trained controller is measured against.

* every static variant and the runtime's rule controller: `edge_runtime.control.policy`
  (`StaticPolicy`, `RulePolicy`), gathered here by `baseline_policies`;
* `LookaheadOracle`, the planner that knows the profile's future: `edge_runtime.sim.oracle`
  (device-side, so `edge-sim` can run it), re-exported here.
"""

from __future__ import annotations

from edge_runtime.control.catalog import VariantCatalog
from edge_runtime.control.policy import Policy, RulePolicy, StaticPolicy
from edge_runtime.sim.oracle import DEFAULT_PRICES, LookaheadOracle

__all__ = ["DEFAULT_PRICES", "LookaheadOracle", "baseline_policies"]


def baseline_policies(catalog: VariantCatalog) -> dict[str, Policy]:
    """`static:<name>` for every allowed variant, and `rule`."""
    out: dict[str, Policy] = {f"static:{catalog.names[i]}": StaticPolicy(i) for i in catalog.offered}
    out["rule"] = RulePolicy(catalog)
    return out
