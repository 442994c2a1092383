"""Next-token choice: greedy, or temperature / top-k / top-p sampling with a seed.

`SamplingParams` is what a request asks for (validated once, `RequestError` naming the
field); `Sampler` turns one row of logits into a token id. With `temperature == 0` the
choice is the argmax and nothing random happens; otherwise the logits are scaled, cut to
the `top_k` most likely tokens and then to the smallest set whose probability reaches
`top_p`, and one token is drawn from the renormalized distribution with a generator
seeded by `seed` (same seed, same prompt, same variant: same text).

Presence and frequency penalties follow OpenAI's definition: the logit of every token
already generated is lowered by `presence_penalty + count * frequency_penalty`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edge_runtime.errors import RequestError

MAX_STOP_STRINGS = 4  # as OpenAI
MAX_STOP_CHARS = 256
MAX_TOP_LOGPROBS = 20  # as OpenAI


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens and when to stop; every field has a safe default.

    Raises:
        RequestError: a value is out of range (the message names the field and the range).
    """

    max_tokens: int = 128  # new tokens at most (the runtime also caps it by the context length)
    temperature: float = 0.0  # 0 = greedy; 0.7-1.0 for varied text
    top_k: int = 0  # keep the k most likely tokens; 0 = all
    top_p: float = 1.0  # nucleus: smallest set with this much probability; 1 = all
    seed: int | None = None  # >= 0 (numpy's generators refuse negative seeds); None: a fresh one
    stop: tuple[str, ...] = ()  # stop strings; the text ends before the first one found
    ignore_eos: bool = False  # keep going past end-of-sequence tokens (benchmarks)
    presence_penalty: float = 0.0  # -2..2, OpenAI semantics
    frequency_penalty: float = 0.0  # -2..2, OpenAI semantics
    logprobs: bool = False  # record each chosen token's log-probability (the raw model distribution)
    top_logprobs: int = 0  # with logprobs: also the n most likely tokens at each position (0..20)

    def __post_init__(self) -> None:
        def bad(name: str, value: object, want: str) -> RequestError:
            return RequestError(f"{name} must be {want}, got {value!r}")

        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise bad("max_tokens", self.max_tokens, "an integer >= 1")
        for name, lo, hi in (("temperature", 0.0, 2.0), ("top_p", 0.0, 1.0),
                             ("presence_penalty", -2.0, 2.0), ("frequency_penalty", -2.0, 2.0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
                raise bad(name, v, f"a number in [{lo:g}, {hi:g}]")
        if self.top_p == 0.0:
            raise bad("top_p", self.top_p, "a number in (0, 1]")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise bad("top_k", self.top_k, "an integer >= 0 (0 = off)")
        if isinstance(self.top_logprobs, bool) or not isinstance(self.top_logprobs, int) or not (
                0 <= self.top_logprobs <= MAX_TOP_LOGPROBS):
            raise bad("top_logprobs", self.top_logprobs, f"an integer in [0, {MAX_TOP_LOGPROBS}]")
        if self.top_logprobs and not self.logprobs:
            raise bad("top_logprobs", self.top_logprobs, "0 unless logprobs is true")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)
                                      or self.seed < 0):
            raise bad("seed", self.seed, "an integer >= 0 or null")
        stop = self.stop
        if isinstance(stop, str):
            stop = (stop,)
        if not isinstance(stop, (tuple, list)) or not all(isinstance(s, str) for s in stop):
            raise bad("stop", self.stop, "a string or a list of strings")
        if len(stop) > MAX_STOP_STRINGS or any(not s or len(s) > MAX_STOP_CHARS for s in stop):
            raise bad("stop", list(stop), f"at most {MAX_STOP_STRINGS} non-empty strings of <= {MAX_STOP_CHARS} characters")
        object.__setattr__(self, "stop", tuple(stop))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


