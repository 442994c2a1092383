"""The fast scoring paths give the scores of the plain ones, on a real tiny transformer bundle.

`reference_*` below are the harness's scoring as it was before the fast paths (float64
log-softmax over full logits, each option as a whole sequence in one right-padded batch):
the fast paths must match them to 1e-4 and pick the same options.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.evaluate import OrtModel, open_bundle, perplexity_windows
from harness.scoring import (
    PromptFormat,
    _split_ws,
    log_softmax_at,
    option_loglikelihoods,
    perplexity,
)
from harness.suite import load_suite


def reference_log_softmax_at(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    lse = (m + np.log(np.exp(x - m).sum(axis=-1, keepdims=True)))[:, 0]
    return x[np.arange(len(targets)), targets] - lse


def reference_options(model: OrtModel, tok, context: str, options) -> list[float]:
    rows = []
    for opt in options:
        ctx, cont = _split_ws(context, opt)
        ctx_ids, cont_ids = tok.encode(ctx).ids, tok.encode(cont).ids
        rows.append((ctx_ids + cont_ids, len(cont_ids)))
    batch = np.zeros((len(rows), max(len(r) for r, _ in rows)), dtype=np.int64)
    for i, (ids, _) in enumerate(rows):
        batch[i, : len(ids)] = ids
    logits = model.logits(batch)
    out = []
    for i, (ids, n) in enumerate(rows):
        pos = np.arange(len(ids) - n - 1, len(ids) - 1)
        out.append(float(reference_log_softmax_at(logits[i, pos], np.asarray(ids[len(ids) - n:])).sum()))
    return out


def reference_perplexity(model: OrtModel, windows: np.ndarray) -> float:
    total, count = 0.0, 0
    for w in windows:
        lp = reference_log_softmax_at(model.logits(w[None, :])[0][:-1], w[1:])
        total -= float(lp.sum())
        count += len(lp)
    return math.exp(total / count)


def test_float32_log_softmax_matches_float64():
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((300, 5000)) * 8).astype(np.float32)
    targets = rng.integers(0, 5000, 300)
    np.testing.assert_allclose(log_softmax_at(logits, targets, rows=64), reference_log_softmax_at(logits, targets), atol=1e-4)


@pytest.mark.parametrize("variant", ["dense", "dense-int8"])
def test_prefix_cached_choices_and_perplexity_match_the_reference(tiny_bundle, variant):
    manifest, tok = open_bundle(tiny_bundle)
    v = manifest.variant(variant)
    model = OrtModel(tiny_bundle / v.onnx, threads=1, name=variant, storage=v.extra.get("storage"))
    fmt = PromptFormat(manifest.model.chat_template)
    fits = [  # the tiny model's positions run out on the longest chat prompts
        c for c in load_suite().cases
        if c.type == "choice" and len(tok.encode(fmt.render(c) + max(c.options, key=len)).ids) < manifest.model.context_length
    ]
    cases = fits[::5]
    assert len(cases) >= 30 and {c.template for c in cases} == {"raw", "chat"}
    for case in cases:
        context = fmt.render(case)
        fast = [s for s, _ in option_loglikelihoods(model, tok, context, case.options)]
        ref = reference_options(model, tok, context, case.options)
        np.testing.assert_allclose(fast, ref, atol=1e-4, err_msg=case.id)
        assert int(np.argmax(fast)) == int(np.argmax(ref)), case.id
    windows = perplexity_windows(tok, 3, 64)
    assert perplexity(model, windows) == pytest.approx(reference_perplexity(model, windows), rel=1e-4)
