"""Sampling: greedy, seeded temperature/top-k/top-p, penalties, validation."""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.engine.sampling import Sampler, SamplingParams, stop_prefix_len
from edge_runtime.errors import RequestError

LOGITS = np.log(np.array([0.5, 0.25, 0.15, 0.06, 0.04], np.float32))


def draws(params: SamplingParams, n: int = 400) -> np.ndarray:
    s = Sampler(params)
    return np.array([s(LOGITS) for _ in range(n)])


def test_greedy_is_argmax():
    assert set(draws(SamplingParams(temperature=0.0), 10)) == {0}


def test_seed_reproduces_and_differs():
    p = SamplingParams(temperature=1.0, seed=7)
    assert (draws(p) == draws(p)).all()
    assert not (draws(p) == draws(SamplingParams(temperature=1.0, seed=8))).all()


def test_top_k_and_top_p_cut_the_tail():
    assert set(draws(SamplingParams(temperature=1.0, top_k=2, seed=0))) == {0, 1}
    # 0.5 + 0.25 = 0.75 < 0.8: the nucleus needs the third token, not the fourth
    assert set(draws(SamplingParams(temperature=1.0, top_p=0.8, seed=0))) == {0, 1, 2}
    assert set(draws(SamplingParams(temperature=1.0, top_p=0.5, seed=0))) == {0}


def test_temperature_sharpens():
    cold = draws(SamplingParams(temperature=0.2, seed=0))
    hot = draws(SamplingParams(temperature=1.5, seed=0))
    assert (cold == 0).mean() > (hot == 0).mean()


def test_top_p_on_a_large_vocabulary_widens_the_search():
    logits = np.zeros(50_000, np.float32)  # flat: the nucleus holds 90% of 50k tokens
    s = Sampler(SamplingParams(temperature=1.0, top_p=0.9, seed=0))
    assert len({s(logits) for _ in range(200)}) > 150


def test_frequency_penalty_discourages_repeats():
    s = Sampler(SamplingParams(frequency_penalty=2.0))
    logits = np.log(np.array([0.4, 0.35, 0.25], np.float32))
    assert [s(logits) for _ in range(3)] == [0, 1, 2]


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"max_tokens": 0}, r"max_tokens must be an integer >= 1, got 0"),
        ({"max_tokens": True}, r"max_tokens must be an integer"),
        ({"temperature": -0.1}, r"temperature must be a number in \[0, 2\]"),
        ({"temperature": float("nan")}, r"temperature must be a number"),
        ({"top_p": 0.0}, r"top_p must be a number in \(0, 1\]"),
        ({"top_k": -1}, r"top_k must be an integer >= 0"),
        ({"seed": "x"}, r"seed must be an integer >= 0 or null"),
        ({"seed": -1}, r"seed must be an integer >= 0 or null, got -1"),
        ({"stop": ["a", ""]}, r"stop must be at most 4 non-empty strings"),
        ({"stop": ["a"] * 5}, r"stop must be at most 4"),
        ({"stop": [1]}, r"stop must be a string or a list of strings"),
    ],
)
def test_bad_values_name_the_field(kw, match):
    with pytest.raises(RequestError, match=match):
        SamplingParams(**kw)


def test_stop_as_a_string_and_prefix_holdback():
    assert SamplingParams(stop="END").stop == ("END",)
    assert stop_prefix_len("hello EN", ["END"]) == 2
    assert stop_prefix_len("hello E", ["END", "Ex"]) == 1
    assert stop_prefix_len("hello", ["END"]) == 0


def test_two_level_draw_matches_the_distribution():
    from edge_runtime.engine.sampling import _draw

    rng = np.random.default_rng(0)
    w = np.zeros(5000, np.float32)
    w[[3, 700, 2047, 4999]] = [1, 2, 3, 4]  # across blocks, the ragged tail included
    counts = np.bincount([_draw(w, rng) for _ in range(4000)], minlength=5000)
    assert set(np.flatnonzero(counts)) == {3, 700, 2047, 4999}
    np.testing.assert_allclose(counts[[3, 700, 2047, 4999]] / 4000, [0.1, 0.2, 0.3, 0.4], atol=0.03)


def test_top_k_then_top_p_inside_it():
    # top_k=3 keeps 0.5/0.25/0.15 (renormalized 0.555/0.278/0.167); top_p=0.8 then needs the first two
    assert set(draws(SamplingParams(temperature=1.0, top_k=3, top_p=0.8, seed=0))) == {0, 1}
