"""One sequence: prefill, then token-by-token decode with stop strings, EOS and a token budget.

`Generation` drives a `session.Decoder` (the KV cache stays in place between steps) and a
`sampling.Sampler`, and yields text deltas as they become final: text that could still
turn out to be the start of a stop string is held back until it cannot, so a streamed
response never shows a stop string or a broken character. After the iteration,
`finish_reason` is "stop" (EOS or a stop string), "length" (the token budget) or
"cancelled", and `timings` holds the prefill and decode measurements.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields

import numpy as np

from edge_runtime.engine.grammar import Constraint
from edge_runtime.engine.sampling import (
    Sampler,
    SamplingParams,
    TokenLogprob,
    stop_prefix_len,
    token_logprob,
)
from edge_runtime.engine.session import Decoder
from edge_runtime.engine.speculative import SpecStats, Speculator
from edge_runtime.engine.tokenizer import Tokenizer

FINISH_REASONS = ("stop", "length", "cancelled")


@dataclass
class Timings:
    """Where one request's time went (seconds) and its token counts."""

    queue_s: float = 0.0  # submitted -> picked up by the worker
    decide_s: float = 0.0  # signals + observation + policy
    load_s: float = 0.0  # loading a cold variant (0 when it was already loaded)
    prefill_s: float = 0.0  # the prompt's forward passes, first token sampled
    decode_s: float = 0.0  # the decode steps after the first token
    total_s: float = 0.0  # submitted -> finished
    prompt_tokens: int = 0
    completion_tokens: int = 0  # tokens sampled, an end-of-sequence token included
    decode_steps: int = 0  # tokens after the first (each one forward pass, unless speculative)
    drafted_tokens: int = 0  # speculative decoding: tokens the drafter proposed
    accepted_tokens: int = 0  # of them, kept by the verifier
    energy_j: float | None = None  # measured joules from pickup to finish (None: the board reports no power)

    @property
    def prefill_tokens_per_s(self) -> float:
        return self.prompt_tokens / self.prefill_s if self.prefill_s > 0 else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        return self.decode_steps / self.decode_s if self.decode_s > 0 else 0.0

    @property
    def decode_ms_per_token(self) -> float:
        return 1000.0 * self.decode_s / self.decode_steps if self.decode_steps else 0.0

    def to_dict(self) -> dict[str, float]:
        d: dict[str, float] = {f.name: getattr(self, f.name) for f in fields(self)}
        d["prefill_tokens_per_s"] = self.prefill_tokens_per_s
        d["decode_tokens_per_s"] = self.decode_tokens_per_s
        d["decode_ms_per_token"] = self.decode_ms_per_token
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in d.items()}


