"""The embedded runtime: opening, generating, the controller, the queue, failures and fallbacks."""

from __future__ import annotations

import json
import logging
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from edge_runtime.control import observation
from edge_runtime.control.observation import DeviceState
from edge_runtime.control.signals import CallableSource, StaticSource
from edge_runtime.errors import (
    BundleError,
    DeadlineExceeded,
    Overloaded,
    RequestError,
    Unavailable,
    VariantError,
)
from edge_runtime.runtime import Runtime, RuntimeConfig


def edit(bundle, fn):
    path = bundle / "manifest.json"
    raw = json.loads(path.read_text())
    fn(raw)
    path.write_text(json.dumps(raw))


# ------------------------------------------------------------------ opening


def test_open_refuses_unknown_format_and_missing_files(bundle_copy):
    (bundle_copy / "variants/dense-int8/model.onnx").unlink()
    with pytest.raises(BundleError, match=r"missing 'variants/dense-int8/model.onnx'"):
        Runtime.open(bundle_copy)
    edit(bundle_copy, lambda r: r.update(format="edge-bundle/9"))
    with pytest.raises(BundleError, match=r"unknown bundle format 'edge-bundle/9'"):
        Runtime.open(bundle_copy)


def test_open_refuses_when_every_gate_failed(bundle_copy, make_policy):
    edit(bundle_copy, lambda r: [v.update(gate={"status": "fail", "failed": ["edge"]}) for v in r["variants"]])
    with pytest.raises(BundleError, match="no variant .* may be served"):
        Runtime.open(bundle_copy)
    with Runtime.open(bundle_copy, allow_ungated=True, policy=make_policy(), threads=1) as rt:
        assert rt.generate("hi", max_tokens=2).variant == "dense"


def test_pinning_a_failed_variant_is_refused(bundle_copy, make_policy):
    edit(bundle_copy, lambda r: r["variants"][1].update(gate={"status": "fail", "failed": ["perplexity"]}))
    with Runtime.open(bundle_copy, policy=make_policy(1), threads=1) as rt:
        with pytest.raises(VariantError, match=r"'dense-int8' may not run: failed its evaluation gate \(perplexity\)"):
            rt.generate("hi", variant="dense-int8")
        assert rt.generate("hi", max_tokens=2).variant == "dense"  # the policy cannot pick it either


def test_config_validation():
    with pytest.raises(ValueError, match="max_queue must be an integer >= 1"):
        RuntimeConfig(max_queue=0)
    with pytest.raises(ValueError, match="signals must be one of"):
        RuntimeConfig(signals="gps")


# ------------------------------------------------------------------ generating


def test_generate_stream_and_chat(runtime, policy):
    r = runtime.generate("Hello", max_tokens=12, ignore_eos=True)
    assert r.variant == "dense" and r.reason == "scripted 0" and r.finish_reason == "length"
    assert r.completion_tokens == 12 and len(r.token_ids) == 12 and r.text == runtime.tokenizer.decode(r.token_ids)
    t = r.timings
    assert t.queue_s >= 0 and t.decide_s > 0 and t.prefill_s > 0 and t.decode_tokens_per_s > 0 and t.total_s > 0
    assert set(r.observation) == set(observation.FEATURES)
    assert "".join(runtime.stream("Hello", max_tokens=12, ignore_eos=True)) == r.text
    c = runtime.chat([{"role": "user", "content": "Hello"}], max_tokens=5)
    assert c.prompt_tokens == len(runtime.tokenizer.encode_chat([{"role": "user", "content": "Hello"}]))
    assert runtime.generate(prompt_ids=[5, 6, 7], max_tokens=3).prompt_tokens == 3


def test_seeded_sampling_is_reproducible(runtime):
    a = runtime.generate("abc", max_tokens=16, temperature=1.0, top_p=0.9, seed=3, ignore_eos=True)
    b = runtime.generate("abc", max_tokens=16, temperature=1.0, top_p=0.9, seed=3, ignore_eos=True)
    assert a.token_ids == b.token_ids


