"""Speculative decoding on the tiny bundle: greedy output identical to the verifier's, the
sampled output distributed as the verifier's (a chi-square test that a wrong rejection step
fails), k falling back to plain decoding when every draft is rejected."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import chisquare

from edge_runtime.bundle import PROMPT_LOOKUP, read_manifest
from edge_runtime.engine.generate import Generation
from edge_runtime.engine.pairs import GROUNDED, run_pair
from edge_runtime.engine.pool import VariantPool
from edge_runtime.engine.sampling import Sampler, SamplingParams
from edge_runtime.engine.session import VariantSession
from edge_runtime.engine.speculative import (
    AdaptiveK,
    KPolicy,
    ModelDrafter,
    PromptLookupDrafter,
    Speculator,
    verify,
)
from edge_runtime.engine.tokenizer import Tokenizer
from edge_runtime.errors import VariantError


@pytest.fixture(scope="module")
def sessions(tiny_bundle):
    m = read_manifest(tiny_bundle)
    out = {}
    for name in ("dense", "dense-int8"):
        v = m.variant(name)
        out[name] = VariantSession(tiny_bundle / v.onnx, threads=1, storage=v.extra.get("storage"))
    return out


@pytest.fixture(scope="module")
def tok(tiny_bundle):
    return Tokenizer.from_bundle(tiny_bundle, read_manifest(tiny_bundle))


class ModelBacked:
    """A test drafter over a variant's decoder, rolled back as ModelDrafter's is."""

    def __init__(self, session):
        self.dec = session.decoder(64)

    def start(self, capacity):
        self.dec.reserve(capacity)
        self.dec.reset()

    def prefill(self, prompt):
        pass  # caught up by the first proposal

    def evidence(self, seq):
        return 0

    def keep(self, length):
        self.dec.rollback(min(self.dec.length, length))


class Contrarian(ModelBacked):
    """A drafter that is always wrong: it proposes a token the verifier never picks greedily."""

    name = "contrarian"

    def propose(self, seq, k, sampler):
        self.proposed = getattr(self, "proposed", 0) + k
        logits = self.dec.extend(list(seq[self.dec.length :]))[-1]
        return [int(np.argmin(logits))] * k, None


PROMPTS = ["Summarize: disk /dev/sda1 is 97% full on host db-2; disk /dev/sda1 is 97% full",
           "Hello there", "a b c a b c a b"]


def _generate(sessions, tok, prompt, speculator=None, **params):
    dec = sessions["dense"].decoder(256)
    ids = tok.encode(prompt)
    gen = Generation(dec, tok, ids, SamplingParams(**{"max_tokens": 40, "ignore_eos": True, **params}),
                     speculator=speculator)
    gen.run()
    return gen


@pytest.mark.parametrize("drafter", ["dense-int8", "prompt-lookup", "contrarian"])
def test_greedy_output_is_the_verifiers_token_for_token(sessions, tok, drafter):
    d = {"dense-int8": lambda: ModelDrafter("dense-int8", sessions["dense-int8"].decoder(64)),
         "prompt-lookup": PromptLookupDrafter, "contrarian": lambda: Contrarian(sessions["dense-int8"])}[drafter]()
    spec = Speculator(d, KPolicy(k_max=4, k_start=4, probe_every=3))
    for prompt in PROMPTS:
        plain = _generate(sessions, tok, prompt)
        fast = _generate(sessions, tok, prompt, spec)
        assert fast.token_ids == plain.token_ids, (drafter, prompt)
        assert fast.text == plain.text and fast.timings.decode_steps == plain.timings.decode_steps
        assert fast.timings.drafted_tokens == fast.spec.drafted
    assert spec.total.drafted > 0
    if drafter == "contrarian":  # every draft rejected: k fell to 0, only probes are drafted
        assert spec.total.accepted == 0 and spec.k.k == 0
        assert spec.total.drafted < 3 * 40 // 2
    if drafter == "dense-int8":  # the int8 copy agrees with its parent almost always
        assert spec.total.accepted / spec.total.drafted > 0.8


def test_prompt_lookup_copies_what_followed_the_last_ngram():
    d = PromptLookupDrafter(max_ngram=2)
    sampler = Sampler(SamplingParams())
    assert d.propose([5, 6, 7, 8, 1, 5, 6], 3, sampler) == ([7, 8, 1], None)
    assert d.propose([5, 6, 7, 9, 6], 2, sampler) == ([7, 9], None)  # unigram fallback
    assert d.propose([1, 2, 3], 3, sampler) == ([], None)
    # several occurrences: copy what followed the first (the prompt's text, not the output's
    # own partial quote of it)
    assert d.propose([5, 6, 7, 8, 0, 5, 6, 9, 0, 5, 6], 2, sampler) == ([7, 8], None)


def test_prompt_lookup_reports_the_match_its_draft_copies_after():
    d = PromptLookupDrafter()
    sampler = Sampler(SamplingParams())
    seq = [5, 6, 7, 8, 0, 5, 6, 7]
    assert d.evidence(seq) == 3 and d.propose(seq, 2, sampler) == ([8, 0], None)
    assert d.evidence([5, 6, 7, 9, 6]) == 1 and d.evidence([1, 2, 3]) == 0
    assert d.propose([1, 2, 1], 2, sampler) == ([2, 1], None)  # without `evidence` first: searched afresh


def test_adaptive_k_learns_each_kind_of_draft_apart():
    k = AdaptiveK(KPolicy(k_max=6, k_start=2, draft_ratio=0.0, verify_slope=0.1, probe_every=4, probe_max=16))
    for _ in range(10):
        k.update(k.next_k(3), k.next_k(3), evidence=3)  # 3-token matches: always kept
        k.update(k.next_k(1), 0, evidence=1)  # 1-token matches: never
    assert k.next_k(3) == 6 and k.next_k(1) == 0
    assert k.k == 2 and k.alpha is None  # the plain kind (a model drafter's) saw nothing


def test_a_drafter_slower_than_its_verifier_is_never_asked():
    k = AdaptiveK(KPolicy(k_max=6, k_start=3, draft_ratio=1.2, verify_slope=0.1, probe_every=4, probe_max=16))
    assert not k.pays and k.next_k() == 3  # one verification, to measure its acceptance
    k.update(3, 3)  # even all kept does not pay for it
    assert {k.next_k() for _ in range(100)} == {0}  # then no draft, and no probe
    assert AdaptiveK(KPolicy(draft_ratio=0.5)).pays


def test_adaptive_k_grows_with_acceptance_and_falls_to_plain():
    k = AdaptiveK(KPolicy(k_max=6, k_start=2, draft_ratio=0.1, verify_slope=0.1, probe_every=4, probe_max=16))
    for _ in range(10):
        k.update(k.next_k(), k.k)  # everything kept
    assert k.k == 6
    while k.k:
        k.update(k.next_k(), 0)  # nothing kept
    assert [k.next_k() for _ in range(4)] == [0, 0, 0, 1]  # the first probe after 4 plain steps
    waits = []
    for _ in range(4):
        k.update(1, 0)  # the probe was rejected: the next one comes twice as late, up to probe_max
        waits.append(next(n for n in range(1, 100) if k.next_k() == 1))
    assert waits == [8, 16, 16, 16]
    k.update(1, 1)  # a probe that was kept brings the probes back to every 4 steps
    assert [k.next_k() for _ in range(4)] == [0, 0, 0, 1] or k.k > 0


@pytest.mark.parametrize("bad", [dict(k_max=0), dict(k_max=2, k_start=3), dict(draft_ratio=-1.0)])
def test_k_policy_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="k_max must be a positive integer|k_start must be|must be >= 0"):
        KPolicy(**bad)


# -- sampling: the output distribution is the verifier's


TOP_K = 4


def _exact_pairs(session, prompt_ids, params):
    """Exact P(t1, t2) of the verifier under `params` (top-k keeps the support small)."""
    s = Sampler(params)
    dec = session.decoder(64)
    p1 = s.probs(dec.prefill(prompt_ids))
    exact = {}
    for t1 in np.flatnonzero(p1):
        dec.rollback(len(prompt_ids))
        p2 = s.probs(dec.step(int(t1)))
        for t2 in np.flatnonzero(p2):
            exact[(int(t1), int(t2))] = p1[t1] * p2[t2]
    return exact


class SkewedDrafter(ModelBacked):
    """Draws from a distribution far from the verifier's (reversed preferences among the top k),
    so most drafts are rejected and the residual draw does the work."""

    name = "skewed"

    def propose(self, seq, k, sampler):
        logits = self.dec.extend(list(seq[self.dec.length :]))[-1]
        q = sampler.probs(-logits)  # top-k of the reversed logits: tokens the verifier rarely picks
        q = 0.5 * q + 0.5 * sampler.probs(logits)
        token = sampler.draw(q)
        return [token], q[None, :]


def _chi2(counts, exact):
    """p-value of the counts under the exact distribution (0 when a pair outside its support was drawn)."""
    if set(counts) - set(exact):
        return 0.0
    keys = sorted(exact)
    obs = np.array([counts.get(key, 0) for key in keys], float)
    exp = np.array([exact[key] for key in keys])
    return chisquare(obs, exp * obs.sum() / exp.sum()).pvalue


@pytest.mark.parametrize("drafter", ["skewed", "prompt-lookup"])
def test_speculative_sampling_keeps_the_verifiers_distribution(sessions, tok, drafter):
    ids = tok.encode("a b a b a")
    params = SamplingParams(max_tokens=3, temperature=1.0, top_k=TOP_K, ignore_eos=True)
    exact = _exact_pairs(sessions["dense"], ids, params)
    n = 1500
    make = {"skewed": lambda: SkewedDrafter(sessions["dense-int8"]), "prompt-lookup": PromptLookupDrafter}[drafter]
    spec = Speculator(make(), KPolicy(k_max=1, k_start=1, probe_every=1, probe_max=1))
    dec = sessions["dense"].decoder(64)
    counts: dict = {}
    for seed in range(n):
        gen = Generation(dec, tok, ids, SamplingParams(**{**params.__dict__, "seed": seed}), speculator=spec)
        gen.run()
        key = tuple(gen.token_ids[:2])  # the second token is always a verified draft or its replacement
        counts[key] = counts.get(key, 0) + 1
    assert spec.total.verifications > n // 4  # the second token often came through verification
    assert _chi2(counts, exact) > 1e-3
    # The test has power: the naive step "keep every draft" gives the drafter's distribution,
    # and the same test rejects that.
    if drafter == "skewed":
        naive: dict = {}
        for seed in range(n):
            s = Sampler(SamplingParams(**{**params.__dict__, "seed": seed}))
            d = spec.drafter
            d.start(64)
            t1 = s.draw(_first_probs(sessions["dense"], ids, params))
            t2 = d.propose([*ids, t1], 1, s)[0][0]
            naive[(t1, t2)] = naive.get((t1, t2), 0) + 1
        assert _chi2(naive, exact) < 1e-6


_FIRST: dict = {}


def _first_probs(session, ids, params):
    key = (id(session), tuple(ids))
    if key not in _FIRST:
        _FIRST[key] = Sampler(params).probs(session.decoder(64).prefill(ids))
    return _FIRST[key]


def test_verify_rejection_step_on_known_distributions():
    """One position, p and q known: P(output = x) must equal p(x) exactly (by enumeration)."""
    params = SamplingParams(temperature=1.0)
    p = np.array([0.5, 0.3, 0.2, 0.0])
    q = np.array([0.1, 0.1, 0.2, 0.6])
    logits_p = np.log(np.maximum(p, 1e-300))
    rows = np.stack([logits_p, logits_p])
    out = np.zeros(4)
    n = 20000
    s = Sampler(SamplingParams(temperature=1.0, seed=1))
    for _ in range(n):
        d = s.draw(q)
        kept, token = verify(rows, [d], q[None, :], s)
        out[d if kept else token] += 1
    assert params.greedy is False
    np.testing.assert_allclose(out / n, p, atol=0.015)


class Breaking(ModelBacked):
    """A drafter whose model fails after a few proposals, as a broken graph would at run time."""

    name = "breaking"

    def propose(self, seq, k, sampler):
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls > 2:
            raise VariantError("onnxruntime failed running 'drafter.onnx' (Fail: boom)")
        logits = self.dec.extend(list(seq[self.dec.length :]))[-1]
        return [int(np.argmax(logits))], None


def test_a_drafter_failing_mid_sequence_leaves_the_verifiers_output(sessions, tok):
    spec = Speculator(Breaking(sessions["dense-int8"]), KPolicy(k_max=2, k_start=2))
    plain = _generate(sessions, tok, PROMPTS[0])
    fast = _generate(sessions, tok, PROMPTS[0], spec)
    assert fast.token_ids == plain.token_ids
    assert "boom" in spec.failed and spec.total.verifications == 2


REAL_BUNDLE = Path(os.environ.get("EDGE_REAL_BUNDLE", "/work/bundles/smollm2-135m"))


@pytest.mark.slow
@pytest.mark.skipif(not (REAL_BUNDLE / "manifest.json").is_file(), reason="the real SmolLM2-135M bundle is not built")
def test_real_bundle_greedy_pairs_are_the_verifiers_token_for_token():
    """SmolLM2-135M: every drafter of the bundle (and prompt lookup) leaves dense's greedy output unchanged."""
    m = read_manifest(REAL_BUNDLE)
    tok = Tokenizer.from_bundle(REAL_BUNDLE, m)
    pool = VariantPool(REAL_BUNDLE, m, allow_ungated=True)
    prompts = [tok.encode_chat([{"role": "user", "content": p}]) for p in GROUNDED[:2]]
    for drafter in (PROMPT_LOOKUP, *[v.name for v in m.variants if v.name != "dense"][:3]):
        def spec(capacity, d=drafter):
            if d == PROMPT_LOOKUP:
                return Speculator(PromptLookupDrafter())
            return Speculator(ModelDrafter(d, pool.get(m.index(d), capacity, drafting=True, keep=(0,))[0].decoder))
        run = run_pair(pool, tok, "dense", spec, prompts, max_tokens=32)
        assert run.identical and run.drafted > 0, drafter
