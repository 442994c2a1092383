"""The lookahead oracle (edge_runtime.sim.oracle): an upper bound for every online controller."""

from __future__ import annotations

import json

from edge_runtime.control.policy import RulePolicy, StaticPolicy
from edge_runtime.sim.cli import main as edge_sim
from edge_runtime.sim.oracle import LookaheadOracle
from edge_runtime.sim.profile import load_profile
from edge_runtime.sim.simulator import Simulator


def test_oracle_beats_every_baseline(catalog, profiles):
    for name in ("short-a", "short-b"):
        prof = load_profile(profiles[name])
        baselines = {f"static:{catalog.names[i]}": StaticPolicy(i) for i in catalog.offered}
        baselines["rule"] = RulePolicy(catalog)
        base = {k: Simulator(prof, catalog).run(p, k).reward for k, p in baselines.items()}
        oracle = Simulator(prof, catalog).run(LookaheadOracle(catalog, horizon=8), "oracle")
        assert oracle.reward >= max(base.values()) - 1e-6, (name, oracle.reward, base)


def test_oracle_through_edge_sim(bundle, profiles, capsys):
    assert edge_sim(["--bundle", str(bundle), "--profile", str(profiles["short-b"]), "--controller", "oracle",
                     "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["reward"] > 0