class Sampler:
    """Picks the next token from logits [vocab] under `params`; one per request."""

    def __init__(self, params: SamplingParams) -> None:
        self.params = params
        self.rng = np.random.default_rng(params.seed)
        self.counts: dict[int, int] = {}  # generated token -> times, for the penalties
        self._penalize = params.presence_penalty != 0.0 or params.frequency_penalty != 0.0

    @property
    def penalized(self) -> bool:
        """Presence or frequency penalties are on (each token then depends on all earlier ones)."""
        return self._penalize

    def __call__(self, logits: np.ndarray) -> int:
        p = self.params
        if self._penalize and self.counts:
            logits = logits.astype(np.float32, copy=True)
            ids = np.fromiter(self.counts.keys(), np.int64, len(self.counts))
            n = np.fromiter(self.counts.values(), np.float32, len(self.counts))
            logits[ids] -= p.presence_penalty + n * p.frequency_penalty
        token = int(np.argmax(logits)) if p.greedy else self._sample(logits)
        if self._penalize:
            self.counts[token] = self.counts.get(token, 0) + 1
        return token

    def _sample(self, logits: np.ndarray) -> int:
        p = self.params
        x = np.asarray(logits, dtype=np.float32)
        z = np.exp((x - x.max()) * np.float32(1.0 / p.temperature))  # [V] unnormalized, max 1
        vocab = z.shape[0]
        k = p.top_k if 0 < p.top_k < vocab else 0
        if not k and p.top_p >= 1.0:
            return _draw(z, self.rng)
        total = float(z.sum())
        # Candidates: a top set {z >= t}, lowered until it surely holds the top-k or the
        # nucleus; a threshold scan is several times cheaper than partitioning the vocabulary.
        t = 1e-4
        while True:
            cand = np.flatnonzero(z >= t) if t > 1e-30 else np.arange(vocab)
            w = z[cand]
            if t <= 1e-30 or (cand.size >= k if k else float(w.sum()) >= p.top_p * total):
                break
            t *= 1e-4
        if k and cand.size > k:
            sel = np.argpartition(-w, k - 1)[:k]
            cand, w = cand[sel], w[sel]
        if p.top_p < 1.0:
            order = np.argsort(-w, kind="stable")
            cand, w = cand[order], w[order]
            mass = np.cumsum(w, dtype=np.float64)
            ref = mass[-1] if k else total  # with top-k, the nucleus is taken inside the top k
            keep = min(int(np.searchsorted(mass, p.top_p * ref)) + 1, cand.size)
            cand, w = cand[:keep], w[:keep]
        return int(cand[_draw(w, self.rng)])

    def probs(self, logits: np.ndarray) -> np.ndarray:
        """The distribution [vocab] (float64, sums to 1) that sampling draws from: temperature,
        then top-k, then top-p. Speculative sampling compares two of these (the verifier's and
        the drafter's); penalties are not applied (the speculative path refuses them).
        """
        p = self.params
        x = np.asarray(logits, dtype=np.float64)
        z = np.exp((x - x.max()) / p.temperature)  # [V]
        vocab = z.shape[0]
        k = p.top_k if 0 < p.top_k < vocab else 0
        if k:
            z[np.argpartition(-z, k - 1)[k:]] = 0.0
        if p.top_p < 1.0:
            order = np.argsort(-z, kind="stable")
            mass = np.cumsum(z[order])
            keep = min(int(np.searchsorted(mass, p.top_p * mass[-1])) + 1, vocab)
            z[order[keep:]] = 0.0
        return z / z.sum()

    def draw(self, probs: np.ndarray) -> int:
        """A token drawn from `probs` [vocab] (weights >= 0, not all 0) with this request's generator."""
        return _draw(probs, self.rng)


_BLOCK = 256


def _draw(weights: np.ndarray, rng: np.random.Generator) -> int:
    """An index drawn with probability proportional to `weights` [n] (>= 0, not all 0).

    Inverse CDF in two levels (block sums, then within one block): a cumulative sum over
    a 49k vocabulary costs ~0.4 ms in numpy, block sums a few microseconds.
    """
    n = weights.shape[0]
    if n <= 4 * _BLOCK:
        c = np.cumsum(weights, dtype=np.float64)
        return min(int(np.searchsorted(c, rng.random() * c[-1], side="right")), n - 1)
    full = n - n % _BLOCK
    sums = weights[:full].reshape(-1, _BLOCK).sum(axis=1, dtype=np.float64)  # [n // BLOCK]
    if full < n:
        sums = np.append(sums, weights[full:].sum(dtype=np.float64))
    c = np.cumsum(sums)
    u = rng.random() * c[-1]
    b = min(int(np.searchsorted(c, u, side="right")), len(sums) - 1)
    lo = b * _BLOCK
    inner = np.cumsum(weights[lo : lo + _BLOCK], dtype=np.float64)
    u -= c[b - 1] if b else 0.0
    return lo + min(int(np.searchsorted(inner, u, side="right")), inner.shape[0] - 1)


def stop_prefix_len(text: str, stops: Sequence[str]) -> int:
    """Characters at the end of `text` that could begin one of `stops` (held back while streaming)."""
    best = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:n]):
                best = n
                break
    return best


@dataclass(frozen=True)
class TokenLogprob:
    """A chosen token's log-probability under the model, and the most likely alternatives."""

    token: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()  # (token, logprob), most likely first


def token_logprob(logits: np.ndarray, token: int, top_n: int = 0) -> TokenLogprob:
    """log softmax(logits)[token] (float64), and the `top_n` most likely tokens.

    These are the raw model's probabilities, before temperature, penalties or a grammar
    mask: summed over a sequence they give its log-likelihood under the variant.
    """
    x = np.asarray(logits, dtype=np.float64)  # [V]
    m = float(x.max())
    lse = m + math.log(float(np.exp(x - m).sum()))
    top: tuple[tuple[int, float], ...] = ()
    if top_n:
        idx = np.argpartition(-x, top_n - 1)[:top_n]
        idx = idx[np.argsort(-x[idx], kind="stable")]
        top = tuple((int(i), float(x[i] - lse)) for i in idx)
    return TokenLogprob(int(token), float(x[token] - lse), top)
