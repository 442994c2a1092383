"""Speculative pairs in the bundle, the pool and the runtime: declared in the manifest, refused
with a clear error when wrong, served by name with drafted/accepted tokens reported, and
fenced (the verifier serving on) when the drafter fails."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from edge_runtime.bundle import read_manifest, write_manifest
from edge_runtime.control.observation import DeviceState
from edge_runtime.control.signals import StaticSource
from edge_runtime.errors import BundleError, VariantError
from edge_runtime.runtime import Runtime

PAIRS = [{"name": "dense+int8", "verifier": "dense", "drafter": "dense-int8", "k_max": 4},
         {"name": "dense+lookup", "verifier": "dense", "drafter": "prompt-lookup"}]


def with_pairs(bundle, pairs=PAIRS, edit=None):
    path = bundle / "manifest.json"
    raw = json.loads(path.read_text())
    raw["pairs"] = pairs
    if edit:
        edit(raw)
    path.write_text(json.dumps(raw))
    return bundle


def open_rt(bundle, **kw):
    return Runtime.open(bundle, signals=StaticSource(DeviceState()), threads=1, preload="none", **kw)


def test_old_manifest_has_no_pairs_and_round_trips(tiny_bundle, bundle_copy):
    m = read_manifest(tiny_bundle)
    assert m.pairs == () and "pairs" not in m.to_dict()
    with_pairs(bundle_copy)
    m = read_manifest(bundle_copy)
    assert [p.name for p in m.pairs] == ["dense+int8", "dense+lookup"] and m.pair("dense+int8").k_max == 4
    write_manifest(bundle_copy, m)
    assert read_manifest(bundle_copy).pairs == m.pairs


@pytest.mark.parametrize("pair, match", [
    ({"verifier": "dense-99"}, r"pair 'p': verifier 'dense-99' is not a variant of the bundle"),
    ({"drafter": "nope"}, r"drafter 'nope' is neither 'prompt-lookup' nor a variant"),
    ({"k_max": 0}, r"k_max must be a positive integer, got 0"),
    ({"k_max": -2}, r"k_max must be a positive integer, got -2"),
    ({"name": "dense"}, r"the name is already taken"),
    ({"drafter": "dense"}, r"the drafter is the verifier"),
])
def test_bad_pairs_are_refused_at_load(bundle_copy, pair, match):
    with_pairs(bundle_copy, [{"name": "p", "verifier": "dense", "drafter": "dense-int8", **pair}])
    with pytest.raises(BundleError, match=match):
        read_manifest(bundle_copy)


def test_gate_failed_verifier_refuses_the_pair_but_a_failed_drafter_may_draft(bundle_copy):
    def fail(raw, i):
        raw["variants"][i]["gate"] = {"status": "fail", "failed": ["perplexity"]}

    with_pairs(bundle_copy, edit=lambda raw: fail(raw, 1))  # dense-int8, the drafter, failed
    rt = open_rt(bundle_copy)
    try:
        r = rt.generate("hello hello hello", variant="dense+int8", max_tokens=12, ignore_eos=True)
        assert r.variant == "dense+int8" and r.timings.drafted_tokens > 0
    finally:
        rt.close(grace_s=5)
    with_pairs(bundle_copy, [*PAIRS, {"name": "int8+lookup", "verifier": "dense-int8", "drafter": "prompt-lookup"}],
               edit=lambda raw: fail(raw, 1))
    rt = open_rt(bundle_copy)
    try:
        with pytest.raises(VariantError, match=r"pair 'int8\+lookup' may not run: its verifier 'dense-int8' may not "
                                               r"run: failed its evaluation gate \(perplexity\)"):
            rt.generate("hi", variant="int8+lookup")
    finally:
        rt.close(grace_s=5)


def test_pair_output_is_its_verifiers_and_is_counted(bundle_copy):
    with_pairs(bundle_copy)
    rt = open_rt(bundle_copy)
    try:
        prompt = "the cat sat on the mat; the cat sat on the"
        plain = rt.generate(prompt, variant="dense", max_tokens=24, ignore_eos=True)
        for name in ("dense+int8", "dense+lookup"):
            r = rt.generate(prompt, variant=name, max_tokens=24, ignore_eos=True)
            assert r.token_ids == plain.token_ids and r.variant == name
            assert r.timings.drafted_tokens >= r.timings.accepted_tokens > 0
        text = rt.metrics.export().decode()
        assert 'edge_drafted_tokens_total{pair="dense+int8"}' in text
        assert 'edge_accepted_tokens_total{pair="dense+lookup"}' in text
        # both models of a pair are loaded and counted against the memory budget
        assert {0, 1} <= set(rt.pool.loaded)
    finally:
        rt.close(grace_s=5)


def test_drafter_that_fails_to_load_fences_the_pair_and_the_verifier_serves(bundle_copy):
    with_pairs(bundle_copy)
    v = read_manifest(bundle_copy).variant("dense-int8")
    (bundle_copy / v.onnx).write_bytes(b"not an onnx graph")
    rt = open_rt(bundle_copy)
    try:
        r = rt.generate("hi there", variant="dense+int8", max_tokens=6)
        assert r.variant == "dense" and "pair 'dense+int8' fenced: its verifier alone" in r.reason
        assert "its drafter 'dense-int8' failed" in rt.pool.why_not_pair("dense+int8")
        assert rt.pool.why_not(0) is None  # the verifier keeps serving
        with pytest.raises(VariantError, match=r"pair 'dense\+int8' may not run: fenced after a failure: its drafter 'dense-int8' failed"):
            rt.generate("hi", variant="dense+int8")
    finally:
        rt.close(grace_s=5)


def test_drafter_with_another_vocabulary_is_refused(bundle_copy, monkeypatch):
    with_pairs(bundle_copy)
    rt = open_rt(bundle_copy)
    try:
        loaded, _ = rt.pool.get(1, 64, drafting=True)
        monkeypatch.setattr(loaded.session, "vocab", loaded.session.vocab + 7)
        with pytest.raises(VariantError, match=r"drafter 'dense-int8' has a vocabulary of \d+ tokens, verifier "
                                               r"'dense' \d+: a drafter must share the verifier's tokenizer"):
            rt.pool.get_pair("dense+int8", 64)
        assert "fenced" in rt.pool.why_not_pair("dense+int8")
    finally:
        rt.close(grace_s=5)


def test_serve_lists_pairs_and_reports_drafted_tokens(bundle_copy):
    from edge_runtime.serve.app import ServerConfig, create_app

    with_pairs(bundle_copy)
    rt = open_rt(bundle_copy)
    try:
        client = TestClient(create_app(ServerConfig(bundle=str(bundle_copy)), runtime=rt))
        models = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
        assert models["dense+lookup"]["edge"]["pair"] and models["dense+lookup"]["edge"]["verifier"] == "dense"
        body = client.post("/v1/completions", json={"model": "dense+lookup", "prompt": "a b a b a b a b",
                                                     "max_tokens": 12}).json()
        assert body["model"] == "dense+lookup"
        assert body["timings"]["drafted_n"] >= body["timings"]["accepted_n"] >= 0
        assert "edge_drafted_tokens_total" in client.get("/metrics").text
    finally:
        rt.close(grace_s=5)


def test_drafter_failing_while_drafting_fences_the_pair_after_the_request(bundle_copy, monkeypatch):
    with_pairs(bundle_copy)
    rt = open_rt(bundle_copy)
    try:
        prompt = "one two three one two three one two"
        plain = rt.generate(prompt, variant="dense", max_tokens=16, ignore_eos=True)
        drafter, _ = rt.pool.get(1, 64, drafting=True)

        def broken(ids):
            raise VariantError("onnxruntime failed running 'dense-int8' (Fail: boom)")

        monkeypatch.setattr(drafter.decoder, "prefill", broken)
        r = rt.generate(prompt, variant="dense+int8", max_tokens=16, ignore_eos=True)
        assert r.token_ids == plain.token_ids and r.variant == "dense+int8"
        assert "its drafter failed while drafting" in rt.pool.why_not_pair("dense+int8")
        assert rt.pool.why_not(0) is None
    finally:
        rt.close(grace_s=5)


def test_memory_budget_counts_both_models_of_a_pair(bundle_copy):
    with_pairs(bundle_copy)
    m = read_manifest(bundle_copy)
    from edge_runtime.engine.pool import VariantPool

    sizes = [VariantPool(bundle_copy, m).estimate_mb(v) for v in m.variants]
    pool = VariantPool(bundle_copy, m, threads=1, memory_budget_mb=max(sizes) * 1.01)
    assert pool.why_not(0) is None and pool.why_not(1) is None  # each fits alone
    assert "verifier and drafter together need about" in pool.why_not_pair("dense+int8")
    assert pool.why_not_pair("dense+lookup") is None  # prompt lookup needs no second model
    assert pool.allowed().tolist() == [True, True, False, True]
