"""The per-request difficulty estimate: features, the plain-array model, the runtime's use of it."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest

from edge_runtime.bundle import DIFFICULTY_MODEL, read_manifest, write_manifest
from edge_runtime.control.difficulty import (
    FEATURES,
    N_FEATURES,
    NEUTRAL,
    DifficultyEstimator,
    DifficultyModel,
    features,
    load_estimator,
)
from edge_runtime.control.observation import DeviceState
from edge_runtime.control.signals import StaticSource
from edge_runtime.errors import BundleError
from edge_runtime.runtime import Runtime


@pytest.mark.parametrize("text", ["", "Hi", "Combien font 2 plus 3 ? Réponds seulement avec le nombre.",
                                  'Output only the JSON: {"name": "...", "age": ...}\n' * 40, "日本語のテキスト"])
def test_features_are_bounded_and_fixed_length(text):
    x = features(text, max(len(text) // 4, 1))
    assert x.shape == (N_FEATURES,) and x.dtype == np.float32 and (0 <= x).all() and (x <= 1).all()


def test_features_see_format_language_and_arithmetic_cues():
    plain, fr = features("Tell me a story about a cat.", 8), features("Combien font deux plus trois ? Réponds.", 12)
    js = features('Fill in this JSON: {"name": "..."}', 10)
    at = dict(zip(FEATURES, range(N_FEATURES), strict=True))
    assert fr[at["foreign"]] > plain[at["foreign"]] and fr[at["non_ascii"]] > 0 == plain[at["non_ascii"]]
    assert js[at["format_cue"]] == 1 and plain[at["format_cue"]] == 0
    assert fr[at["arithmetic"]] == 1 and fr[at["question"]] == 1


def _model(n: int = N_FEATURES, hidden: bool = False) -> DifficultyModel:
    rng = np.random.default_rng(0)
    if hidden:
        return DifficultyModel(np.zeros(n), np.ones(n), rng.normal(size=4), 0.1, rng.normal(size=(n, 4)), np.zeros(4))
    return DifficultyModel(np.zeros(n), np.ones(n), rng.normal(size=n), -0.2)


@pytest.mark.parametrize("hidden", [False, True])
def test_model_round_trips_as_plain_arrays(tmp_path, hidden):
    m = _model(hidden=hidden)
    m.save(tmp_path / "d.npz")
    back = DifficultyModel.load(tmp_path / "d.npz")  # np.load(allow_pickle=False) inside
    x = np.random.default_rng(1).random((5, N_FEATURES))
    assert np.allclose(back.predict(x), m.predict(x)) and back.features == FEATURES
    assert 0 < m.predict(x[0]) < 1


def test_unreadable_or_incomplete_model_is_a_clear_error(tmp_path):
    np.savez(tmp_path / "bad.npz", mean=np.zeros(3))
    with pytest.raises(BundleError, match=r"lacks arrays \['scale', 'w', 'b'\]; retrain it"):
        DifficultyModel.load(tmp_path / "bad.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(BundleError, match=r"cannot be read"):
        DifficultyModel.load(tmp_path / "junk.npz")


def test_input_size_mismatch_falls_back_to_client_else_neutral_with_one_warning(caplog):
    with caplog.at_level(logging.WARNING):
        est = DifficultyEstimator(_model(n=N_FEATURES + 3))
    assert sum("expects" in r.getMessage() for r in caplog.records) == 1
    assert est.estimate("x", 1, 0.9) == (0.9, "client")
    assert est.estimate("x", 1) == (NEUTRAL, "default")
    ok = DifficultyEstimator(_model())
    assert ok.estimate("x", 1)[1] == "model" and ok.estimate("x", 1, 0.0) == (0.0, "client")
    assert DifficultyEstimator(None).estimate("x", 1) == (0.0, "default")  # no model: the old default


def _with_model(bundle, model):
    model.save(bundle / DIFFICULTY_MODEL)
    m = read_manifest(bundle)
    write_manifest(bundle, replace(m, difficulty={"model": DIFFICULTY_MODEL, "features": list(FEATURES), "auc": 0.8}))


def test_runtime_estimates_difficulty_unless_the_client_gives_it(bundle_copy, make_policy):
    model = _model()
    _with_model(bundle_copy, model)
    pol = make_policy(0)
    rt = Runtime.open(bundle_copy, policy=pol, signals=StaticSource(DeviceState()), threads=1)
    try:
        prompt = "Combien font 2 plus 3 ? Réponds seulement avec le nombre."
        rt.generate(prompt, max_tokens=2)
        n = len(rt.tokenizer.encode(prompt))
        hard = pol.seen[-1][0][9]  # the observation's `hard`
        assert hard == pytest.approx(model.predict(features(prompt, n)), abs=1e-6)
        rt.generate(prompt, max_tokens=2, difficulty=1.0)
        assert pol.seen[-1][0][9] == 1.0
    finally:
        rt.close(grace_s=5)


def test_bundle_with_a_mismatched_model_serves_with_neutral_difficulty(bundle_copy, make_policy, caplog):
    _with_model(bundle_copy, _model(n=5))
    pol = make_policy(0)
    with caplog.at_level(logging.WARNING):
        rt = Runtime.open(bundle_copy, policy=pol, signals=StaticSource(DeviceState()), threads=1)
    try:
        rt.generate("hello", max_tokens=1)
        rt.generate("hello", max_tokens=1)
        assert pol.seen[-1][0][9] == NEUTRAL
        assert sum("difficulty model expects 5 inputs" in r.getMessage() for r in caplog.records) == 1
    finally:
        rt.close(grace_s=5)


def test_old_manifest_without_difficulty_still_loads(bundle_copy):
    m = read_manifest(bundle_copy)
    assert m.difficulty is None and load_estimator(bundle_copy, m).model is None
    assert "difficulty" not in m.to_dict()