def test_pinned_variant_and_cold_start(runtime):
    assert 1 not in runtime.pool.loaded  # preload "first" loaded only the densest
    r = runtime.generate("hi", variant="dense-int8", max_tokens=3)
    assert (r.variant, r.reason, r.cold_start) == ("dense-int8", "pinned", True) and r.timings.load_s > 0
    r = runtime.generate("hi", variant="dense-int8", max_tokens=3)
    assert not r.cold_start and r.timings.load_s == 0.0
    with pytest.raises(VariantError, match=r"unknown variant 'nope'; this bundle has \['dense', 'dense-int8'\]"):
        runtime.generate("hi", variant="nope")


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"prompt": ""}, "the prompt is empty"),
        ({"prompt": "x" * 2000}, r"the prompt has \d+ tokens, more than the limit of 255"),
        ({"prompt": "x", "max_tokens": 400}, r"max_tokens \(400\) \+ the prompt \(1 tokens\) exceed the context length \(256\)"),
        ({"prompt": "x", "temperature": 3}, r"temperature must be a number in \[0, 2\]"),
        ({"prompt": "x", "difficulty": 2}, r"difficulty must be a number in \[0, 1\]"),
        ({"prompt": "x", "deadline_s": -1}, r"deadline_s must be a number > 0"),
        ({"prompt": "x", "messages": []}, "exactly one of prompt, messages or prompt_ids"),
        ({"prompt_ids": [10**6]}, r"prompt token ids must be in \[0, 384\)"),
    ],
)
def test_bad_requests(runtime, kw, match):
    with pytest.raises(RequestError, match=match):
        runtime.generate(**kw)


def test_default_max_tokens_fits_the_context(runtime):
    ids = list(range(3, 253))  # 250 tokens: 6 left in a 256-token context
    r = runtime.generate(prompt_ids=ids, ignore_eos=True)
    assert r.completion_tokens == 6 and r.finish_reason == "length"


def test_stream_checks_the_request_at_once(runtime):
    with pytest.raises(RequestError, match="the prompt is empty"):
        runtime.stream("")  # not deferred to the first next()


def test_cancelling_a_stream(runtime):
    it = runtime.stream("Hello", max_tokens=200, ignore_eos=True)
    next(it)
    it.close()  # the consumer went away
    r = runtime.generate("Hello", max_tokens=2)  # the worker is free again
    assert r.finish_reason in ("stop", "length")


# ------------------------------------------------------------------ the controller


def test_observation_reaches_the_policy(tiny_bundle, make_policy):
    policy = make_policy()
    device = DeviceState(battery_level=0.2, plugged_in=False, temperature_c=70.0, throttle_c=80.0)
    with Runtime.open(tiny_bundle, policy=policy, signals=StaticSource(device), threads=1) as rt:
        rt.generate(prompt_ids=list(range(3, 67)), max_tokens=8, deadline_s=15.0, difficulty=0.75)
    obs, allowed = policy.seen[-1]
    f = observation.describe(obs)
    assert f["battery_level"] == pytest.approx(0.2) and f["plugged_in"] == 0.0
    assert f["thermal_headroom"] == pytest.approx(10 / observation.HEADROOM_SCALE)
    assert f["prompt_tokens"] == pytest.approx(64 / observation.PROMPT_SCALE)
    assert f["max_new_tokens"] == pytest.approx(8 / observation.NEW_TOKENS_SCALE)
    assert f["deadline"] == pytest.approx(15 / observation.DEADLINE_SCALE, abs=0.01)
    assert f["hard"] == 0.75 and allowed.tolist() == [True, True]


def test_simulated_signals_drive_each_decision(tiny_bundle, make_policy):
    levels = iter([0.9, 0.1])
    src = CallableSource(lambda: DeviceState(battery_level=next(levels), plugged_in=False))
    policy = make_policy()
    with Runtime.open(tiny_bundle, policy=policy, signals=src, threads=1) as rt:
        rt.generate("a", max_tokens=1)
        rt.generate("a", max_tokens=1)
    assert [round(float(o[0]), 2) for o, _ in policy.seen] == [0.9, 0.1]


class Raising:
    def decide(self, obs, allowed):
        raise RuntimeError("policy exploded")


class Garbage:
    def decide(self, obs, allowed):
        return SimpleNamespace(variant=99, reason="nonsense", latency_s=0.0)


@pytest.mark.parametrize("bad", [Raising(), Garbage()])
def test_a_broken_policy_never_fails_a_request(tiny_bundle, bad):
    with Runtime.open(tiny_bundle, policy=bad, threads=1) as rt:
        r = rt.generate("a", max_tokens=2)
    assert r.variant == "dense" and r.reason == "policy error -> densest allowed"


