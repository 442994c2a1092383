"""Each scoring type on a fake model whose answers the test controls."""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.errors import EvalError
from export.load import TINY_CHAT_TEMPLATE
from harness.scoring import (
    CHECKS,
    PromptFormat,
    choice_accuracy,
    list_items,
    normalize,
    option_loglikelihoods,
    perplexity,
    score_case,
    summarize,
)
from harness.suite import Case

RAW = PromptFormat(None)
CHAT = PromptFormat(TINY_CHAT_TEMPLATE)


def case(**kw) -> Case:
    base = dict(id="t", slice="common", type="choice", prompt="The name of the")
    return Case(**{**base, **kw})


# --------------------------------------------------------------------------- choice


@pytest.mark.parametrize("preferred, expect", [(0, True), (1, False), (2, False)])
def test_choice_picks_the_option_the_model_prefers(tok, fake, preferred, expect):
    options = (" function", " zebra", " module")
    c = case(options=options, answer=0)
    model = fake([(c.prompt, options[preferred])], end=False)
    r = score_case(model, tok, RAW, c)
    assert r.correct is expect
    assert r.output == options[preferred]
    assert r.detail["correct_sum"] is expect
    assert r.format_ok is None
    assert model.calls == 1  # all options in one right-padded batch


def test_choice_loglikelihood_is_the_sum_over_option_tokens(tok, fake):
    c = case(options=(" function", " zebra"), answer=0)
    model = fake([(c.prompt, " function")], end=False)
    (s0, n0), (s1, n1) = option_loglikelihoods(model, tok, c.prompt, c.options)
    assert n0 == len(tok.encode(" function").ids)
    # the preferred option's tokens get ~all the mass; the other's first token gets exp(-20) of it
    assert s0 > -0.01 * n0
    assert s1 < s0 - 19


def test_choice_trailing_space_moves_onto_the_option(tok, fake):
    """'Answer: ' + 'Paris' must score like 'Answer:' + ' Paris' (lm-eval's convention)."""
    c1 = case(prompt="The name of the ", options=("function", "zebra"), answer=0)
    model = fake([("The name of the", " function")], end=False)
    assert score_case(model, tok, RAW, c1).correct


def test_length_normalized_metric_can_disagree(tok):
    """Sum prefers the short option; per-character normalization prefers the long one."""

    class Flat:
        def logits(self, ids):
            return np.zeros((*ids.shape, tok.get_vocab_size()), dtype=np.float32)

        def generate(self, *a):
            return iter(())

    c = case(options=(" a", " interpreter interpreter"), answer=1)
    r_sum = score_case(Flat(), tok, RAW, c, metric="sum")
    r_norm = score_case(Flat(), tok, RAW, c, metric="norm")
    n_short, n_long = len(tok.encode(" a").ids), len(tok.encode(" interpreter interpreter").ids)
    assert n_long > n_short
    assert r_sum.correct is False  # more tokens, more negative log-prob
    # flat logits: every token costs log V, so norm compares tokens per character
    assert r_norm.detail["correct_sum"] is False
    assert r_norm.detail["correct_norm"] is (n_long / 24 < n_short / 2) is True
    assert r_norm.correct == r_norm.detail["correct_norm"]


def test_chat_template_is_rendered_for_chat_cases(tok, fake):
    c = case(prompt="Pick one.", template="chat", options=("yes", "no"), answer=1)
    rendered = "<|im_start|>user\nPick one.<|im_end|>\n<|im_start|>assistant\n"
    assert CHAT.render(c) == rendered
    assert score_case(fake([(rendered, "no")], end=False), tok, CHAT, c).correct


def test_missing_chat_template_falls_back_to_raw(tok):
    c = case(prompt="Pick one.", template="chat", options=("a", "b"), answer=0)
    assert RAW.render(c) == "Pick one.\n"


def test_bad_chat_template_is_an_eval_error():
    with pytest.raises(EvalError, match="chat template is not valid jinja2"):
        PromptFormat("{% for x in %}").render(case(template="chat", options=("a", "b"), answer=0))


# --------------------------------------------------------------------------- generation


