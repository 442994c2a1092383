"""Speculative decoding: a cheap drafter proposes k tokens, the verifier checks them in one pass.

The verifier (a gated variant) scores `[last token, d1..dk]` in one forward pass
(`Decoder.extend`) and keeps the longest prefix of drafts it agrees with plus one token
of its own, so every emitted token is the verifier's:

- greedy: a draft is kept while it equals the verifier's argmax; the output is token for
  token what the verifier alone would write;
- sampling (temperature, top-k, top-p): draft d drawn from the drafter's distribution q is
  kept with probability min(1, p(d)/q(d)), and the first rejected one is replaced by a
  draw from norm(max(0, p - q)) (Leviathan et al. 2023, Chen et al. 2023), which leaves
  the output distributed exactly as the verifier's p. A drafter without a distribution
  (prompt lookup) has q = one-hot on its draft.

Rejected drafts are forgotten in place on both decoders (`Decoder.rollback`: the next write
overwrites them), so no cache is ever copied. `AdaptiveK` picks k from the recent
acceptance rate and the pair's costs, down to k = 0 (plain decoding) when drafting does not
pay, probing now and then so that k can come back.

Drafters: `ModelDrafter` (any variant of the bundle, gate-failed ones included, since each
of its tokens is checked) and `PromptLookupDrafter` (n-grams of the prompt and the text so
far; no model).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np

from edge_runtime.bundle import PROMPT_LOOKUP, Manifest, Pair
from edge_runtime.engine.sampling import Sampler
from edge_runtime.engine.session import Decoder
from edge_runtime.errors import VariantError

log = logging.getLogger(__name__)
T = TypeVar("T")

@dataclass(frozen=True)
class KPolicy:
    """How many tokens to draft per verification, and the costs that decide it.

    Costs are in verifier decode steps (one token, one pass) and come from the pair's
    measurement in the manifest (`edge_runtime.engine.probe --pairs`); the defaults are a
    cautious guess for a pair that was never measured.
    """

    k_max: int = 6  # most drafts per verification; the verifier's pass grows with it
    k_start: int = 3  # k of the first verification, before any acceptance was seen
    draft_ratio: float = 0.5  # one drafted token's cost / one verifier step (~0 for prompt lookup)
    verify_slope: float = 0.15  # extra cost of each further token in the verifier's pass, in steps
    probe_every: int = 16  # plain steps before the first single-draft probe once k has fallen to 0
    probe_max: int = 256  # each probe that finds drafting still not paying doubles the wait, up to this
    memory: float = 0.8  # weight of the past in the acceptance estimate (per verification)

    def __post_init__(self) -> None:
        if isinstance(self.k_max, bool) or not isinstance(self.k_max, int) or self.k_max < 1:
            raise ValueError(f"k_max must be a positive integer, got {self.k_max!r}; use 1..8")
        if not isinstance(self.k_start, int) or not 0 <= self.k_start <= self.k_max:
            raise ValueError(f"k_start must be an integer in [0, k_max={self.k_max}], got {self.k_start!r}")
        if self.draft_ratio < 0 or self.verify_slope < 0:
            raise ValueError(f"draft_ratio and verify_slope must be >= 0, got {self.draft_ratio}, "
                             f"{self.verify_slope}")
        if not 1 <= self.probe_every <= self.probe_max or not 0.0 <= self.memory < 1.0:
            raise ValueError(f"need 1 <= probe_every <= probe_max and memory in [0, 1), got {self.probe_every}, "
                             f"{self.probe_max}, {self.memory}")


def policy_for(pair: Pair, manifest: Manifest) -> KPolicy:
    """The pair's k policy: its k bounds, and its measured cost ratios (else ones derived from the
    variants' measured decode costs, else the defaults)."""
    draft_ratio = pair.extra.get("draft_ratio")
    if draft_ratio is None:
        if pair.drafter == PROMPT_LOOKUP:
            draft_ratio = 0.02  # an n-gram search: microseconds against milliseconds of a forward pass
        else:
            d, v = (manifest.variant(n).cost.decode_ms_per_token for n in (pair.drafter, pair.verifier))
            draft_ratio = d / v if d and v else KPolicy.draft_ratio
    slope = pair.extra.get("verify_slope", KPolicy.verify_slope)
    return KPolicy(k_max=pair.k_max, k_start=pair.k_start, draft_ratio=float(draft_ratio), verify_slope=float(slope))


