"""edge-train's environment offers speculative pairs as actions, like variants."""

from __future__ import annotations

from pathlib import Path

from gymnasium.utils.env_checker import check_env

from controller.env import EdgeDeviceEnv
from tests.edge_runtime.control.test_pair_actions import SYNTHETIC_PAIRS
from tests.edge_runtime.test_pairs import with_pairs

PROFILE = Path(__file__).resolve().parents[2] / "profiles" / "desk-plugged.toml"


def test_env_offers_an_undominated_pair(bundle):
    with_pairs(bundle, SYNTHETIC_PAIRS)
    env = EdgeDeviceEnv(bundle, [PROFILE])
    assert "dense+magnitude-50" in env.unwrapped.action_names  # the verifier's quality, cheaper decode
    assert "dense" in env.unwrapped.action_names  # prefills alone, cheaper than the pair's two prefills
    assert "magnitude-50+lookup" not in env.unwrapped.action_names  # its verifier failed the gate
    check_env(env, skip_render_check=True)
