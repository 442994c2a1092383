"""The examples run against the tiny bundle, so that they cannot rot."""

from __future__ import annotations

import configparser
import importlib.util
import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.bundle import read_manifest, write_manifest
from edge_runtime.control import observation
from edge_runtime.serve import cli as S

from ..edge_runtime.control.test_policy import install_policy

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DOCS = Path(__file__).resolve().parents[2] / "docs"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_log_summarizer(tiny_bundle, tmp_path, capsys):
    log = tmp_path / "app.log"
    log.write_text("service started\nheartbeat ok\n\nERROR: disk /dev/sda1 failed\nretrying\nheartbeat ok\n")
    summarizer = load("log_summarizer")
    assert summarizer.main([str(log), "--bundle", str(tiny_bundle), "--lines", "3", "--max-tokens", "4",
                            "--threads", "1"]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [o["block"] for o in out] == [0, 1] and [o["lines"] for o in out] == [3, 2]
    assert [o["difficulty"] for o in out] == [1.0, 0.0]
    assert all(o["variant"] in ("dense", "dense-int8") and o["reason"] for o in out)


def test_log_summarizer_reports_a_bad_bundle(tmp_path, capsys):
    assert load("log_summarizer").main(["-", "--bundle", str(tmp_path)]) == 2
    assert "is not a bundle" in capsys.readouterr().err


def env_file() -> dict[str, str]:
    out = {}
    for line in (EXAMPLES / "edge-serve.env").read_text().splitlines():
        line = line.lstrip("# ").strip()
        if re.match(r"EDGE_[A-Z_]+=", line):
            key, _, value = line.partition("=")
            out[key] = value
    return out


def test_env_file_names_real_flags(monkeypatch):
    help_text = S.build_parser().format_help()
    env = env_file()
    for key in env:
        assert f"[{key}]" in help_text, f"{key} is not an edge-serve setting"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cfg = S.config_from_args(S.build_parser().parse_args([]))
    assert cfg.host == "127.0.0.1" and cfg.runtime.memory_budget_mb == 1200


def test_systemd_unit_matches_the_daemon():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read(EXAMPLES / "edge-serve.service")
    svc = unit["Service"]
    assert svc["ExecStart"].split()[0].endswith("/edge-serve")
    assert svc["KillSignal"] == "SIGTERM"
    assert float(svc["TimeoutStopSec"]) > float(env_file()["EDGE_GRACE_S"])  # systemd must not kill mid-drain
    assert svc["RestartPreventExitStatus"] == "2"  # what edge-serve returns for a bad bundle
    assert svc["EnvironmentFile"] == "/etc/edge-serve.env"


@pytest.mark.parametrize("path", ["examples/edge-serve.service", "examples/edge-serve.env", "examples/log_summarizer.py"])
def test_deployment_guide_points_at_real_files(path):
    guide = (DOCS / "deployment.md").read_text()
    assert path in guide
    assert (EXAMPLES.parent / path).is_file()


@pytest.mark.parametrize(("version", "retrains"), [(1, True), (2, False)])
def test_demo_retrains_only_a_policy_the_runtime_refuses(tiny_bundle, tmp_path, monkeypatch, version, retrains):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    features = observation.FEATURES if version == 2 else observation.FEATURES[:12]
    install_policy(bundle, np.zeros((len(features), 2)), ["dense", "dense-int8"], features=features,
                   observation_version=version)
    demo, calls = load("demo"), []
    monkeypatch.setattr(demo, "run", lambda *cmd, **kw: calls.append(cmd) or "")
    demo.train(bundle, fresh=False)
    assert calls == ([("controller.cli", "--bundle", str(bundle))] if retrains else [])


def test_demo_trains_the_difficulty_model_once(tiny_bundle, tmp_path, monkeypatch):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    demo, calls = load("demo"), []
    entry = {"cases": 124, "hard_cases": 22, "variants": ["dense", "dense-int8"], "auc": 0.9}
    monkeypatch.setattr(demo, "run", lambda *cmd, **kw: calls.append(cmd) or json.dumps(entry))
    demo.difficulty(bundle, fresh=False)
    assert calls == [("harness.difficulty", "--bundle", str(bundle))]
    m = read_manifest(bundle)
    write_manifest(bundle, replace(m, difficulty={"model": "controller/difficulty.npz", "auc": 0.9}))
    demo.difficulty(bundle, fresh=False)
    assert len(calls) == 1  # reused
