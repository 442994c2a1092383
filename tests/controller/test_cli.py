from __future__ import annotations

import pytest

from controller.cli import main
from edge_runtime.bundle import read_manifest
from edge_runtime.sim.synthetic import write_synthetic_bundle

TINY_TOML = "n_envs = 2\nn_steps = 128\nbatch_size = 64\nn_epochs = 2\nnet_arch = [16, 16]\n"


def test_edge_train_end_to_end(bundle, profiles, tmp_path, capsys):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY_TOML)
    code = main(["--bundle", str(bundle), "--profiles", str(profiles["short-a"]), str(profiles["short-b"]),
                 "--held-out", str(profiles["short-held"]), "--timesteps", "512", "--config", str(cfg), "--quiet"])
    assert code == 0
    out = capsys.readouterr().out
    assert "ONNX picks SB3's action on 100.00% of 2000 observations" in out
    assert "short-held" in out and "held" in out
    m = read_manifest(bundle)
    assert (bundle / "controller" / "policy.onnx").is_file()
    extra = m.controller.extra
    assert extra["trained_on"] == ["short-a", "short-b"] and extra["held_out"] == ["short-held"]
    assert extra["timesteps"] == 512 and extra["train_config"]["n_envs"] == 2
    assert extra["reward"]["deadline_miss"] == 1.0
    assert set(extra["evaluation"]) == {"short-a", "short-b", "short-held"}
    assert "rl" in extra["evaluation"]["short-held"]["reward"]


@pytest.mark.parametrize(
    ("make", "args", "match"),
    [
        ("nocost", [], "has no measured cost"),
        ("good", ["--held-out", "desk-plugged", "--profiles", "desk-plugged"], "both trained on and held out"),
        ("good", ["--profiles", "nowhere.toml"], "profile file 'nowhere.toml' does not exist"),
        ("good", ["--config", "missing.toml"], "train config 'missing.toml' does not exist"),
    ],
)
def test_edge_train_errors(tmp_path, capsys, make, args, match):
    b = write_synthetic_bundle(tmp_path / make, costs=make != "nocost")
    assert main(["--bundle", str(b), "--timesteps", "64", "--quiet", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("edge-train: error: ") and match in err