def expected_tokens(alpha: float, k: int) -> float:
    """Tokens one verification yields with k drafts each kept with probability alpha (+1 of the verifier's)."""
    if alpha >= 1.0:
        return k + 1.0
    return (1.0 - alpha ** (k + 1)) / (1.0 - alpha)


@dataclass
class _KState:
    """What AdaptiveK learnt about one kind of draft."""

    k: int
    wait: int  # plain steps before the next probe once k is 0
    alpha: float | None = None  # recent share of judged drafts that were kept
    plain: int = 0  # plain steps since k fell to 0


class AdaptiveK:
    """k from the recent acceptance rate: the k with the most tokens per unit of cost, 0 when none pays.

    One per pair, kept across requests, so a pair that stopped paying stays cheap: once k is
    0, a single-draft probe comes after `probe_every` plain steps, and each probe that leaves
    its draft rejected doubles the wait (up to `probe_max`), so a drafter that is always wrong costs a
    probe every few hundred tokens.

    Acceptance is learnt per kind of draft (`evidence`, a small integer the drafter reports
    before it drafts; 0 for a model drafter): prompt lookup's drafts backed by a 3-token match
    are kept far more often than those backed by one token, and one rate for both sized the
    drafts of each wrongly (replayed on grounded and open prompts, per-kind rates took 4-5%
    fewer verifier passes).
    """

    def __init__(self, policy: KPolicy) -> None:
        self.policy = policy
        self._states: dict[int, _KState] = {}
        # a drafter whose tokens cost more than even perfect acceptance saves (one about as slow
        # as its verifier) gets its first verification, which measures its acceptance, and no
        # probe once k has fallen to 0
        self.pays = self.best_k(1.0) > 0

    def _state(self, evidence: int) -> _KState:
        st = self._states.get(evidence)
        if st is None:
            st = self._states[evidence] = _KState(self.policy.k_start, self.policy.probe_every)
        return st

    @property
    def k(self) -> int:
        """k for the next plain (evidence 0) draft."""
        return self._state(0).k

    @property
    def alpha(self) -> float | None:
        """Recent share of (evidence 0) drafts kept (None before any verification)."""
        return self._state(0).alpha

    def best_k(self, alpha: float) -> int:
        p = self.policy
        rates = [expected_tokens(alpha, k) / (1.0 + k * (p.draft_ratio + p.verify_slope))
                 for k in range(p.k_max + 1)]
        return int(np.argmax(rates))

    def next_k(self, evidence: int = 0) -> int:
        """k for the next verification of drafts of this kind (0: decode one token plainly)."""
        st = self._state(evidence)
        if st.k == 0 and self.pays:
            st.plain += 1
            if st.plain >= st.wait:
                st.plain = 0
                return 1
        return st.k

    def update(self, drafted: int, kept: int, evidence: int = 0) -> None:
        """Record one verification: `kept` of `drafted` drafts of this kind agreed."""
        if drafted == 0:
            return
        st = self._state(evidence)
        tried = min(kept + 1, drafted)  # drafts after the first rejected one were never judged
        m = self.policy.memory
        st.alpha = kept / tried if st.alpha is None else m * st.alpha + (1.0 - m) * kept / tried
        was, st.k = st.k, self.best_k(st.alpha)
        if st.k > 0 or kept > 0:
            st.wait = self.policy.probe_every
        elif was == 0:  # a probe, rejected: wait longer for the next one
            st.wait = min(2 * st.wait, self.policy.probe_max)
        st.plain = 0  # the next probe comes `wait` plain steps after this verification


class Drafter(Protocol):
    """Proposes tokens that continue a sequence; told afterwards how many were kept."""

    name: str

    def start(self, capacity: int) -> None:
        """A new sequence of at most `capacity` tokens begins."""

    def prefill(self, prompt: Sequence[int]) -> None:
        """Read the prompt while the verifier reads it (its cost belongs to the time to first token)."""

    def evidence(self, seq: Sequence[int]) -> int:
        """The kind of draft `propose` would make after `seq` (AdaptiveK learns each kind's
        acceptance apart; a drafter with one kind returns 0)."""

    def propose(self, seq: Sequence[int], k: int, sampler: Sampler) -> tuple[list[int], np.ndarray | None]:
        """Up to `k` tokens continuing `seq`, and the distributions [n, vocab] they were drawn from
        (None: chosen deterministically, so q is one-hot on each draft)."""

    def keep(self, length: int) -> None:
        """The sequence's first `length` tokens are final; anything the drafter holds past them is not."""


