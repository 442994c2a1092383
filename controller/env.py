"""`EdgeDevice-v0`: the gymnasium environment the controller is trained in.

One episode replays one profile (drawn uniformly from `profiles` at each reset) through
`edge_runtime.sim.simulator.Simulator`, the same replay `edge-sim` runs. One step is one
decision: the action picks the variant for the request at the head of the queue; the
observation is `edge_runtime.control.observation.encode` of the next decision point; the reward
is the simulator's (`RewardConfig`) accrued until then. The episode ends (`terminated`)
when the profile's requests are done or the battery runs out.

    import gymnasium, controller  # importing `controller` registers the id
    env = gymnasium.make("EdgeDevice-v0", bundle="bundles/x", profiles=["laptop-battery"])

Actions are the bundle's *offered* variants: gate passed and, with `prune_dominated`
(default), not dominated (`VariantCatalog.undominated`). `env.unwrapped.actions` maps an
action to a manifest variant index. Failed-gate variants are never offered. In a tiered
bundle an action whose variant does not clear the tier in force (`Simulator.allowed`) is
served by the densest action that does (the runtime's fallback for a refused choice); the
observation tells the policy what the tier follows (battery, heat), so it learns to avoid them.

Domain randomization (`randomize` = r > 0) perturbs each episode's profile so that a policy
does not memorize the training profiles: battery_start, rate_per_s, burst_rate_per_s,
deadline_s, speed, active_w and the thermal resistance are scaled by exp(U(-r, r)),
ambient_c is shifted by U(-10 r, 10 r) degrees, a board without a power meter gets one in
half the episodes (`power_measured` = 1: the modelled draw observed as a reading, so that a
policy has met both kinds before a device shows it one), and arrivals use a fresh seed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import gymnasium as gym
import numpy as np

from edge_runtime.bundle import read_manifest
from edge_runtime.control import observation
from edge_runtime.control.catalog import VariantCatalog
from edge_runtime.errors import ProfileError
from edge_runtime.sim.profile import Profile, load_profile
from edge_runtime.sim.simulator import RewardConfig, Simulator
from edge_runtime.sim.workload import generate_requests

ENV_ID = "EdgeDevice-v0"


def perturb(profile: Profile, rng: np.random.Generator, r: float) -> Profile:
    """A randomized copy of `profile` (module docstring); r = 0 returns it unchanged."""
    if r <= 0:
        return profile

    def scale() -> float:
        return math.exp(rng.uniform(-r, r))

    d, w = profile.device, profile.workload
    device = replace(
        d,
        battery_start=min(1.0, d.battery_start * scale()),
        speed=d.speed * scale(),
        active_w=d.active_w * scale(),
        thermal_resistance_c_per_w=d.thermal_resistance_c_per_w * scale(),
        ambient_c=d.ambient_c + rng.uniform(-10 * r, 10 * r),
        power_meter=d.power_meter or bool(rng.random() < 0.5),
    )
    workload = replace(
        w,
        rate_per_s=w.rate_per_s * scale(),
        burst_rate_per_s=w.burst_rate_per_s * scale(),
        deadline_s=w.deadline_s * scale(),
    )
    return replace(profile, device=device, workload=workload)


def load_profiles(profiles: Sequence[str | os.PathLike[str] | Profile]) -> list[Profile]:
    """Profiles from names, paths or `Profile` objects; at least one."""
    if not profiles:
        raise ProfileError("no profiles given: pass at least one bundled name or .toml path")
    return [p if isinstance(p, Profile) else load_profile(p) for p in profiles]


class EdgeDeviceEnv(gym.Env):
    """One request decision per step on a simulated device (module docstring).

    Args:
        bundle: a bundle directory (only its manifest is read) or a `VariantCatalog`.
        profiles: names, paths or `Profile`s; one is drawn per episode.
        reward: reward weights (default `RewardConfig()`).
        randomize: domain randomization strength r (0: replay profiles as written).
        prune_dominated: offer only undominated variants.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        bundle: str | os.PathLike[str] | VariantCatalog,
        profiles: Sequence[str | os.PathLike[str] | Profile],
        reward: RewardConfig | dict[str, float] | None = None,
        randomize: float = 0.0,
        prune_dominated: bool = True,
    ) -> None:
        super().__init__()
        self.catalog = bundle if isinstance(bundle, VariantCatalog) else VariantCatalog.from_manifest(
            read_manifest(bundle))
        self.profiles = load_profiles(profiles)
        self.reward_config = RewardConfig.from_dict(reward) if isinstance(reward, dict) else (reward or RewardConfig())
        if randomize < 0:
            raise ValueError(f"randomize must be >= 0, got {randomize}")
        self.randomize = randomize
        self.actions: tuple[int, ...] = self.catalog.undominated() if prune_dominated else self.catalog.offered
        self.action_space = gym.spaces.Discrete(len(self.actions))
        self.observation_space = gym.spaces.Box(0.0, 1.0, shape=(observation.SIZE,), dtype=np.float32)
        self.sim: Simulator | None = None

    @property
    def action_names(self) -> tuple[str, ...]:
        return tuple(self.catalog.names[i] for i in self.actions)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        rng = self.np_random
        for _ in range(100):  # a randomized profile may, rarely, draw no request at all
            base = self.profiles[int(rng.integers(len(self.profiles)))]
            profile = perturb(base, rng, self.randomize)
            requests = generate_requests(profile, seed=int(rng.integers(2**31 - 1)))
            self.sim = Simulator(profile, self.catalog, self.reward_config, requests=requests, record=False)
            if not self.sim.done:
                return self.sim.observation(), {"profile": base.name}
        raise ProfileError(f"profiles {[p.name for p in self.profiles]} produce no requests to decide on")

    def step(self, action: int | np.integer) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self.sim is None:
            raise RuntimeError("call reset() before step()")
        if not self.action_space.contains(action):
            raise ValueError(f"action {action!r} is outside {self.action_space}")
        variant = self.actions[int(action)]
        allowed = self.sim.allowed
        if not allowed[variant]:
            variant = next((a for a in self.actions if allowed[a]), int(np.flatnonzero(allowed)[0]))
        reward = self.sim.step(variant)
        obs = self.sim.observation()
        info = {"t": self.sim.now, "profile": self.sim.profile.name}
        if self.sim.done:
            info["report"] = self.sim.report().summary()
        return obs, float(reward), self.sim.done, False, info
