"""The fast scoring paths give the scores of the plain ones, on a real tiny transformer bundle.

`reference_*` below are the harness's scoring as it was before the fast paths (float64
log-softmax over full logits, each option as a whole sequence in one right-padded batch):
the fast paths must match them to 1e-4 and pick the same options.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.batched import continuation_logliks, greedy_many, score_cases
from harness.evaluate import OrtModel, open_bundle, perplexity_windows
from harness.scoring import (
    PromptFormat,
    _split_ws,
    choice_tokens,
    log_softmax_at,
    option_loglikelihoods,
    perplexity,
    score_case,
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


@pytest.fixture(scope="module", params=["dense", "dense-int8"])
def setup(request, tiny_bundle):
    manifest, tok = open_bundle(tiny_bundle)
    v = manifest.variant(request.param)
    model = OrtModel(tiny_bundle / v.onnx, threads=1, name=v.name, storage=v.extra.get("storage"))
    fmt = PromptFormat(manifest.model.chat_template)
    fits = [  # the tiny model's positions run out on the longest chat prompts
        c for c in load_suite().cases
        if len(tok.encode(fmt.render(c) + max(c.options or ("",), key=len)).ids) + c.max_new_tokens
        < manifest.model.context_length
    ]
    return model, tok, fmt, fits


def test_batched_choices_match_the_reference(setup):
    model, tok, fmt, fits = setup
    cases = [c for c in fits if c.type == "choice"][::5]
    assert len(cases) >= 30 and {c.template for c in cases} == {"raw", "chat"}
    items = [choice_tokens(tok, fmt.render(c), c.options) for c in cases]
    cached = model.name == "dense"  # int8 steps over a cache take another kernel path: whole sequences there
    batched = continuation_logliks(model.session, items, cached)
    for case, fast in zip(cases, batched, strict=True):
        ref = reference_options(model, tok, fmt.render(case), case.options)
        np.testing.assert_allclose(fast, ref, atol=1e-4, err_msg=case.id)
        assert int(np.argmax(fast)) == int(np.argmax(ref)), case.id
        plain = [s for s, _ in option_loglikelihoods(model, tok, fmt.render(case), case.options)]
        np.testing.assert_allclose(plain, ref, atol=1e-4, err_msg=case.id)


def test_batched_greedy_matches_one_sequence_at_a_time(setup):
    model, tok, fmt, fits = setup
    cases = [c for c in fits if c.type != "choice"][:12]
    prompts = [tok.encode(fmt.render(c)).ids for c in cases]
    budgets = [c.max_new_tokens for c in cases]
    batched = greedy_many(model.session, prompts, budgets, stop_ids=set())
    assert batched == [list(model.generate(p, n, set())) for p, n in zip(prompts, budgets, strict=True)]
    assert {len(set(map(len, prompts)))} != {1}  # rows of different lengths went together


def test_score_cases_gives_the_per_case_results(setup):
    model, tok, fmt, fits = setup
    cases = fits[::4]
    assert {c.type for c in cases} >= {"choice", "regex"}
    stops = {tok.token_to_id("<|im_end|>")}
    fast = score_cases(model.session, tok, fmt, cases, "sum", stops, group=5, cached=model.name == "dense")
    slow = [score_case(model, tok, fmt, c, "sum", stops) for c in cases]
    for f, s in zip(fast, slow, strict=True):
        assert (f.id, f.correct, f.format_ok, f.output) == (s.id, s.correct, s.format_ok, s.output)
        np.testing.assert_allclose(f.detail.get("loglik", []), s.detail.get("loglik", []), atol=1e-4)


def test_perplexity_matches_the_reference(setup):
    model, tok, _, _ = setup
    windows = perplexity_windows(tok, 3, 64)
    assert perplexity(model, windows) == pytest.approx(reference_perplexity(model, windows), rel=1e-4)