class Generation:
    """Generate from `prompt_ids` on `decoder`; iterate for text deltas.

    Args:
        decoder: a decoder with room for len(prompt_ids) + params.max_tokens (it is reset).
        tokenizer: turns tokens into text.
        prompt_ids: the prompt.
        params: sampling and stopping.
        timings: filled in as the generation runs (a new one by default).
        cancelled: polled once per token; True ends the generation ("cancelled").
        eos_ids: tokens that end the sequence (default: the tokenizer's).
        constraint: a grammar the output must follow (`grammar.Constraint`): its mask is applied
            to the logits before sampling; the generation ends ("stop") when the grammar is complete.
        speculator: draft tokens for `decoder` to verify (a pair); None decodes plainly. A request
            with a constraint or logprobs decodes plainly on the pair's verifier (the output is the
            verifier's either way; drafts would need the mask and the logits at every position).
    """

    def __init__(self, decoder: Decoder, tokenizer: Tokenizer, prompt_ids: Sequence[int], params: SamplingParams,
                 timings: Timings | None = None, cancelled: Callable[[], bool] | None = None,
                 eos_ids: frozenset[int] | None = None, constraint: Constraint | None = None,
                 speculator: Speculator | None = None) -> None:
        self.decoder = decoder
        self.tokenizer = tokenizer
        self.prompt_ids = list(prompt_ids)
        self.params = params
        self.timings = timings or Timings()
        self.cancelled = cancelled or (lambda: False)
        self.eos_ids = frozenset() if params.ignore_eos and constraint is None else (
            tokenizer.eos_token_ids if eos_ids is None else eos_ids)
        self.constraint = constraint
        self.speculator = speculator if constraint is None and not params.logprobs else None
        self.spec = SpecStats()  # drafted / accepted tokens of this generation
        self.token_ids: list[int] = []
        self.logprobs: list[TokenLogprob] = []  # one per returned token (not the final EOS), when asked
        self._logprobs_taken = 0
        self.text = ""  # the final text (grows while iterating)
        self.finish_reason: str | None = None

    def _tokens(self, sampler: Sampler) -> Iterator[tuple[int, np.ndarray | None]]:
        """The model's tokens with the logits they were drawn from (None when a pair drafted them),
        one at a time; the caller stops taking them when the text ends and advances the grammar."""
        if self.speculator is not None:
            for token in self.speculator.tokens(self.decoder, self.prompt_ids, sampler, self.params.max_tokens,
                                                self.spec):
                yield token, None
            return
        dec, grammar = self.decoder, self.constraint
        dec.reset()
        if grammar is not None:
            grammar.reset()
        logits: np.ndarray = dec.prefill(self.prompt_ids)
        while True:
            token = sampler(logits if grammar is None else grammar.apply(logits))
            yield token, logits
            logits = dec.step(token)

    def __iter__(self) -> Iterator[str]:
        p, t = self.params, self.timings
        t.prompt_tokens = len(self.prompt_ids)
        sampler = Sampler(p)
        detok = self.tokenizer.stream_decoder(self.prompt_ids)
        stops = p.stop
        grammar = self.constraint
        pending = ""  # decoded but not yet released (could start a stop string)
        t0 = time.perf_counter()
        first, matched = True, False  # matched: a stop string ended the text
        tokens = self._tokens(sampler)
        for token, logits in tokens:
            self.token_ids.append(token)
            if first:
                t.prefill_s = time.perf_counter() - t0
                t0, first = time.perf_counter(), False
            else:
                t.decode_steps += 1
            t.completion_tokens += 1
            if token in self.eos_ids:
                self.finish_reason = "stop"
                break
            if p.logprobs and logits is not None:
                self.logprobs.append(token_logprob(logits, token, p.top_logprobs))
            if grammar is not None:
                grammar.advance(token)
            pending += detok.push(token)
            if stops:
                cut = _find_stop(pending, stops)
                if cut is not None:
                    pending, matched = pending[:cut], True
                    self.finish_reason = "stop"
                    break
                hold = stop_prefix_len(pending, stops)
                if len(pending) > hold:
                    out, pending = pending[: len(pending) - hold], pending[len(pending) - hold :]
                    self.text += out
                    yield out
            elif pending:
                self.text += pending
                yield pending
                pending = ""
            if grammar is not None and grammar.done:
                self.finish_reason = "stop"  # the grammar admits nothing more: the output is complete
                break
            if t.completion_tokens >= p.max_tokens:
                self.finish_reason = "length"
                break
            if self.cancelled():
                self.finish_reason = "cancelled"
                break
        tokens.close()
        t.drafted_tokens, t.accepted_tokens = self.spec.drafted, self.spec.accepted
        if not first:
            t.decode_s = time.perf_counter() - t0
        if not matched:
            pending += detok.flush()  # an incomplete character at the very end
            cut = _find_stop(pending, stops) if stops else None
            if cut is not None:
                pending, self.finish_reason = pending[:cut], "stop"
        if pending:
            self.text += pending
            yield pending

    def take_logprobs(self) -> list[TokenLogprob]:
        """The logprobs recorded since the last call (for streaming them beside the text)."""
        new = self.logprobs[self._logprobs_taken :]
        self._logprobs_taken = len(self.logprobs)
        return new

    def run(self) -> str:
        """Generate to the end; the text."""
        for _ in self:
            pass
        return self.text


def _find_stop(text: str, stops: Sequence[str]) -> int | None:
    """Index of the earliest stop string in `text`, or None.

    Searching only the unreleased text is enough: text that could begin a stop string is
    never released (`stop_prefix_len`), so a stop string always starts inside it.
    """
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None
