"""Offline training of the difficulty model: a case set apart from the gate's, the fitter, the bundle entry."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_runtime.bundle import read_manifest
from edge_runtime.control.difficulty import (
    FEATURES,
    FEATURES_VERSION,
    N_FEATURES,
    DifficultyModel,
    load_estimator,
)
from edge_runtime.errors import EvalError
from harness.difficulty import CASES, auc, case_outcomes, cross_validated_auc, fit, main, train
from harness.suite import DEFAULT_SUITE, load_suite


def test_difficulty_cases_share_nothing_with_the_gate_suite():
    gate, diff = load_suite(DEFAULT_SUITE), load_suite(CASES)
    assert len(diff.cases) >= 100
    assert not {c.id for c in gate.cases} & {c.id for c in diff.cases}
    assert not {c.prompt.strip().lower() for c in gate.cases} & {c.prompt.strip().lower() for c in diff.cases}


def test_case_set_file_is_what_the_builder_writes():
    import random

    from harness.data import build_difficulty as b

    assert [json.loads(x)["id"] for x in CASES.read_text().splitlines()[1:]] == \
        [c["id"] for c in b.build(random.Random(b.SEED))]


def test_auc_rank_statistic():
    y = np.array([0, 0, 1, 1])
    assert auc(np.array([0.1, 0.2, 0.8, 0.9]), y) == 1.0
    assert auc(np.array([0.9, 0.8, 0.2, 0.1]), y) == 0.0
    assert auc(np.array([0.5, 0.5, 0.5, 0.5]), y) == 0.5
    assert np.isnan(auc(np.array([0.1, 0.2]), np.array([1, 1])))


def test_fit_learns_a_real_signal_and_not_noise():
    rng = np.random.default_rng(0)
    x = rng.random((300, N_FEATURES))
    y = (x[:, 3] + 0.3 * rng.normal(size=300) > 0.5).astype(float)
    assert cross_validated_auc(x, y) > 0.8
    assert abs(cross_validated_auc(x, rng.permutation(y) * 0 + (rng.random(300) > 0.5)) - 0.5) < 0.15
    m = fit(x, y)
    assert isinstance(m, DifficultyModel) and m.w.shape == (N_FEATURES,)


@pytest.fixture
def bundle_copy(tiny_bundle, tmp_path):
    """A private copy of the tiny real bundle (dense and dense-int8)."""
    import shutil

    return shutil.copytree(tiny_bundle, tmp_path / "bundle")


def _outcomes(n: int = 60) -> dict:
    rng = np.random.default_rng(1)
    x = rng.random((n, N_FEATURES))
    hard = x[:, 0] > 0.5
    cases = [{"id": f"c{i}", "features": x[i].tolist(), "correct": {"dense": True, "dense-int8": not bool(hard[i])}}
             for i in range(n)]
    return {"suite_version": "1.0.0", "features": list(FEATURES), "features_version": FEATURES_VERSION,
            "variants": ["dense", "dense-int8"], "cases": cases}


def test_train_writes_plain_arrays_and_the_manifest_entry(bundle_copy):
    entry = train(bundle_copy, _outcomes())
    m = read_manifest(bundle_copy)
    assert m.difficulty == entry and entry["auc"] > 0.9 and entry["cases"] == 60 and entry["hard_cases"] > 5
    est = load_estimator(bundle_copy, m)
    assert est.usable and 0 < est.estimate("hello", 2)[0] < 1


def test_train_refuses_one_class_and_stale_features(bundle_copy):
    out = _outcomes()
    for c in out["cases"]:
        c["correct"]["dense-int8"] = True
    with pytest.raises(EvalError, match=r"0 hard and 60 easy cases: each class needs at least 5"):
        train(bundle_copy, out)
    with pytest.raises(EvalError, match=r"score the cases again"):
        train(bundle_copy, {**_outcomes(), "features": ["old"]})


def test_outcomes_on_a_real_bundle_and_the_command(bundle_copy, tmp_path, capsys):
    suite = load_suite(CASES)
    out = case_outcomes(bundle_copy, suite, ["dense", "dense-int8"], threads=1, limit=4)
    assert [r["id"] for r in out["cases"]] == [c.id for c in suite.cases[:4]]
    assert all(len(r["features"]) == N_FEATURES and set(r["correct"]) == {"dense", "dense-int8"} for r in out["cases"])
    path = tmp_path / "o.json"
    path.write_text(json.dumps(_outcomes()))
    assert main(["--bundle", str(bundle_copy), "--outcomes", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == "controller/difficulty.npz"


def test_menu_is_what_the_controller_may_choose(bundle_copy):
    """Untiered: the gated cheaper variants. Tiered: every one that clears some tier, a
    gate-failed variant offered only in `critical` included, and not one that clears none."""
    from dataclasses import replace

    from edge_runtime.bundle import Gate, write_manifest
    from harness.difficulty import menu

    m = read_manifest(bundle_copy)
    assert menu(m, "dense") == ["dense-int8"]
    critical, none = (replace(m.variants[1], name=n, gate=Gate("fail", ("common",), {"tiers": t}))
                      for n, t in (("pruned-a", ["critical"]), ("pruned-b", [])))
    tiered = replace(m, variants=(replace(m.variants[0], gate=Gate("pass", (), {"tiers": ["normal", "saver", "critical"]})),
                                  replace(m.variants[1], gate=Gate("pass", (), {"tiers": ["normal"]})), critical, none),
                     extra={**m.extra, "tiers": ["normal", "saver", "critical"]})
    write_manifest(bundle_copy, tiered)
    assert menu(read_manifest(bundle_copy), "dense") == ["dense-int8", "pruned-a"]