def test_bad_policy_file_falls_back_to_rules(bundle_copy):
    pytest.importorskip("edge_runtime.control.policy", reason="the controller's policy module is not merged yet")
    (bundle_copy / "controller").mkdir(exist_ok=True)
    (bundle_copy / "controller/policy.onnx").write_bytes(b"not onnx")
    edit(bundle_copy, lambda r: r.update(controller={"policy": "controller/policy.onnx",
                                                     "observation": list(observation.FEATURES),
                                                     "actions": ["dense", "dense-int8"]}))
    with Runtime.open(bundle_copy, threads=1) as rt:
        r = rt.generate("a", max_tokens=2)
        assert r.reason.startswith("fallback: no policy -> rule")
        text = rt.metrics.export().decode()
    assert "edge_policy_fallbacks_total 1.0" in text
    assert 'edge_variant_selections_total{source="fallback",variant="' in text


def test_no_policy_in_the_bundle_is_not_a_fallback(runtime_default):
    r = runtime_default.generate("a", max_tokens=2)
    assert r.reason.startswith("fallback: no policy -> rule")
    text = runtime_default.metrics.export().decode()
    assert "edge_policy_fallbacks_total 0.0" in text and 'source="rule"' in text


def test_decision_is_fast(runtime):
    times = []
    for _ in range(200):
        t0 = time.perf_counter()
        runtime.decide(100, 50)
        times.append(time.perf_counter() - t0)
    assert np.percentile(times, 99) < 0.005  # the bench holds the real policy to 1 ms on a quiet machine


# ------------------------------------------------------------------ the queue


def test_full_queue_refuses_and_loses_nothing(tiny_bundle, make_policy):
    policy = make_policy()
    with Runtime.open(tiny_bundle, policy=policy, threads=1, max_queue=3) as rt:
        policy.gate.clear()  # the worker blocks in its next decision
        running = rt.submit("a", max_tokens=2)
        deadline = time.monotonic() + 5
        while rt.queue.depth and time.monotonic() < deadline:
            time.sleep(0.005)
        waiting = [rt.submit("b", max_tokens=2) for _ in range(3)]
        with pytest.raises(Overloaded, match=r"queue is full \(3 waiting\)") as e:
            rt.submit("c", max_tokens=2)
        assert e.value.retry_after_s >= 1
        policy.gate.set()
        results = [h.result(10) for h in [running, *waiting]]
    assert all(r.completion_tokens >= 1 for r in results)
    assert 'edge_requests_rejected_total{reason="overloaded"} 1.0' in rt.metrics.export().decode()


def test_priority_and_expired_deadlines(tiny_bundle, make_policy):
    policy = make_policy()
    order = []
    with Runtime.open(tiny_bundle, policy=policy, threads=1) as rt:
        policy.gate.clear()
        first = rt.submit("a", max_tokens=1)
        time.sleep(0.05)
        low = rt.submit("b", max_tokens=1, sink=lambda ev: ev.kind == "done" and order.append("low"))
        late = rt.submit("c", max_tokens=1, deadline_s=0.01)
        high = rt.submit("d", max_tokens=1, priority=5, sink=lambda ev: ev.kind == "done" and order.append("high"))
        time.sleep(0.05)
        policy.gate.set()
        first.result(10)
        with pytest.raises(DeadlineExceeded, match=r"waited \d+\.\d+ s in the queue, past its deadline of 0\.01 s"):
            late.result(10)
        deadline = time.monotonic() + 10
        while not (low.done() and high.done()) and time.monotonic() < deadline:
            time.sleep(0.01)
    assert order == ["high", "low"]


def test_close_finishes_accepted_requests_then_refuses(tiny_bundle, make_policy):
    policy = make_policy()
    rt = Runtime.open(tiny_bundle, policy=policy, threads=1)
    policy.gate.clear()
    handles = [rt.submit("a", max_tokens=3) for _ in range(3)]
    threading.Timer(0.1, policy.gate.set).start()
    rt.close(grace_s=10)
    assert all(h.result(0).completion_tokens >= 1 for h in handles)
    with pytest.raises(Unavailable, match="closed"):
        rt.submit("late")


def test_close_past_the_grace_fails_waiting_requests(tiny_bundle, make_policy):
    policy = make_policy()
    rt = Runtime.open(tiny_bundle, policy=policy, threads=1)
    policy.gate.clear()
    rt.submit("a", max_tokens=3)
    time.sleep(0.05)
    waiting = rt.submit("b", max_tokens=3)
    threading.Timer(0.5, policy.gate.set).start()
    rt.close(grace_s=0.1)
    with pytest.raises(Unavailable, match="shut down before this request started"):
        waiting.result(5)


# ------------------------------------------------------------------ failures


