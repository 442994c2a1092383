from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.bundle import ControllerInfo, read_manifest, write_manifest
from edge_runtime.control import observation
from edge_runtime.control.observation import DeviceState, RequestState, encode
from edge_runtime.control.policy import (
    Decision,
    FallbackPolicy,
    OnnxPolicy,
    Policy,
    RulePolicy,
    StaticPolicy,
    load_policy,
)
from edge_runtime.errors import PolicyError


def linear_onnx(path: Path, weights: np.ndarray, in_name: str = "observation", out_name: str = "logits") -> Path:
    """A policy graph logits = obs @ W, W [in, A], built with onnx.helper."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    n_in, n_out = weights.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", [in_name, "W"], [out_name])], "policy",
        [helper.make_tensor_value_info(in_name, TensorProto.FLOAT, ["N", n_in])],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, ["N", n_out])],
        [numpy_helper.from_array(weights.astype(np.float32), "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def obs_for(battery=1.0, plugged=True, temp=40.0, throttled=False, queue=0, prompt=100, new=64, deadline=8.0,
            hard=0.0, recent_ms=0.0) -> np.ndarray:
    return encode(DeviceState(battery, plugged, temp, 80.0, throttled),
                  RequestState(prompt, new, deadline, hard, queue, 0.0, recent_ms))


ALL = np.ones(5, dtype=bool)


def test_static_policy(catalog):
    assert StaticPolicy(1).decide(obs_for(), ALL) == Decision(1, "static", pytest.approx(0.0, abs=0.01), "static")
    d = StaticPolicy(4).decide(obs_for(), catalog.allowed)
    assert d.variant == 0 and "not allowed" in d.reason


@pytest.mark.parametrize(
    ("kw", "variant", "reason"),
    [
        ({}, "dense", "rule: resources ok"),
        ({"plugged": False, "battery": 0.1}, "dense-int4", "battery<20%"),
        ({"plugged": True, "battery": 0.1}, "dense", "resources ok"),
        ({"throttled": True, "temp": 85.0}, "dense-int4", "throttled"),
        ({"queue": 8}, "dense-int4", "queue>=6"),
        ({"plugged": False, "battery": 0.4, "hard": 1.0}, "dense-int4", "battery<50%"),
        ({"temp": 77.0, "prompt": 1000, "new": 16}, "dense-int8", "headroom<5C"),
        ({"deadline": 1.0, "new": 100}, "dense-int4", "deadline"),
    ],
)
def test_rule_policy_thresholds(catalog, kw, variant, reason):
    d = RulePolicy(catalog).decide(obs_for(**kw), catalog.allowed)
    assert catalog.names[d.variant] == variant
    assert reason in d.reason and d.reason.startswith("rule: ")


def test_rule_policy_never_picks_a_disallowed_variant(catalog):
    allowed = catalog.allowed.copy()
    allowed[0] = False
    assert RulePolicy(catalog).decide(obs_for(), allowed).variant != 0


def test_onnx_policy_argmax_over_allowed(tmp_path):
    w = np.zeros((observation.SIZE, 3))
    w[0] = [3.0, 2.0, 1.0]  # battery_level feature drives the logits
    pol = OnnxPolicy(linear_onnx(tmp_path / "p.onnx", w), 3, variant_index=[0, 1, 3])
    assert isinstance(pol, Policy)
    assert pol.decide(obs_for(), ALL) == Decision(0, "rl", pytest.approx(0.0, abs=0.01))
    allowed = ALL.copy()
    allowed[0] = False
    assert pol.decide(obs_for(), allowed).variant == 1
    allowed[1] = False
    assert pol.decide(obs_for(), allowed).variant == 3
    assert pol.logits(np.stack([obs_for(), obs_for()])).shape == (2, 3)


def test_onnx_policy_rejects_wrong_observation_size(tmp_path):
    path = linear_onnx(tmp_path / "p.onnx", np.zeros((observation.SIZE + 1, 3)))
    with pytest.raises(PolicyError, match=rf"expects observations of shape \['N', {observation.SIZE + 1}\].*retrain"):
        OnnxPolicy(path, 3)


def test_onnx_policy_rejects_bad_files(tmp_path):
    with pytest.raises(PolicyError, match=r"does not exist; train one with edge-train"):
        OnnxPolicy(tmp_path / "missing.onnx", 3)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(PolicyError, match=r"cannot be loaded by onnxruntime"):
        OnnxPolicy(tmp_path / "junk.onnx", 3)
    path = linear_onnx(tmp_path / "names.onnx", np.zeros((observation.SIZE, 3)), in_name="x")
    with pytest.raises(PolicyError, match=r"the contract is input 'observation' and output 'logits'"):
        OnnxPolicy(path, 3)
    path = linear_onnx(tmp_path / "p.onnx", np.zeros((observation.SIZE, 3)))
    with pytest.raises(PolicyError, match=r"outputs logits of shape \['N', 3\], expected \[N, 4\]"):
        OnnxPolicy(path, 4)


def test_fallback_policy_counts_and_explains(catalog):
    rule = RulePolicy(catalog)

    class Raises:
        def decide(self, obs, allowed):
            raise RuntimeError("boom")

    class Garbage:
        def __init__(self, v):
            self.v = v

        def decide(self, obs, allowed):
            return Decision(self.v, "rl")

    fb = FallbackPolicy(None, rule)  # a bundle that names no policy: the rule decides by design
    d = fb.decide(obs_for(), catalog.allowed)
    assert d.reason.startswith("fallback: no policy -> rule: ") and d.source == "rule" and fb.fallbacks == 0
    fb = FallbackPolicy(None, rule, missing="policy.onnx is not ONNX")  # named, but unusable
    d = fb.decide(obs_for(), catalog.allowed)
    assert d.source == "fallback" and fb.fallbacks == 1
    fb = FallbackPolicy(Raises(), rule)
    d = fb.decide(obs_for(), catalog.allowed)
    assert d.reason.startswith("fallback: policy raised RuntimeError: boom -> rule") and d.source == "fallback"
    for bad in (-1, 99, 4, "x"):  # out of range, out of range, failed gate, not an index
        fb = FallbackPolicy(Garbage(bad), rule)
        d = fb.decide(obs_for(), catalog.allowed)
        assert "which is not allowed" in d.reason and catalog.allowed[d.variant]
        assert fb.fallbacks == 1 and fb.decisions == 1
    fb = FallbackPolicy(Garbage(2), rule)
    assert fb.decide(obs_for(), catalog.allowed) == Decision(2, "rl", pytest.approx(0.0, abs=0.01))
    assert fb.fallbacks == 0


def install_policy(bundle: Path, weights: np.ndarray, actions: list[str],
                   features: tuple[str, ...] = observation.FEATURES, **extra) -> None:
    (bundle / "controller").mkdir(exist_ok=True)
    linear_onnx(bundle / "controller" / "policy.onnx", weights)
    m = read_manifest(bundle)
    ctl = ControllerInfo("controller/policy.onnx", features, tuple(actions),
                         {"observation_version": observation.OBSERVATION_VERSION, **extra})
    write_manifest(bundle, replace(m, controller=ctl))


def test_load_policy_from_bundle(bundle):
    assert load_policy(bundle).primary is None
    w = np.zeros((observation.SIZE, 2))
    w[0] = [0.0, 1.0]
    install_policy(bundle, w, ["dense", "dense-int4"])
    pol = load_policy(bundle, strict=True)
    assert isinstance(pol.primary, OnnxPolicy)
    d = pol.decide(obs_for(), np.array([True, True, True, True, False]))
    assert d.variant == read_manifest(bundle).index("dense-int4") and d.reason == "rl"


def test_load_policy_rejects_mismatches(bundle, caplog):
    install_policy(bundle, np.zeros((observation.SIZE - 2, 2)), ["dense", "dense-int4"])
    with pytest.raises(PolicyError, match=r"expects observations of shape"):
        load_policy(bundle, strict=True)
    assert load_policy(bundle).primary is None and "deciding with the rule policy" in caplog.text
    install_policy(bundle, np.zeros((observation.SIZE, 2)), ["dense", "nonexistent"])
    with pytest.raises(PolicyError, match=r"name variants not in the bundle \(\['nonexistent'\]\)"):
        load_policy(bundle, strict=True)
    install_policy(bundle, np.zeros((observation.SIZE, 2)), ["dense", "dense-int4"], observation_version=0)
    with pytest.raises(PolicyError, match=r"observation version 0, this runtime encodes version"):
        load_policy(bundle, strict=True)
    install_policy(bundle, np.zeros((observation.SIZE, 2)), ["dense", "dense-int4"], features=("battery_level",))
    with pytest.raises(PolicyError, match=r"trained on observation features \['battery_level'\]"):
        load_policy(bundle, strict=True)


def test_a_version_1_policy_is_refused_by_its_version(bundle, caplog):
    v1 = observation.FEATURES[:12]  # version 1: the features before power and power_measured
    install_policy(bundle, np.zeros((len(v1), 2)), ["dense", "dense-int4"], features=v1, observation_version=1)
    with pytest.raises(PolicyError, match=r"observation version 1, this runtime encodes version 2: retrain it"):
        load_policy(bundle, strict=True)
    assert load_policy(bundle).primary is None and "deciding with the rule policy" in caplog.text
    with pytest.raises(PolicyError, match=r"shape \['N', 12\], .*\[N, 14\] \(observation version 2\): retrain"):
        OnnxPolicy(bundle / "controller" / "policy.onnx", 2)  # the file alone, without its manifest


def test_every_decision_records_its_latency(bundle, catalog):
    # the p99 < 1 ms target is a benchmark's (benchmarks/controller_report.py, decision latency),
    # not a timed unit test's: a busy machine would fail it
    w = np.random.default_rng(0).normal(size=(observation.SIZE, 3))
    install_policy(bundle, w, ["dense", "dense-int8", "dense-int4"])
    rng = np.random.default_rng(1)
    for pol in (load_policy(bundle, strict=True), RulePolicy(catalog)):
        lat = [pol.decide(rng.random(observation.SIZE, dtype=np.float32), catalog.allowed).latency_s
               for _ in range(50)]
        assert all(np.isfinite(x) and x > 0 for x in lat)
