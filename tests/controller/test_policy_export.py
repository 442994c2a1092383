from __future__ import annotations

import json

import numpy as np
import pytest

import controller.policy_export as policy_export
from controller.env import EdgeDeviceEnv
from controller.policy_export import sample_observations, write_policy
from controller.train import policy_actions, train
from edge_runtime.bundle import read_manifest
from edge_runtime.control import observation
from edge_runtime.control.policy import OnnxPolicy, load_policy
from edge_runtime.errors import TrainError
from edge_runtime.sim.cli import main as edge_sim
from edge_runtime.sim.profile import load_profile

from .conftest import TINY


@pytest.fixture
def trained(catalog, profiles):
    profs = [load_profile(profiles["short-a"]), load_profile(profiles["short-b"])]
    model, env = train(TINY, catalog, profs, progress=False)
    names = [catalog.names[i] for i in env.get_attr("actions")[0]]
    obs = sample_observations(EdgeDeviceEnv(catalog, profs), 400, seed=0)
    return model, names, obs


def test_exported_policy_matches_sb3_and_lands_in_the_manifest(bundle, trained, capsys):
    model, names, obs = trained
    agree = write_policy(bundle, model, names, obs, {"algorithm": "ppo", "seed": 0, "timesteps": TINY.timesteps,
                                                     "trained_on": ["short-a", "short-b"], "held_out": []})
    assert agree["agreement"] == 1.0 and agree["observations"] == 400
    assert agree["max_abs_logprob_diff"] < 1e-4
    m = read_manifest(bundle)
    assert m.controller.policy == "controller/policy.onnx"
    assert m.controller.observation == observation.FEATURES
    assert m.controller.actions == ("dense", "dense-int8", "dense-int4")
    for key in ("observation_version", "algorithm", "seed", "timesteps", "trained_on", "held_out", "onnx_agreement"):
        assert key in m.controller.extra
    pol = OnnxPolicy.from_bundle(bundle)
    onnx_actions = pol.logits(obs).argmax(axis=1)
    assert np.array_equal(onnx_actions, policy_actions(model, obs))
    # the runtime's loader and edge-sim use it
    assert isinstance(load_policy(bundle, strict=True).primary, OnnxPolicy)
    assert edge_sim(["--bundle", str(bundle), "--profile", "commute-phone", "--controller", "rl", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["failed"] == 0


def test_a_disagreeing_export_writes_nothing(bundle, trained, monkeypatch):
    model, names, obs = trained
    before = (bundle / "manifest.json").read_text()
    monkeypatch.setattr(policy_export, "agreement", lambda *a: {"observations": 1, "agreement": 0.5,
                                                                "max_abs_logprob_diff": 1.0})
    with pytest.raises(TrainError, match=r"picks SB3's action on only 50.00% .* nothing was written"):
        write_policy(bundle, model, names, obs, {})
    assert (bundle / "manifest.json").read_text() == before
    assert not (bundle / "controller" / "policy.onnx").exists()
    assert not list((bundle / "controller").glob("*.tmp"))


def test_actions_must_be_bundle_variants(bundle, trained):
    model, _, obs = trained
    with pytest.raises(TrainError, match=r"actions \['ghost'\] are not variants"):
        write_policy(bundle, model, ["dense", "dense-int8", "ghost"], obs, {})