def test_corrupt_variant_is_fenced_and_the_request_retried(bundle_copy, make_policy):
    (bundle_copy / "variants/dense-int8/model.onnx").write_bytes(b"\x08garbage")
    policy = make_policy(index=1)
    with Runtime.open(bundle_copy, policy=policy, threads=1) as rt:
        r = rt.generate("hello", max_tokens=3)
        assert (r.variant, r.retried_from) == ("dense", "dense-int8") and r.reason.startswith("retry: dense-int8")
        assert rt.allowed().tolist() == [True, False]
        again = rt.generate("hello", max_tokens=3)
        assert again.variant == "dense" and again.retried_from is None
        with pytest.raises(VariantError, match="fenced after a failure"):
            rt.generate("hello", variant="dense-int8")
        text = rt.metrics.export().decode()
    assert 'edge_variant_fenced{variant="dense-int8"} 1.0' in text
    assert 'edge_variant_selections_total{source="retry",variant="dense"} 1.0' in text


def test_failure_at_run_time_is_fenced_and_retried(runtime, policy, monkeypatch):
    loaded, _ = runtime.pool.get(0, 64)

    def broken(token):
        raise VariantError("onnxruntime failed running model.onnx (simulated)")

    monkeypatch.setattr(loaded.decoder, "step", broken)
    r = runtime.generate("hello", max_tokens=4, ignore_eos=True)
    assert (r.variant, r.retried_from, r.completion_tokens) == ("dense-int8", "dense", 4)


def test_failure_after_streaming_started_is_reported(runtime, policy, monkeypatch):
    loaded, _ = runtime.pool.get(0, 64)
    calls = []

    def flaky(token):
        calls.append(token)
        if len(calls) > 2:
            raise VariantError("simulated failure mid-stream")
        return np.eye(loaded.session.vocab, dtype=np.float32)[7]

    monkeypatch.setattr(loaded.decoder, "step", flaky)
    with pytest.raises(Unavailable, match="cannot be retried"):
        for _ in runtime.stream("hello", max_tokens=50, ignore_eos=True):
            pass
    assert runtime.allowed().tolist() == [False, True]


def test_status_and_metrics(runtime):
    runtime.generate("a", max_tokens=2)
    s = runtime.status()
    assert s["queue_depth"] == 0 and s["variants"][0]["loaded"] and s["signals"]["battery_level"] == 1.0
    text = runtime.metrics.export().decode()
    for name in ("edge_requests_total", "edge_completion_tokens_total", "edge_request_duration_seconds_bucket",
                 "edge_queue_depth", "edge_variant_selections_total", "edge_signal_battery_level",
                 "edge_decision_seconds_bucket", "edge_variant_loads_total"):
        assert name in text, name


def test_corrupt_first_variant_at_open_moves_on(bundle_copy, make_policy):
    (bundle_copy / "variants/dense/model.onnx").write_bytes(b"\x08garbage")
    with Runtime.open(bundle_copy, policy=make_policy(0), threads=1) as rt:
        assert rt.allowed().tolist() == [False, True] and list(rt.pool.loaded) == [1]
        r = rt.generate("hello", max_tokens=3)
        assert r.variant == "dense-int8" and r.retried_from is None
    (bundle_copy / "variants/dense-int8/model.onnx").write_bytes(b"\x08garbage")
    with pytest.raises(BundleError, match=r"no variant of .* loads: .*cannot load"):
        Runtime.open(bundle_copy, threads=1)


def test_a_bundle_without_costs_still_serves(bundle_copy, caplog):
    edit(bundle_copy, lambda r: [v.update(cost={}) for v in r["variants"]])
    with Runtime.open(bundle_copy, threads=1) as rt:
        r = rt.generate("a", max_tokens=2)
    assert r.variant == "dense" and r.reason == "static"
    assert "the controller cannot be built" in caplog.text


def test_a_missing_policy_file_falls_back_to_the_rule_policy_with_one_warning(bundle_copy, caplog):
    raw = json.loads((bundle_copy / "manifest.json").read_text())
    raw["controller"] = {"policy": "controller/policy.onnx", "observation": list(observation.FEATURES),
                         "actions": [v["name"] for v in raw["variants"]]}
    (bundle_copy / "manifest.json").write_text(json.dumps(raw))
    with caplog.at_level(logging.WARNING), Runtime.open(bundle_copy, threads=1,
                                                        signals=StaticSource(DeviceState())) as rt:
        r = rt.generate("hi", max_tokens=2)
    warnings = [rec for rec in caplog.records if rec.levelno >= logging.WARNING and rec.name.endswith(".policy")]
    assert len(warnings) == 1 and "controller/policy.onnx" in warnings[0].getMessage()
    assert r.source == "fallback" and rt.policy.missing is not None
