from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from controller.train import (
    Sb3Policy,
    TrainConfig,
    check_split,
    policy_actions,
    replay_score,
    train,
)
from edge_runtime.control import observation
from edge_runtime.errors import TrainError
from edge_runtime.sim.profile import load_profile

from .conftest import TINY


def params(model) -> np.ndarray:
    return np.concatenate([p.detach().numpy().ravel() for p in model.policy.parameters()])


def test_training_is_deterministic_for_a_seed(catalog, profiles):
    profs = [load_profile(profiles["short-a"]), load_profile(profiles["short-b"])]
    a, env = train(TINY, catalog, profs, progress=False)
    b, _ = train(TINY, catalog, profs, progress=False)
    c, _ = train(replace(TINY, seed=1), catalog, profs, progress=False)
    assert np.array_equal(params(a), params(b))
    assert not np.array_equal(params(a), params(c))
    obs = np.random.default_rng(0).random((32, observation.SIZE), dtype=np.float32)
    assert np.array_equal(policy_actions(a, obs), policy_actions(b, obs))
    assert env.get_attr("action_names")[0] == ("dense", "dense-int8", "dense-int4")


def test_selection_keeps_the_weights_of_the_best_replay(catalog, profiles):
    """Replays of the training profiles during training; the model comes back with the weights
    of the best one, whose replay it reproduces."""
    from edge_runtime.control.policy import StaticPolicy
    from edge_runtime.sim.simulator import RewardConfig, Simulator

    profs = [load_profile(profiles["short-a"]), load_profile(profiles["short-b"])]
    cfg = replace(TINY, select_every=max(TINY.timesteps // 4, 1))
    record: dict = {}
    model, env = train(cfg, catalog, profs, progress=False, record=record)
    steps, scores = zip(*record["replay_scores"], strict=True)
    assert len(scores) >= 4 and list(steps) == sorted(steps)
    assert record["kept_step"] == steps[int(np.argmax(scores))]
    baseline = {p.name: max(Simulator(p, catalog, RewardConfig(), record=False).run(StaticPolicy(i)).reward
                            for i in catalog.offered) for p in profs}
    again = replay_score(Sb3Policy(model, env.get_attr("actions")[0]), catalog, profs, RewardConfig(), baseline)
    assert again == pytest.approx(max(scores), abs=1e-5)


def test_a2c_trains_too(catalog, profiles):
    model, _ = train(replace(TINY, algorithm="a2c", n_steps=16), catalog, [load_profile(profiles["short-a"])],
                     progress=False)
    assert model.__class__.__name__ == "A2C"


def test_config_file_is_typed(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text('algorithm = "ppo"\ntimesteps = 1000\nnet_arch = [32, 32]\n')
    cfg = TrainConfig.from_toml(path)
    assert cfg.timesteps == 1000 and cfg.net_arch == (32, 32)
    assert TrainConfig.from_dict(__import__("json").loads(cfg.to_json())) == cfg


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("epochs = 3\n", r"unknown key 'epochs'; known keys: algorithm"),
        ("timesteps = 1.5\n", r"timesteps must be an integer, got float 1.5"),
        ('learning_rate = "fast"\n', r"learning_rate must be a number, got str"),
        ("net_arch = [32, -1]\n", r"net_arch must list positive layer widths"),
        ('algorithm = "dqn"\n', r"algorithm 'dqn' is not one of \['a2c', 'ppo'\]"),
        ("timesteps = 0\n", r"TrainConfig.timesteps must be >= 1"),
        ("gamma = 1.5\n", r"gamma and gae_lambda must be in \(0, 1\]"),
        ("lr_final = 0\n", r"lr_final is a fraction of learning_rate in \(0, 1\], got 0"),
    ],
)
def test_bad_config_names_the_key(tmp_path, text, match):
    path = tmp_path / "t.toml"
    path.write_text(text)
    with pytest.raises(TrainError, match=match):
        TrainConfig.from_toml(path)


def test_learning_rate_falls_linearly_to_its_floor():
    from controller.train import learning_rate

    assert learning_rate(TrainConfig(learning_rate=1e-3, lr_final=1.0)) == 1e-3  # constant: a plain float
    at = learning_rate(TrainConfig(learning_rate=1e-3, lr_final=0.05))
    assert [at(p) for p in (1.0, 0.5, 0.05, 0.0)] == pytest.approx([1e-3, 5e-4, 5e-5, 5e-5])


def test_held_out_profiles_must_not_be_trained_on():
    p = load_profile("desk-plugged")
    with pytest.raises(TrainError, match=r"\['desk-plugged'\] are both trained on and held out"):
        check_split([p, load_profile("laptop-battery")], [p])
