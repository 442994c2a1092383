"""The output checks the gate and shadow scoring share, and constraint inference from prompts."""

from __future__ import annotations

import pytest

from edge_runtime.shadow.checks import (
    Constraint,
    agreement,
    infer_constraint,
    json_object,
    list_items,
)
from harness.scoring import CHECKS
from harness.suite import load_suite


def test_agreement_exact_prefix_and_token_f1():
    assert agreement([1, 2, 3], [1, 2, 3]) == {"exact": 1.0, "prefix": 1.0, "token_f1": 1.0}
    a = agreement([1, 2, 9, 9], [1, 2, 3])
    assert a["exact"] == 0.0 and a["prefix"] == pytest.approx(2 / 4) and a["token_f1"] == pytest.approx(4 / 7)
    assert agreement([5, 6], [7, 8]) == {"exact": 0.0, "prefix": 0.0, "token_f1": 0.0}
    assert agreement([], [])["token_f1"] == 1.0 and agreement([], [1])["token_f1"] == 0.0


def test_json_and_list_pieces():
    assert json_object('```json\n{"a": 1}\n```') == {"a": 1}
    assert json_object("[1, 2]") is None and json_object("nope") is None
    assert list_items("- a\n- b\n- c", "lines") == ["a", "b", "c"]
    assert list_items("red, green and blue.", "comma") == ["red", "green", "blue"]


@pytest.mark.parametrize("prompt, want", [
    ("Is the sun hot? Answer only yes or no.", ("regex", "yes-no")),
    ("What is 12 plus 15? Give only the number.", ("regex", "number-only")),
    ("Which animal barks?\nA) cat\nB) dog\nAnswer with the letter only.", ("regex", "letter-only")),
    ("What is the capital of France? Answer with one word.", ("regex", "one-word")),
    ("Give a JSON object for a person named Ana.", ("json", "json")),
    ("Tell me about the weather in Lagos.", None),
    ("Write a four-line poem about rain.", None),
])
def test_infer_constraint(prompt, want):
    c = infer_constraint(prompt)
    assert (c.kind, c.why) == want if want else c is None


def test_inferred_constraints_agree_with_the_suite():
    """Where inference reads a suite prompt, it asks for the form the suite's own case checks."""
    suite = load_suite()
    seen = 0
    for case in suite.cases:
        c = infer_constraint(case.prompt) if case.type in ("list", "json") else None
        if c is None:
            continue
        seen += 1
        assert c.kind == case.type, case.id
        if case.type == "list":
            assert (c.n, c.style) == (case.n, case.style), case.id
    assert seen >= 5


def test_regex_constraints_accept_what_the_suite_accepts():
    """An answer the suite marks correct for an instruction case passes the inferred check too."""
    answers = {"yes-no": "Yes.", "number-only": " 27", "letter-only": "B", "one-word": "Paris"}
    suite = load_suite()
    checked = 0
    for case in suite.cases:
        c = infer_constraint(case.prompt)
        if c is None or c.kind != "regex" or c.why not in answers or case.type != "regex":
            continue
        text = answers[c.why]
        if CHECKS["regex"](case, text)[0]:
            assert c.check(text), case.id
            checked += 1
    assert checked >= 3


def test_constraint_check():
    assert Constraint("list", "list", n=2).check("1. a\n2. b") and not Constraint("list", "list", n=3).check("a\nb")
    assert Constraint("json", "json").check('{"x": 1}') and not Constraint("json", "json").check("x")
    assert Constraint("json", "json").format and not Constraint("regex", "yes-no", pattern="x").format
