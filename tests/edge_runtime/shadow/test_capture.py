"""Capture: opt-in regression cases, redacted, bounded, atomic; bad input never touches serving."""

from __future__ import annotations

import errno
import json
import logging
import os

import pytest

from edge_runtime.control.observation import DeviceState
from edge_runtime.control.signals import StaticSource
from edge_runtime.errors import ShadowError
from edge_runtime.runtime import Runtime
from edge_runtime.shadow.capture import FILE, Capture, load_redactions
from edge_runtime.shadow.config import ShadowConfig
from harness.suite import load_suite
from tests.edge_runtime.shadow.conftest import wait_scored

PROMPTS = ["Email me at ana@example.com: is the sun hot? Answer only yes or no.",
           "List three fruits, one per line.", "Once upon a time there was"]


def case(prompt: str = "hello") -> dict:
    return {"slice": "common", "type": "exact", "prompt": prompt, "answer": ["hi"], "template": "raw"}


def test_capture_is_off_by_default(tiny_bundle):
    rt = Runtime.open(tiny_bundle, threads=1, signals=StaticSource(DeviceState()),
                      shadow=ShadowConfig(enabled=True))
    try:
        assert rt.shadow.capture is None and rt.status()["shadow"]["capture"] is None
    finally:
        rt.close(grace_s=5)
    assert ShadowConfig().enabled is False and ShadowConfig().capture_dir is None


def test_captured_requests_form_a_suite_with_redaction(bundle_copy, tmp_path):
    patterns = tmp_path / "redact.txt"
    patterns.write_text("# e-mail addresses\n[\\w.]+@[\\w.]+\n")
    cfg = ShadowConfig(enabled=True, sample=1.0, max_tokens=12, capture_dir=tmp_path / "cap", redact=patterns)
    rt = Runtime.open(bundle_copy, threads=1, preload="all", signals=StaticSource(DeviceState()), shadow=cfg)
    try:
        for p in PROMPTS:
            rt.generate(p, variant="dense-int8", max_tokens=12)
        rt.chat([{"role": "user", "content": "Give a JSON object for a person named Ana."}], max_tokens=12)
        wait_scored(rt, 4)
    finally:
        rt.close(grace_s=5)
    path = tmp_path / "cap" / FILE
    text = path.read_text()
    assert "ana@example.com" not in text and "[REDACTED]" in text
    suite = load_suite(path)  # the harness reads it as it is
    kinds = [c.type for c in suite.cases]
    assert kinds[:2] == ["regex", "list"] and kinds[3] == "json" and len(kinds) == 4
    assert suite.cases[1].n == 3 and suite.cases[3].template == "chat"
    assert all("served by" in c.note and c.id.startswith("cap-") for c in suite.cases)
    assert not [f for f in os.listdir(path.parent) if f != FILE]  # no temporary file left behind


def test_size_and_age_bounds(tmp_path):
    now = [1_000_000.0]
    cap = Capture(tmp_path, max_bytes=600, max_age_s=100, clock=lambda: now[0])
    for i in range(6):
        assert cap.add(case(f"prompt number {i}"))
        now[0] += 30
    lines = (tmp_path / FILE).read_text().splitlines()
    assert len((tmp_path / FILE).read_bytes()) <= 600
    assert json.loads(lines[-1])["prompt"] == "prompt number 5"  # the newest stays, the oldest left
    assert all(now[0] - 30 - int(json.loads(ln)["id"].split("-")[1]) <= 100 for ln in lines[1:])
    again = Capture(tmp_path, max_bytes=600, max_age_s=100, clock=lambda: now[0])  # a restart keeps them
    assert again.active and len(again._lines) == len(lines) - 1


def test_unwritable_directory_warns_once_and_serving_goes_on(tiny_bundle, tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")
    cfg = ShadowConfig(enabled=True, sample=1.0, max_tokens=8, capture_dir=blocker / "cap")
    with caplog.at_level(logging.WARNING):
        rt = Runtime.open(tiny_bundle, threads=1, signals=StaticSource(DeviceState()), shadow=cfg)
    try:
        warnings = [r.message for r in caplog.records if "capture" in r.message]
        assert len(warnings) == 1 and "is not writable" in warnings[0] and "capture is off" in warnings[0]
        assert rt.generate("Once upon a time", max_tokens=8).finish_reason in ("stop", "length")
        wait_scored(rt, 1)
        assert rt.status()["shadow"]["capture"]["active"] is False
    finally:
        rt.close(grace_s=5)


def test_a_full_disk_stops_capture_not_serving(bundle_copy, tmp_path, monkeypatch, caplog):
    cfg = ShadowConfig(enabled=True, sample=1.0, max_tokens=8, capture_dir=tmp_path / "cap")
    rt = Runtime.open(bundle_copy, threads=1, signals=StaticSource(DeviceState()), shadow=cfg)
    try:
        rt.generate("List three fruits, one per line.", max_tokens=8)
        wait_scored(rt, 1)
        before = (tmp_path / "cap" / FILE).read_text()

        def full(*a, **k):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "fsync", full)
        with caplog.at_level(logging.WARNING):
            for i in range(3):
                assert rt.generate(f"List {i + 2} fruits, one per line.", max_tokens=8).finish_reason in ("stop", "length")
            wait_scored(rt, 4)
        assert [r.message for r in caplog.records if "No space left" in r.message][0].endswith(
            "capture is off, serving continues")
        assert rt.status()["shadow"]["capture"]["active"] is False
        assert (tmp_path / "cap" / FILE).read_text() == before  # the last good file stays whole
        assert os.listdir(tmp_path / "cap") == [FILE]
    finally:
        rt.close(grace_s=5)


def test_a_redaction_pattern_that_does_not_compile_is_refused_at_start(tiny_bundle, tmp_path):
    bad = tmp_path / "redact.txt"
    bad.write_text("ok\\d+\n[unclosed\n")
    with pytest.raises(ShadowError, match=r"redact.txt:2: redaction pattern '\[unclosed' does not compile"):
        load_redactions(bad)
    with pytest.raises(ShadowError, match=r"'\[unclosed' does not compile .*; fix or remove it"):
        Runtime.open(tiny_bundle, threads=1, shadow=ShadowConfig(enabled=True, redact=bad))


def test_edge_serve_refuses_a_bad_redaction_pattern_before_binding(tiny_bundle, tmp_path, capsys, monkeypatch):
    from edge_runtime.serve import cli

    bad = tmp_path / "redact.txt"
    bad.write_text("(open\n")
    monkeypatch.setenv("EDGE_SHADOW_SAMPLE", "0.25")
    args = cli.build_parser().parse_args(["--bundle", str(tiny_bundle), "--shadow", "--capture-dir", str(tmp_path)])
    shadow = cli.config_from_args(args).runtime.shadow
    assert shadow.enabled and shadow.sample == 0.25 and shadow.capture_dir == tmp_path
    assert cli.main(["--bundle", str(tiny_bundle), "--shadow", "--redact", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("edge-serve: error: ") and "redaction pattern '(open' does not compile" in err
