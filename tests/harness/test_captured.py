"""A file captured on the device by shadow scoring re-gates a bundle with edge-eval, unedited."""

from __future__ import annotations

from edge_runtime.bundle import read_manifest
from edge_runtime.control.observation import DeviceState
from edge_runtime.control.signals import StaticSource
from edge_runtime.runtime import Runtime
from edge_runtime.shadow.capture import FILE
from edge_runtime.shadow.config import ShadowConfig
from harness.cli import main
from tests.edge_runtime.shadow.conftest import wait_scored

PROMPTS = ["Is the sun hot? Answer only yes or no.", "List three fruits, one per line.",
           "Give a JSON object for a person named Ana.", "What is 9 times 3? Give only the number.",
           "Name four colors, separated by commas."]


def test_edge_eval_regates_a_bundle_on_captured_traffic(bundle, tmp_path, capsys):
    """Capture on the harness's three-variant bundle (the tiny bundle's context is too short for edge-eval)."""
    cfg = ShadowConfig(enabled=True, sample=1.0, max_tokens=16, capture_dir=tmp_path / "cap")
    rt = Runtime.open(bundle, threads=1, preload="all", signals=StaticSource(DeviceState()), shadow=cfg)
    try:
        for i, p in enumerate(PROMPTS):
            rt.generate(p, variant=("dense", "wanda-30", "magnitude-70")[i % 3], max_tokens=16)
        wait_scored(rt, len(PROMPTS))
    finally:
        rt.close(grace_s=5)
    captured = tmp_path / "cap" / FILE
    args = ["--bundle", str(bundle), "--suite", str(captured), "--windows", "2", "--quiet"]
    assert main([*args, "--set-floors"]) == 0
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "cheapest variant passing every floor:" in out
    for v in read_manifest(bundle).variants:
        assert v.gate.status in ("pass", "fail") and "instruction" in v.quality.scores


def test_a_malformed_captured_line_is_named_by_file_and_line(tiny_bundle, tmp_path, capsys):
    captured = tmp_path / FILE
    captured.write_text('{"suite": "edge-eval", "version": "1.0.0", "changelog": [{"version": "1.0.0", '
                        '"changes": "captured"}]}\n'
                        '{"id": "cap-1-000000-1", "slice": "common", "type": "list", "prompt": "List 3", "n": 3}\n'
                        '{"id": "cap-1-000001-1", "slice": "common", "type": "list", "prompt": "List 3", "n": \n')
    assert main(["--bundle", str(tiny_bundle), "--suite", str(captured), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("edge-eval: error: ") and f"{captured}:3: not valid JSON" in err
