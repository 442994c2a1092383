from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edge_runtime.sim.cli import main
from edge_runtime.sim.simulator import SimReport

ROOT = Path(__file__).resolve().parents[3]


def test_json_report_has_the_documented_keys(bundle, capsys):
    assert main(["--bundle", str(bundle), "--profile", "commute-phone", "--controller", "rule", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out) == [*SimReport.SUMMARY_KEYS, "tier_quality"]
    assert 0 <= out["mean_quality"] <= 1 and out["failed"] == 0
    assert 0 < out["serving_wh"] < out["energy_wh"]  # serving is what the device drew above its idle draw


def test_static_and_text_report_and_plot(bundle, tmp_path, capsys):
    png = tmp_path / "out.png"
    code = main(["--bundle", str(bundle), "--profile", "scripted-day", "--controller", "static:dense-int4",
                 "--plot", str(png)])
    assert code == 0
    text = capsys.readouterr().out
    assert "variant share      dense-int4 100%" in text
    assert re.search(r"energy +[0-9.]+ Wh  of which serving [0-9.]+ Wh", text)
    assert png.stat().st_size > 10_000


def test_profile_by_path_and_seed(bundle, short_profile, capsys):
    main(["--bundle", str(bundle), "--profile", str(short_profile), "--controller", "rule", "--json"])
    a = json.loads(capsys.readouterr().out)
    main(["--bundle", str(bundle), "--profile", str(short_profile), "--controller", "rule", "--json", "--seed", "9"])
    b = json.loads(capsys.readouterr().out)
    assert a != b


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--controller", "rl"], "has no trained policy; run edge-train"),
        (["--controller", "static:magnitude-50"], "failed its gate"),
        (["--controller", "static:nope"], "unknown variant 'nope'"),
        (["--controller", "greedy"], "unknown controller 'greedy'"),
        (["--profile", "no-such-profile"], "unknown profile 'no-such-profile'"),
    ],
)
def test_errors_are_one_line(bundle, capsys, args, match):
    argv = ["--bundle", str(bundle), "--profile", "desk-plugged", "--controller", "rule"]
    for flag, value in zip(args[::2], args[1::2], strict=True):
        argv[argv.index(flag) + 1] = value
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("edge-sim: error: ") and match in err and err.count("\n") == 1


def test_bundle_without_costs_is_a_bundle_error(tmp_path, capsys):
    from edge_runtime.sim.synthetic import write_synthetic_bundle

    b = write_synthetic_bundle(tmp_path / "nocost", costs=False)
    assert main(["--bundle", str(b), "--profile", "desk-plugged", "--controller", "rule"]) == 2
    assert "has no measured cost" in capsys.readouterr().err


def test_edge_sim_runs_without_offline_tooling(bundle):
    """A whole edge-sim run (its lazy imports included) loads no torch, gymnasium, SB3 or controller
    (every module's imports: tests/test_dependencies.py)."""
    code = (
        "import sys\n"
        f"from edge_runtime.sim.cli import main; main(['--bundle', {str(bundle)!r}, '--profile', 'desk-plugged', "
        "'--controller', 'rule', '--json'])\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'gymnasium', 'stable_baselines3', 'controller', 'export', 'transformers'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, capture_output=True)


def test_runtime_replay_checks_simulation_against_real_generation(tiny_bundle, short_profile, capsys):
    """--runtime generates every request with onnxruntime and compares with the manifest's prices."""
    code = main(["--bundle", str(tiny_bundle), "--profile", str(short_profile), "--controller", "rule",
                 "--runtime", "--limit", "3", "--json", "--threads", "1"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"simulated", "runtime", "calibration"}
    assert out["simulated"]["variant_share"].keys() == out["runtime"]["variant_share"].keys()
    served = sum(row["requests"] for row in out["calibration"].values())
    assert served == 3
    for row in out["calibration"].values():
        assert row["measured_s"] > 0 and row["predicted_s"] > 0


def test_runtime_replay_limit_must_be_positive(tiny_bundle, capsys):
    assert main(["--bundle", str(tiny_bundle), "--profile", "desk-plugged", "--runtime", "--limit", "0"]) == 2
    assert "--limit must be >= 1, got 0" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "match"), [
    (["--seed", "-1"], "--seed must be an integer >= 0, got -1"),
    (["--runtime", "--threads", "0"], "--threads must be >= 1, got 0"),
    (["--plot", "no/such/folder/day.png"], "does not exist; create it first"),
])
def test_bad_flags_are_one_line_before_any_work(bundle, capsys, tmp_path, monkeypatch, args, match):
    monkeypatch.chdir(tmp_path)
    assert main(["--bundle", str(bundle), "--profile", "desk-plugged", "--controller", "rule", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("edge-sim: error: ") and match in err and err.count("\n") == 1
    assert not (tmp_path / "no").exists()
