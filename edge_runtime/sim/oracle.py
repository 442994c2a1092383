"""`LookaheadOracle`: a planner that knows the future of the profile (arrival times, request
sizes and difficulty, scripted events) and plans on the simulator itself. It is an upper
bound in spirit, not a proof: it plans over a finite horizon. It needs only the simulator,
so `edge-sim --controller oracle` runs on the device; `controller.baselines` re-exports it.

How the oracle decides, at each decision point:

1. For each candidate variant `a` (gate passed, not dominated: no other variant is at least
   as fast with at least the quality on easy and on hard requests), copy the simulator, serve
   the request with `a`, then serve the next `horizon - 1` requests with each continuation
   policy (keep using `a`; the rule controller) and keep the best return.
2. Returns are the run's reward with an extra shadow price `price_per_wh` on battery energy:
   the finite horizon cannot see the battery running flat an hour later, the price can.
3. The price is chosen once per run, at the first decision, by replaying the whole profile
   from that state with each price in `prices` and keeping the best reward (the oracle
   knows the future, so it may rehearse it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from edge_runtime.control.catalog import VariantCatalog
from edge_runtime.control.policy import Decision, Policy, RulePolicy
from edge_runtime.sim.simulator import Simulator

log = logging.getLogger(__name__)

DEFAULT_PRICES = (0.0, 40.0, 120.0, 400.0)  # shadow price per battery Wh, rehearsed once per run


class LookaheadOracle:
    """Plans each decision by rehearsing the known future on copies of the simulator.

    Args:
        catalog: the bundle's variants.
        horizon: requests looked ahead per decision (this one included).
        prices: shadow prices per battery Wh to rehearse; the best is kept for the run.
    """

    def __init__(self, catalog: VariantCatalog, horizon: int = 12, prices: Sequence[float] = DEFAULT_PRICES) -> None:
        self.catalog = catalog
        self.horizon = horizon
        self.prices = tuple(prices)
        self.candidates = list(catalog.undominated())
        self.rule = RulePolicy(catalog)
        self.price: float | None = None  # chosen at the first decision of a run
        self._run_id: int | None = None

    def _rollout(self, sim: Simulator, first: int, follow: Policy | None, price: float) -> float:
        s = sim.clone()
        s.reward_config = replace(s.reward_config, battery_per_wh=s.reward_config.battery_per_wh + price)
        start = s.totals.reward
        s.step(first)
        for _ in range(self.horizon - 1):
            if s.done:
                break
            v = first if follow is None else follow.decide(s.observation(), s.allowed).variant
            s.step(v)
        return s.totals.reward - start

    def choose(self, sim: Simulator, price: float) -> int:
        """The best first action at this decision point for a given shadow price."""
        best, best_v = -np.inf, self.candidates[0]
        for a in self.candidates:
            if not sim.allowed[a]:
                continue
            v = max(self._rollout(sim, a, None, price), self._rollout(sim, a, self.rule, price))
            if v > best:
                best, best_v = v, a
        return best_v

    def _tune(self, sim: Simulator) -> float:
        if len(self.prices) == 1 or not sim.profile.device.has_battery:
            return self.prices[0]
        scores = {}
        for price in self.prices:
            s = sim.clone()
            while not s.done:
                s.step(self.choose(s, price))
            scores[price] = s.totals.reward
        best = max(scores, key=lambda p: scores[p])
        log.info("oracle: shadow battery price %s per Wh (rehearsed rewards %s)", best,
                 {k: round(v, 1) for k, v in scores.items()})
        return best

    def plan(self, sim: Simulator) -> Decision:
        t0 = time.perf_counter()
        if self._run_id != id(sim) or self.price is None:
            self._run_id = id(sim)
            self.price = self._tune(sim)
        v = self.choose(sim, self.price)
        return Decision(v, f"oracle: price {self.price:g}/Wh", time.perf_counter() - t0, "oracle")
