"""Suite files: the built-in suite's shape, and one clear error (file:line) per kind of bad input."""

from __future__ import annotations

import json

import pytest

from edge_runtime.errors import EvalError
from harness.suite import CASE_TYPES, DEFAULT_SUITE, SLICES, load_suite, parse_suite

HEADER = {"suite": "edge-eval", "version": "1.0.0", "changelog": [{"version": "1.0.0", "changes": "test"}]}


def test_builtin_suite_has_300_cases_in_every_slice_and_type():
    suite = load_suite(DEFAULT_SUITE)
    assert len(suite.cases) >= 300
    stats = suite.stats()
    for s in SLICES:
        assert sum(stats[s].values()) >= 50, s
    assert {t for s in SLICES for t in stats[s]} == set(CASE_TYPES)
    assert {"fr", "es", "de", "sw"} <= set(stats["languages"])
    assert stats["tags"]["instruction"] >= 20
    assert suite.changelog[-1]["version"] == suite.version


def test_builtin_suite_answers_are_spread_over_positions():
    suite = load_suite()
    answers = {c.answer for c in suite.cases if c.type == "choice"}
    assert answers >= {0, 1, 2, 3}


def test_builtin_suite_matches_its_builder():
    """suite.jsonl is generated: a hand edit that the builder would undo is caught here."""
    import runpy

    ns = runpy.run_path(str(DEFAULT_SUITE.parent / "build_suite.py"), run_name="not_main")
    built = [json.dumps(c, ensure_ascii=False) for c in ns["CASES"]]
    lines = DEFAULT_SUITE.read_text(encoding="utf-8").splitlines()
    assert lines[1:] == built
    assert json.loads(lines[0])["version"] == ns["VERSION"]


def test_valid_suite_parses(write_suite, small_suite):
    suite = load_suite(small_suite)
    assert suite.version == "1.0.0"
    assert [c.id for c in suite.slice("common")] == ["c1", "c2", "c3"]
    c1 = suite.cases[0]
    assert c1.options == (" function", " zebra") and c1.answer == 0 and c1.chance == 0.5


CHOICE = {"id": "x1", "slice": "common", "type": "choice", "prompt": "p", "options": [" a", " b"], "answer": 0}


@pytest.mark.parametrize(
    "line, match",
    [
        ("{not json", r"suite.jsonl:2: not valid JSON"),
        (json.dumps({k: v for k, v in CHOICE.items() if k != "prompt"}), r"suite.jsonl:2: missing field 'prompt'"),
        (json.dumps({k: v for k, v in CHOICE.items() if k != "answer"}), r"suite.jsonl:2: missing field 'answer'; a 'choice' case needs"),
        (json.dumps({**CHOICE, "slice": "hard"}), r"suite.jsonl:2: unknown slice 'hard'; use one of"),
        (json.dumps({**CHOICE, "type": "bleu"}), r"suite.jsonl:2: unknown scoring type 'bleu'; use one of"),
        (json.dumps({**CHOICE, "answer": 2}), r"suite.jsonl:2: 'answer' must be an option index in \[0, 1\], got 2"),
        (json.dumps({**CHOICE, "options": [" a"]}), r"suite.jsonl:2: 'options' must hold at least 2"),
        (json.dumps({**CHOICE, "colour": 1}), r"suite.jsonl:2: unknown fields \['colour'\]"),
        (json.dumps({**CHOICE, "tags": ["vibes"]}), r"suite.jsonl:2: unknown tags \['vibes'\]"),
        (json.dumps({**CHOICE, "template": "html"}), r"suite.jsonl:2: 'template' must be one of"),
        (json.dumps({**CHOICE, "id": "Has Space"}), r"suite.jsonl:2: 'id' must be lowercase"),
        (json.dumps({"id": "r", "slice": "edge", "type": "regex", "prompt": "p", "pattern": "("}),
         r"suite.jsonl:2: 'pattern' is not a valid regular expression"),
        (json.dumps({"id": "l", "slice": "edge", "type": "list", "prompt": "p", "n": 0}), r"suite.jsonl:2: 'n' must be an int in \[1, 20\]"),
        (json.dumps({"id": "g", "slice": "edge", "type": "exact", "prompt": "p", "answer": "x", "max_new_tokens": 0}),
         r"suite.jsonl:2: 'max_new_tokens' must be an int in \[1, 256\]"),
        ("[1, 2]", r"suite.jsonl:2: a case must be a JSON object"),
    ],
)
def test_bad_case_lines_name_file_and_line(tmp_path, line, match):
    p = tmp_path / "suite.jsonl"
    p.write_text(json.dumps(HEADER) + "\n" + line + "\n", encoding="utf-8")
    with pytest.raises(EvalError, match=match):
        load_suite(p)


def test_error_names_the_right_line_after_blank_lines(tmp_path):
    p = tmp_path / "suite.jsonl"
    p.write_text("\n".join([json.dumps(HEADER), json.dumps(CHOICE), "", json.dumps({**CHOICE, "id": "x2", "slice": "nope"})]))
    with pytest.raises(EvalError, match=r"suite.jsonl:4: unknown slice 'nope'"):
        load_suite(p)


def test_duplicate_ids_name_both_lines(tmp_path):
    p = tmp_path / "suite.jsonl"
    p.write_text("\n".join([json.dumps(HEADER), json.dumps(CHOICE), json.dumps(CHOICE)]))
    with pytest.raises(EvalError, match=r"suite.jsonl:3: duplicate case id 'x1' \(first on line 2\)"):
        load_suite(p)


@pytest.mark.parametrize(
    "header, match",
    [
        ({"version": "1.0.0"}, r"x:1: the first line must be the header"),
        ({**HEADER, "version": "one"}, r"x:1: header 'version' must look like '1.0.0'"),
        ({**HEADER, "changelog": []}, r"x:1: header 'changelog' must be a non-empty list"),
        ({**HEADER, "version": "1.1.0"}, r"x:1: the last changelog entry is for '1.0.0' but the suite is '1.1.0'"),
    ],
)
def test_bad_headers(header, match):
    with pytest.raises(EvalError, match=match):
        parse_suite([json.dumps(header), json.dumps(CHOICE)], "x")


def test_empty_and_header_only_suites():
    with pytest.raises(EvalError, match="x: the suite is empty"):
        parse_suite([], "x")
    with pytest.raises(EvalError, match="x: the suite has a header but no cases"):
        parse_suite([json.dumps(HEADER)], "x")


def test_missing_suite_file(tmp_path):
    with pytest.raises(EvalError, match=r"suite file .*nope.jsonl' does not exist; pass --suite FILE"):
        load_suite(tmp_path / "nope.jsonl")
