"""Generation: stop strings held back while streaming, EOS, token budget, cancellation, timings."""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.bundle import read_manifest
from edge_runtime.engine.generate import Generation
from edge_runtime.engine.sampling import SamplingParams
from edge_runtime.engine.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tok(tiny_bundle):
    return Tokenizer.from_bundle(tiny_bundle, read_manifest(tiny_bundle))


class ScriptedDecoder:
    """Stands in for session.Decoder: its logits make greedy sampling produce `script`."""

    def __init__(self, script: list[int], vocab: int) -> None:
        self.script, self.vocab, self.i = script, vocab, 0
        self.fed: list[int] = []

    def reset(self) -> None:
        self.i = 0

    def _next(self) -> np.ndarray:
        row = np.zeros(self.vocab, np.float32)
        row[self.script[min(self.i, len(self.script) - 1)]] = 1.0
        self.i += 1
        return row

    def prefill(self, ids):
        return self._next()

    def step(self, token: int):
        self.fed.append(token)
        return self._next()


def run(tok, text, eos=False, **params):
    script = tok.encode(text, add_special_tokens=False) + ([tok.token_id("<|im_end|>")] if eos else [])
    dec = ScriptedDecoder(script, tok.vocab_size)
    gen = Generation(dec, tok, [1, 2, 3], SamplingParams(**{"max_tokens": 200, **params}))
    deltas = list(gen)
    assert "".join(deltas) == gen.text
    return gen, deltas


def test_stop_string_is_cut_and_never_streamed(tok):
    gen, deltas = run(tok, "Hello there, END now", stop=["END"])
    assert gen.text == "Hello there, " and gen.finish_reason == "stop"
    assert not any(c in "".join(deltas) for c in "END")


def test_partial_stop_match_is_released(tok):
    gen, _ = run(tok, "Hello ENx and more", eos=True, stop=["END"])
    assert gen.text == "Hello ENx and more" and gen.finish_reason == "stop"


def test_earliest_of_several_stops(tok):
    gen, _ = run(tok, "one two three", stop=["three", "two"])
    assert gen.text == "one "


def test_eos_ends_and_is_not_text(tok):
    gen, _ = run(tok, "short", eos=True)
    assert gen.text == "short" and gen.finish_reason == "stop"
    assert gen.timings.completion_tokens == len(tok.encode("short", add_special_tokens=False)) + 1


def test_ignore_eos_and_max_tokens(tok):
    gen, _ = run(tok, "ab", eos=True, ignore_eos=True, max_tokens=6)
    assert gen.finish_reason == "length" and gen.timings.completion_tokens == 6
    assert gen.timings.decode_steps == 5  # the last token is never fed back


def test_multibyte_text_streams_whole_characters(tok):
    gen, deltas = run(tok, "日本語", eos=True)
    assert gen.text == "日本語" and all("\ufffd" not in d for d in deltas)


def test_cancelled_stops_after_the_current_token(tok):
    calls = []
    dec = ScriptedDecoder(tok.encode("abcdefgh", add_special_tokens=False), tok.vocab_size)
    gen = Generation(dec, tok, [1], SamplingParams(max_tokens=50), cancelled=lambda: len(calls) > 2)
    for d in gen:
        calls.append(d)
    assert gen.finish_reason == "cancelled" and len(gen.token_ids) == 3


def test_timings_on_a_real_decoder(runtime):
    loaded, _ = runtime.pool.get(0, 64)
    gen = Generation(loaded.decoder, runtime.tokenizer, [5, 6, 7, 8], SamplingParams(max_tokens=10, ignore_eos=True))
    gen.run()
    t = gen.timings
    assert t.prompt_tokens == 4 and t.completion_tokens == 10 and t.decode_steps == 9
    assert t.prefill_s > 0 and t.decode_s > 0 and t.decode_tokens_per_s > 0
    assert set(t.to_dict()) >= {"queue_s", "prefill_s", "decode_tokens_per_s", "decode_ms_per_token"}
