from __future__ import annotations

import json

from controller.baselines import LookaheadOracle, baseline_policies
from edge_runtime.sim.cli import main as edge_sim
from edge_runtime.sim.profile import load_profile
from edge_runtime.sim.simulator import Simulator


def test_oracle_beats_every_baseline(catalog, profiles):
    for name in ("short-a", "short-b"):
        prof = load_profile(profiles[name])
        base = {k: Simulator(prof, catalog).run(p, k).reward for k, p in baseline_policies(catalog).items()}
        assert set(base) == {"static:dense", "static:dense-int8", "static:structured-50", "static:dense-int4", "rule"}
        oracle = Simulator(prof, catalog).run(LookaheadOracle(catalog, horizon=8), "oracle")
        assert oracle.reward >= max(base.values()) - 1e-6, (name, oracle.reward, base)


def test_oracle_through_edge_sim(bundle, profiles, capsys):
    assert edge_sim(["--bundle", str(bundle), "--profile", str(profiles["short-b"]), "--controller", "oracle",
                     "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["reward"] > 0