class PromptLookupDrafter:
    """Drafts by copying: the tokens that followed the first earlier occurrence of the sequence's
    last n tokens (n from `max_ngram` down to `min_ngram`). Costs no model; shines when the
    output quotes its input (summaries, extraction, code edits).

    The first occurrence is usually in the prompt, the text being quoted; a later one is
    often the output's own earlier, partial quote of it. Replaying dense's greedy outputs on
    input-grounded prompts at k_max 8, copying from the first occurrence gave 2.17 tokens
    per verifier pass against 2.02 from the latest on the three of `pairs.GROUNDED`, and
    1.40 against 1.33 on eight others."""

    name = PROMPT_LOOKUP

    def __init__(self, max_ngram: int = 3, min_ngram: int = 1) -> None:
        if not 1 <= min_ngram <= max_ngram:
            raise ValueError(f"need 1 <= min_ngram <= max_ngram, got {min_ngram}, {max_ngram}")
        self.max_ngram, self.min_ngram = max_ngram, min_ngram
        self._last: tuple[tuple[int, ...], int, int] | None = None  # (key, n, start) of the last `evidence`

    def start(self, capacity: int) -> None:
        self._last = None

    def prefill(self, prompt: Sequence[int]) -> None:
        pass

    def match(self, seq: Sequence[int]) -> tuple[int, int]:
        """(n, start): the longest n-gram ending `seq` that occurred before, and where it
        first did; (0, -1) when none did."""
        arr = np.asarray(seq, dtype=np.int64)  # [L]
        n_seq = arr.shape[0]
        for n in range(min(self.max_ngram, n_seq - 1), self.min_ngram - 1, -1):
            # hit[s]: the n tokens from s equal the last n (s < L - n excludes the tail itself)
            hit = arr[: n_seq - n] == arr[n_seq - n]
            for j in range(1, n):
                hit &= arr[j : n_seq - n + j] == arr[n_seq - n + j]
            starts = np.flatnonzero(hit)
            if starts.size:
                return n, int(starts[0])
        return 0, -1

    def evidence(self, seq: Sequence[int]) -> int:
        """The length of the match the next draft copies after (0: none, no draft)."""
        n, start = self.match(seq)
        self._last = (self._key(seq), n, start)
        return n

    def propose(self, seq: Sequence[int], k: int, sampler: Sampler) -> tuple[list[int], np.ndarray | None]:
        last, self._last = self._last, None  # the match `evidence` just found for this sequence
        n, start = last[1:] if last is not None and last[0] == self._key(seq) else self.match(seq)
        return ([int(t) for t in seq[start + n : start + n + k]] if n else []), None

    def _key(self, seq: Sequence[int]) -> tuple[int, ...]:
        # length and tail: enough to tell the sequence `evidence` saw (a stale match could only
        # cost a rejected draft, never a wrong token: every draft is verified)
        return (len(seq), *seq[-self.max_ngram :])

    def keep(self, length: int) -> None:
        pass


class ModelDrafter:
    """Drafts with a (cheaper) variant of the same model, through its own in-place KV cache.

    Its cache always holds a prefix of the sequence: after a verification it is rolled back
    to the tokens the verifier kept, and the next `propose` first feeds what it lacks (the
    verifier's own token, and the last draft when all were kept) in one pass.
    """

    def __init__(self, name: str, decoder: Decoder) -> None:
        self.name, self.decoder = name, decoder

    def start(self, capacity: int) -> None:
        self.decoder.reserve(capacity)
        self.decoder.reset()

    def prefill(self, prompt: Sequence[int]) -> None:
        self.decoder.prefill(list(prompt))

    def evidence(self, seq: Sequence[int]) -> int:
        return 0

    def propose(self, seq: Sequence[int], k: int, sampler: Sampler) -> tuple[list[int], np.ndarray | None]:
        dec = self.decoder
        logits = dec.prefill(list(seq[dec.length :]))  # [vocab]: one pass over what the cache lacks
        drafts: list[int] = []
        qs: list[np.ndarray] = []
        greedy = sampler.params.greedy
        for i in range(k):
            if greedy:
                token = int(np.argmax(logits))
            else:
                q = sampler.probs(logits)  # [vocab]
                token = sampler.draw(q)
                qs.append(q)
            drafts.append(token)
            if i + 1 < k:
                logits = dec.step(token)
        return drafts, (np.stack(qs) if qs else None)

    def keep(self, length: int) -> None:
        self.decoder.rollback(min(self.decoder.length, length))


