"""Shadow scoring on the tiny bundle: drift of a corrupted variant, idle-time only, preemption."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edge_runtime.control.observation import DeviceState
from edge_runtime.control.signals import StaticSource
from edge_runtime.engine.sampling import SamplingParams
from edge_runtime.errors import VariantError
from edge_runtime.runtime import Runtime
from edge_runtime.shadow.config import ShadowConfig
from edge_runtime.shadow.scorer import Served, ShadowScorer
from tests.edge_runtime.shadow.conftest import wait_scored

PROMPTS = ["The capital of France is", "List three fruits, one per line.", "Is the sun hot? Answer only yes or no.",
           "Once upon a time", "Give a JSON object for a person named Ana."]


def corrupt(onnx_path: Path, seed: int = 0) -> None:
    """Perturb a variant's weights in place: int8 matrices randomised, float matrices given noise."""
    model = onnx.load(str(onnx_path))
    rng = np.random.default_rng(seed)
    for t in model.graph.initializer:
        a = numpy_helper.to_array(t)
        if a.ndim < 2:
            continue
        if a.dtype == np.uint8:
            b = rng.integers(0, 256, a.shape, dtype=np.uint8)
        elif a.dtype == np.float32:
            b = a + np.abs(a).mean() * rng.standard_normal(a.shape).astype(np.float32)
        else:
            continue
        t.CopyFrom(numpy_helper.from_array(b, t.name))
    data = onnx_path.with_name(onnx_path.name + ".data")
    data.unlink()
    onnx.save(model, str(onnx_path), save_as_external_data=True, location=data.name)


@pytest.fixture
def two_int8(bundle_copy: Path) -> Path:
    """The tiny bundle with a second, identical int8 variant ("dense-int8-b"), then dense-int8 corrupted."""
    shutil.copytree(bundle_copy / "variants" / "dense-int8", bundle_copy / "variants" / "dense-int8-b")
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    twin = dict(next(v for v in manifest["variants"] if v["name"] == "dense-int8"))
    twin.update(name="dense-int8-b", onnx="variants/dense-int8-b/model.onnx")
    manifest["variants"].append(twin)
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    corrupt(bundle_copy / "variants" / "dense-int8" / "model.onnx")
    return bundle_copy


def open_shadow(bundle: Path, signals: DeviceState | None = None, **shadow) -> Runtime:
    cfg = ShadowConfig(enabled=True, sample=1.0, max_tokens=16, **shadow)
    return Runtime.open(bundle, threads=1, preload="all", allow_ungated=True, shadow=cfg,
                        signals=StaticSource(signals or DeviceState()))


def test_a_corrupted_variant_crosses_its_floor_within_50_requests_and_its_twin_does_not(two_int8):
    rt = open_shadow(two_int8, max_preemptions=1000)  # the client below never leaves the device idle for long
    try:
        for i in range(50):  # 25 requests each, alternating
            rt.generate(f"{PROMPTS[i % 5]} {i}", variant=("dense-int8", "dense-int8-b")[i % 2], max_tokens=16)
        wait_scored(rt, 50)
        drift = rt.status()["shadow"]["drift"]
        bad, good = drift["dense-int8"]["token_f1"], drift["dense-int8-b"]["token_f1"]
        assert bad["below"] and bad["score"] < bad["floor"] == 0.5
        assert not good["below"] and good["score"] >= 0.5 and good["n"] == 25
        metrics = rt.metrics.export().decode()
        crossings = [ln for ln in metrics.splitlines() if ln.startswith("edge_shadow_floor_crossings_total{")]
        assert crossings == ['edge_shadow_floor_crossings_total{cause="own",dimension="token_f1",'
                             'variant="dense-int8"} 1.0']
        assert 'edge_shadow_agreement{dimension="token_f1",variant="dense-int8-b"}' in metrics
        assert 'edge_shadow_floor{dimension="token_f1",variant="dense-int8"} 0.5' in metrics
        # dense's own checks are tracked beside the variants' (the prompts carry instructions)
        assert drift["dense"]["instruction"]["n"] > 0 and "token_f1" not in drift["dense"]
        assert rt.pool.why_not(rt.variant_index("dense-int8")) is None  # no --shadow-fence: reported only
    finally:
        rt.close(grace_s=5)