@pytest.mark.parametrize(
    "kind, fields, output, correct, fmt",
    [
        ("exact", {"answer": ("Paris",)}, "Paris.", True, None),
        ("exact", {"answer": ("Paris",)}, "The capital is Paris.", False, None),
        ("exact", {"answer": ("Paris",), "tags": ("format",)}, "paris", True, True),
        ("regex", {"pattern": r"(?i)\bparis\b"}, "It is Paris, of course", True, None),
        ("regex", {"pattern": r"^\W*4\W*$"}, "4 legs", False, None),
        ("json", {"keys": ("name", "age"), "expect": {"name": "Ana", "age": 30}}, '{"name": "ana", "age": 30}', True, True),
        ("json", {"keys": ("name",), "expect": {}}, '```json\n{"name": "x"}\n```', True, True),
        ("json", {"keys": ("name", "age")}, '{"name": "Ana"}', False, True),
        ("json", {"keys": ("name",), "expect": {"name": "Ana"}}, '{"name": "Bo"}', False, True),
        ("json", {"keys": ()}, "[1, 2]", False, False),
        ("json", {"keys": ()}, '{"name": ', False, False),
        ("list", {"n": 3}, "1. apple\n2. pear\n3. plum", True, True),
        ("list", {"n": 3}, "Here you go:\n- apple\n- pear\n- plum", True, True),
        ("list", {"n": 3}, "apple\npear", False, False),
        ("list", {"n": 3, "contains": ("plum",)}, "apple\npear\nfig", False, True),
        ("list", {"n": 3, "style": "comma"}, "red, green and blue.", True, True),
        ("list", {"n": 2, "style": "comma"}, "red, green, blue", False, False),
    ],
)
def test_generation_checks(tok, fake, kind, fields, output, correct, fmt):
    c = case(type=kind, prompt="Q?", template="chat", max_new_tokens=40, **fields)
    model = fake([(CHAT.render(c), output)])
    stop = {tok.token_to_id("<|im_end|>")}
    r = score_case(model, tok, CHAT, c, stop_ids=stop)
    assert r.output == output
    assert (r.correct, r.format_ok) == (correct, fmt)


def test_generation_stops_at_stop_strings_and_budget(tok, fake):
    c = case(type="exact", prompt="The name of the", answer=("function",), stop=(".", "\n"), max_new_tokens=40)
    model = fake([("The name of the", " function. And more text")])
    assert score_case(model, tok, RAW, c).output == " function"
    short = case(type="regex", prompt="The name of the", pattern="x", max_new_tokens=2)
    out = score_case(model, tok, RAW, short).output
    assert len(tok.encode(out).ids) <= 2


def test_every_generation_type_has_a_check():
    assert set(CHECKS) == {"exact", "regex", "json", "list"}


def test_normalize_and_list_items():
    assert normalize("  «Paris»!  ") == "paris"
    assert normalize("Straße") == normalize("STRASSE")
    assert list_items("1) a\n2) b", "lines") == ["a", "b"]
    assert list_items("rouge, vert et bleu", "comma") == ["rouge", "vert", "bleu"]
    assert list_items("nyekundu, kijani na bluu", "comma") == ["nyekundu", "kijani", "bluu"]


# --------------------------------------------------------------------------- aggregation and perplexity


def test_summarize_slices_format_and_instruction(tok, fake):
    from harness.scoring import CaseResult

    rs = [
        CaseResult("a", "common", "choice", (), True, None, ""),
        CaseResult("b", "common", "list", ("instruction",), False, True, ""),
        CaseResult("c", "edge", "json", (), True, True, ""),
        CaseResult("d", "edge", "regex", ("instruction",), True, None, ""),
    ]
    s = summarize(rs)
    assert s == {"common": 0.5, "edge": 1.0, "format": 1.0, "instruction": 0.5}
    assert "adversarial" not in s  # no cases: left out, not 0


def test_choice_accuracy_reports_both_metrics(tok, fake):
    c = case(options=(" function", " zebra"), answer=0)
    r = score_case(fake([(c.prompt, " function")], end=False), tok, RAW, c)
    assert choice_accuracy([r]) == {"common": {"sum": 1.0, "norm": 1.0, "n": 1}}


def test_perplexity_of_a_perfect_and_a_flat_model(tok):
    windows = np.arange(20, dtype=np.int64).reshape(2, 10)

    class Perfect:
        def logits(self, ids):
            out = np.full((*ids.shape, 32), -50.0, dtype=np.float32)
            for b in range(ids.shape[0]):
                for i in range(ids.shape[1] - 1):
                    out[b, i, ids[b, i + 1]] = 50.0
            return out

    class Flat:
        def logits(self, ids):
            return np.zeros((*ids.shape, 32), dtype=np.float32)

    assert perplexity(Perfect(), windows) == pytest.approx(1.0)
    assert perplexity(Flat(), windows) == pytest.approx(32.0)
    with pytest.raises(EvalError, match=r"windows shaped \[N, L >= 2\]"):
        perplexity(Flat(), np.zeros((3,), dtype=np.int64))
