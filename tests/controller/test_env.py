from __future__ import annotations

from dataclasses import replace

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import controller  # noqa: F401  (registers EdgeDevice-v0)
from controller.env import ENV_ID, EdgeDeviceEnv, perturb
from edge_runtime.control import observation
from edge_runtime.errors import BundleError, ProfileError
from edge_runtime.sim.profile import load_profile
from edge_runtime.sim.synthetic import write_synthetic_bundle


def test_registered_and_made_by_id(bundle, profiles):
    env = gymnasium.make(ENV_ID, bundle=str(bundle), profiles=[str(profiles["short-a"]), "laptop-battery"])
    obs, info = env.reset(seed=0)
    assert obs.shape == (observation.SIZE,) and info["profile"] in ("short-a", "laptop-battery")
    assert env.unwrapped.action_names == ("dense", "dense-int8", "dense-int4")


def test_passes_gymnasium_and_sb3_checkers(bundle, profiles):
    env = EdgeDeviceEnv(bundle, [profiles["short-a"]], randomize=0.3)
    check_env(env, skip_render_check=True)
    sb3_check_env(EdgeDeviceEnv(bundle, [profiles["short-a"]]), warn=True)


def test_failed_gate_is_never_offered(bundle, profiles):
    env = EdgeDeviceEnv(bundle, [profiles["short-a"]], prune_dominated=False)
    assert env.action_names == ("dense", "dense-int8", "structured-50", "dense-int4")
    assert "magnitude-50" not in env.action_names


def test_episode_runs_to_the_end_with_a_report(bundle, profiles):
    env = EdgeDeviceEnv(bundle, [profiles["short-b"]])
    env.reset(seed=1)
    total, done, steps = 0.0, False, 0
    while not done:
        _, r, done, truncated, info = env.step(0)  # dense on a 10% battery
        total += r
        steps += 1
        assert not truncated
    assert info["report"]["reward"] == pytest.approx(total)
    assert steps > 10


def test_reset_seed_is_deterministic(bundle, profiles):
    def rollout(seed):
        env = EdgeDeviceEnv(bundle, [profiles["short-a"], profiles["short-b"]], randomize=0.3)
        obs, _ = env.reset(seed=seed)
        out = [obs]
        for i in range(40):
            obs, _, done, _, _ = env.step(i % 3)
            out.append(obs)
            if done:
                obs, _ = env.reset()
        return np.array(out)

    assert np.array_equal(rollout(5), rollout(5))
    assert not np.array_equal(rollout(5), rollout(6))


def test_perturb_keeps_profiles_valid():
    p = load_profile("phone-low-battery")
    assert perturb(p, np.random.default_rng(0), 0.0) is p
    for seed in range(20):
        q = perturb(p, np.random.default_rng(seed), 0.3)
        q.device.validate()
        q.workload.validate()
        assert q.name == p.name and q.device.battery_wh == p.device.battery_wh


def test_perturb_gives_half_the_unmetered_boards_a_power_meter():
    p = load_profile("phone-low-battery")
    assert {perturb(p, np.random.default_rng(seed), 0.3).device.power_meter for seed in range(20)} == {False, True}
    metered = replace(p, device=replace(p.device, power_meter=True))
    assert all(perturb(metered, np.random.default_rng(seed), 0.3).device.power_meter for seed in range(5))


def test_bad_inputs(tmp_path, profiles):
    nocost = write_synthetic_bundle(tmp_path / "nocost", costs=False)
    with pytest.raises(BundleError, match=r"no measured cost"):
        EdgeDeviceEnv(nocost, [profiles["short-a"]])
    good = write_synthetic_bundle(tmp_path / "good")
    with pytest.raises(ProfileError, match=r"unknown profile 'nope'"):
        EdgeDeviceEnv(good, ["nope"])
    with pytest.raises(ProfileError, match=r"no profiles given"):
        EdgeDeviceEnv(good, [])