def test_fence_takes_a_drifting_variant_out_of_service(two_int8):
    rt = open_shadow(two_int8, fence=True, max_preemptions=1000)
    try:
        for i in range(50):
            rt.generate(f"{PROMPTS[i % 5]} {i}", variant="dense-int8", max_tokens=16)
            wait_scored(rt, i + 1)
            if rt.pool.why_not(rt.variant_index("dense-int8")) is not None:
                break
        assert i + 1 <= 50 and rt.shadow.scored == i + 1
        with pytest.raises(VariantError, match="variant 'dense-int8' may not run: .*token_f1 .* below its floor"):
            rt.generate("hello", variant="dense-int8")
        assert rt.generate("hello", variant="dense-int8-b", max_tokens=4).variant == "dense-int8-b"
    finally:
        rt.close(grace_s=5)


def test_shadow_work_only_when_idle_and_on_power(bundle_copy, monkeypatch):
    seen: list[tuple[int, object]] = []
    real = ShadowScorer.run_one

    def spy(self, busy):
        seen.append((rt.queue.depth, rt._running))
        return real(self, busy)

    monkeypatch.setattr(ShadowScorer, "run_one", spy)
    low = DeviceState(battery_level=0.2, plugged_in=False)
    rt = open_shadow(bundle_copy, signals=low)
    try:
        rt.generate("Once upon a time", variant="dense-int8", max_tokens=8)
        assert rt.shadow.pending and rt.shadow.scored == 0  # on a low battery, shadow work waits
        rt.signals = StaticSource(DeviceState(battery_level=0.2, plugged_in=True, throttled=True))
        rt.generate("Once upon a time", variant="dense-int8", max_tokens=8)
        assert rt.shadow.scored == 0  # nor while the device throttles
        rt.signals = StaticSource(DeviceState(battery_level=0.2, plugged_in=True))
        wait_scored(rt, 2)
        assert seen and all(depth == 0 and running is None for depth, running in seen)
    finally:
        rt.close(grace_s=5)


def test_live_answers_are_the_same_with_shadow_on(bundle_copy, tiny_bundle):
    prompts = [f"{p} {i}" for i, p in enumerate(PROMPTS)]
    off = Runtime.open(tiny_bundle, threads=1, preload="all", signals=StaticSource(DeviceState()))
    try:
        want = [off.generate(p, variant="dense-int8", max_tokens=12).token_ids for p in prompts]
    finally:
        off.close(grace_s=5)
    rt = open_shadow(bundle_copy)
    try:
        got = []
        for p in prompts:  # shadow jobs of earlier requests run between these (on the same sessions)
            got.append(rt.generate(p, variant="dense-int8", max_tokens=12).token_ids)
            wait_scored(rt, len(got))
        assert got == want
    finally:
        rt.close(grace_s=5)


def test_a_live_request_preempts_a_shadow_job_at_the_next_token(bundle_copy):
    rt = open_shadow(bundle_copy, max_preemptions=1)
    scorer = rt.shadow
    rt.close(grace_s=5)  # stop the worker: this test drives the scorer itself
    polls = []

    def busy() -> bool:  # live traffic arrives after the shadow job's third token
        polls.append(1)
        return len(polls) > 3

    ids = rt.tokenizer.encode("Once upon a time")
    scorer.offer(Served("dense-int8", ids, SamplingParams(max_tokens=16), "", [], "Once upon a time"))
    assert scorer.run_one(busy) is False and scorer.pending and len(polls) == 4  # back at the front
    assert scorer.run_one(lambda: True) is False and not scorer.pending  # preempted twice: dropped
    text = rt.metrics.export().decode()
    assert 'edge_shadow_jobs_total{outcome="preempted"} 2.0' in text
    assert 'edge_shadow_jobs_total{outcome="dropped"} 1.0' in text
    scorer.offer(Served("dense-int8", ids, SamplingParams(max_tokens=16), "", [], "Once upon a time"))
    assert scorer.run_one(lambda: False) is True and scorer.scored == 1