@dataclass
class SpecStats:
    """Counts of one generation (or one pair's lifetime)."""

    drafted: int = 0  # tokens the drafter proposed
    accepted: int = 0  # of them, kept by the verifier
    verifications: int = 0  # verifier passes over drafts


def verify(rows: np.ndarray, drafts: list[int], q: np.ndarray | None, sampler: Sampler) -> tuple[int, int]:
    """(drafts kept, the verifier's next token) from its logits `rows` [n+1, vocab] over the drafts.

    Greedy: keep while the draft is the argmax. Sampling: the rejection step that leaves the
    verifier's distribution unchanged (module docstring).
    """
    if sampler.params.greedy:
        for i, d in enumerate(drafts):
            token = int(np.argmax(rows[i]))
            if token != d:
                return i, token
        return len(drafts), int(np.argmax(rows[len(drafts)]))
    for i, d in enumerate(drafts):
        p = sampler.probs(rows[i])  # [vocab]
        qd = 1.0 if q is None else float(q[i, d])
        if sampler.rng.random() * qd < p[d]:  # accept with probability min(1, p(d)/q(d))
            continue
        if q is None:
            residual = p.copy()
            residual[d] = 0.0
        else:
            residual = np.maximum(p - q[i], 0.0)
        if residual.sum() <= 0.0:  # p == q to rounding: any draw from p is right
            residual = p
        return i, sampler.draw(residual)
    return len(drafts), sampler.draw(sampler.probs(rows[len(drafts)]))


class Speculator:
    """A drafter, its k policy and its running counts: what a pair adds to its verifier's decoder."""

    def __init__(self, drafter: Drafter, policy: KPolicy | None = None, k: AdaptiveK | None = None) -> None:
        self.drafter = drafter
        self.k = k or AdaptiveK(policy or KPolicy())  # pass the pair's own to keep what it learnt
        self.total = SpecStats()
        self.failed: str | None = None  # why the drafter failed while drafting (the pair should be fenced)

    def tokens(self, verifier: Decoder, prompt_ids: Sequence[int], sampler: Sampler, budget: int,
               stats: SpecStats | None = None) -> Iterator[int]:
        """The verifier's tokens after `prompt_ids`, at most `budget` (the caller may stop earlier).

        `verifier` must have room for len(prompt_ids) + budget tokens; it is reset.
        """
        stats = stats if stats is not None else SpecStats()
        seq = list(prompt_ids)
        capacity = len(seq) + budget
        verifier.reset()
        self.drafter.start(capacity)
        logits = verifier.prefill(seq)
        speculate = not sampler.penalized  # penalties depend on every earlier token: decode plainly
        if speculate and self.k.k > 0:  # a pair whose drafting stopped paying reads the prompt only when it probes
            speculate, _ = self._drafting(self.drafter.prefill, seq)
        token = sampler(logits)
        seq.append(token)
        yield token
        while len(seq) < capacity:
            left = capacity - len(seq)  # tokens still allowed; the verifier holds len(seq) - 1
            evidence = self.drafter.evidence(seq) if speculate else 0
            k = min(self.k.next_k(evidence), left - 1) if speculate else 0
            drafts, q = [], None
            if k > 0:
                speculate, proposed = self._drafting(self.drafter.propose, seq, k, sampler)
                drafts, q = proposed if speculate else ([], None)
            if not drafts:
                token = sampler(verifier.step(seq[-1]))
                seq.append(token)
                yield token
                continue
            base = len(seq)
            rows = verifier.extend([seq[-1], *drafts])  # [n+1, vocab]
            kept, token = verify(rows, drafts, q, sampler)
            verifier.rollback(base + kept)  # holds seq + the kept drafts
            self.drafter.keep(base + kept)
            self.k.update(len(drafts), kept, evidence)
            for s in (stats, self.total):
                s.drafted += len(drafts)
                s.accepted += kept
                s.verifications += 1
            for t in (*drafts[:kept], token):
                seq.append(t)
                yield t

    def _drafting(self, call: Callable[..., T], *args: Any) -> tuple[bool, T | None]:
        """(True, `call(*args)`) on the drafter; (False, None), the pair marked failed, when its variant fails.

        The verifier is untouched by a drafter's failure: the sequence goes on without drafts.
        """
        try:
            return True, call(*args)
        except VariantError as e:
            self.failed = str(e)
            log.error("drafter %r failed (%s): the rest of this sequence is decoded plainly", self.drafter.name, e)
            return False, None
