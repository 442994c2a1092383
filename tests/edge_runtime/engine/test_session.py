"""The decoder: in-place KV cache through IO binding, chunked prefill, parity with the plain forward."""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.bundle import read_manifest
from edge_runtime.engine.session import VariantSession
from edge_runtime.errors import VariantError


@pytest.fixture(scope="module", params=["dense", "dense-int8"])
def session(request, tiny_bundle):
    m = read_manifest(tiny_bundle)
    v = m.variant(request.param)
    return VariantSession(tiny_bundle / v.onnx, threads=1, storage=v.extra.get("storage"))


def _reference(session, prompt, steps):
    """Greedy tokens and last-position logits through `forward` (past/present copied every step)."""
    logits, past = session.forward(prompt[None, :])
    rows = [logits[0, -1]]
    for _ in range(steps):
        tok = int(rows[-1].argmax())
        logits, past = session.forward(np.array([[tok]]), past)
        rows.append(logits[0, -1])
    return rows


@pytest.mark.parametrize("chunk", [1, 7, 256])
def test_decoder_matches_forward(session, chunk):
    prompt = np.random.default_rng(0).integers(0, session.vocab, 23)
    ref = _reference(session, prompt, 12)
    dec = session.decoder(capacity=40, prefill_chunk=chunk)
    rows = [dec.prefill(prompt)]
    for _ in range(12):
        rows.append(dec.step(int(rows[-1].argmax())).copy())
    assert dec.length == 23 + 12
    np.testing.assert_allclose(np.stack(rows), np.stack(ref), atol=1e-4)


def test_decoder_reuses_buffers_across_sequences(session):
    dec = session.decoder(capacity=32)
    a = np.random.default_rng(1).integers(0, session.vocab, 9)
    b = np.random.default_rng(2).integers(0, session.vocab, 5)
    first = dec.prefill(a)
    dec.step(3)
    dec.reset()
    dec.prefill(b)  # a different sequence in the same buffers
    dec.reset()
    np.testing.assert_allclose(dec.prefill(a), first, atol=1e-5)


def test_reserve_grows_and_bounds_are_checked(session):
    dec = session.decoder(capacity=4)
    with pytest.raises(ValueError, match="do not fit a decoder of capacity 4"):
        dec.prefill(np.arange(5))
    before = dec.cache_bytes
    dec.reserve(16)
    assert dec.capacity == 16 and dec.cache_bytes == 4 * before
    dec.prefill(np.arange(16))
    with pytest.raises(ValueError, match="decoder is full"):
        dec.step(1)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(VariantError, match="is missing"):
        VariantSession(tmp_path / "nope.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(VariantError, match="cannot load .* corrupt"):
        VariantSession(bad, storage="dense")


@pytest.mark.parametrize("spin, entry", [(False, "0"), (True, "1")])
def test_spinning_is_configurable(tiny_bundle, spin, entry):
    m = read_manifest(tiny_bundle)
    s = VariantSession(tiny_bundle / m.variants[0].onnx, threads=1, storage="dense", spin=spin)
    assert s.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == entry


def test_extend_scores_every_token_and_rollback_overwrites_in_place(session):
    """Speculative decoding's two primitives: k tokens in one pass equal k steps, and a
    rollback makes the next write replace the rejected positions (no copy of the cache)."""
    rng = np.random.default_rng(1)
    prompt, good, bad = (rng.integers(0, session.vocab, n) for n in (9, 4, 5))
    dec = session.decoder(capacity=40, prefill_chunk=3)
    dec.prefill(prompt)
    many = dec.extend(good)  # [4, vocab]
    assert many.shape == (4, session.vocab) and dec.length == 13
    ref = session.decoder(capacity=40)
    ref.prefill(prompt)
    steps = np.stack([ref.step(int(t)).copy() for t in good])
    np.testing.assert_allclose(many, steps, atol=1e-4)
    dec.extend(bad)  # rejected drafts: written into the cache, then forgotten
    dec.rollback(13)
    after = dec.step(7).copy()
    np.testing.assert_allclose(after, ref.step(7), atol=1e-4)
    with pytest.raises(ValueError, match="cannot roll back to 20 tokens: the sequence has 14"):
        dec.rollback(20)


def test_prefill_runs_the_lm_head_on_its_last_position_only(session):
    """Exported graphs take `logits_to_keep`: a prefill asks for one row, extend for all of them,
    and the row a prefill returns is the one the full forward computes."""
    assert session.keeps_logits
    prompt = np.random.default_rng(3).integers(0, session.vocab, 11)
    dec = session.decoder(capacity=32)
    last = dec.prefill(prompt)
    assert dec._io.get_outputs()[0].shape() == [1, 1, session.vocab]
    full, _ = session.forward(prompt[None, :])  # feeds nothing: every position
    assert full.shape == (1, 11, session.vocab)
    np.testing.assert_allclose(last, full[0, -1], atol=1e-4)
    assert dec.extend(prompt[:3]).shape == (3, session.vocab)
