"""The evaluation suite: versioned JSON Lines cases in four slices.

A suite file starts with one header line, then one case per line:

    {"suite": "edge-eval", "version": "1.0.0", "changelog": [{"version": "1.0.0", "changes": "..."}]}
    {"id": "common-capital-fr", "slice": "common", "type": "choice", "template": "raw",
     "prompt": "The capital of France is", "options": [" Paris", " a sandwich"], "answer": 0}

Slices (`SLICES`) are what the controller reads per variant; `type` picks the scorer
(`harness.scoring.SCORERS`). Every error names the file and the line, and the whole file is
validated before anything is returned, so a bad line never yields half a suite.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_runtime.errors import EvalError

SUITE_FORMAT = "edge-eval"
DEFAULT_SUITE = Path(__file__).parent / "data" / "suite.jsonl"

SLICES: tuple[str, ...] = ("common", "edge", "adversarial", "multilingual")
CASE_TYPES: tuple[str, ...] = ("choice", "exact", "regex", "json", "list")
TEMPLATES: tuple[str, ...] = ("raw", "chat")  # raw completion text | the bundle's chat template
TAGS: tuple[str, ...] = ("instruction", "format")  # extra dimensions a case also counts for
LIST_STYLES: tuple[str, ...] = ("lines", "comma")

_VERSION = re.compile(r"^\d+\.\d+\.\d+$")
_ID = re.compile(r"^[a-z0-9][a-z0-9._-]*$")

# type -> (required keys, optional keys) beyond the common ones
_COMMON_REQUIRED = ("id", "slice", "type", "prompt")
_COMMON_OPTIONAL = ("template", "tags", "lang", "note", "max_new_tokens", "stop")
_TYPE_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "choice": (("options", "answer"), ()),
    "exact": (("answer",), ()),
    "regex": (("pattern",), ()),
    "json": ((), ("keys", "expect")),
    "list": (("n",), ("style", "contains")),
}


@dataclass(frozen=True)
class Case:
    """One evaluation case; which fields matter depends on `type`."""

    id: str
    slice: str  # one of SLICES
    type: str  # one of CASE_TYPES
    prompt: str  # context (choice) or prompt (generation)
    template: str = "raw"  # raw | chat
    tags: tuple[str, ...] = ()  # extra dimensions: instruction, format
    lang: str = "en"  # ISO 639-1 code of the prompt's language
    note: str = ""  # why the case exists (free text, not scored)
    max_new_tokens: int = 24  # generation budget (generation types only)
    stop: tuple[str, ...] = ()  # generation stops at the first of these strings
    options: tuple[str, ...] = ()  # choice: continuations, scored by log-likelihood
    answer: int | tuple[str, ...] = ()  # choice: index of the right option; exact: accepted strings
    pattern: str = ""  # regex: must match the output (re.search, case-insensitive)
    keys: tuple[str, ...] = ()  # json: keys the object must have
    expect: dict[str, Any] = field(default_factory=dict)  # json: key -> value it must equal
    n: int = 0  # list: number of items asked for
    style: str = "lines"  # list: lines (one item a line, bullets or numbers) | comma
    contains: tuple[str, ...] = ()  # list: items that must be present (case-insensitive)

    @property
    def generates(self) -> bool:
        """True for cases scored on generated text, False for log-likelihood choices."""
        return self.type != "choice"

    @property
    def chance(self) -> float:
        """Accuracy of a uniform guess (0 for generation cases)."""
        return 1.0 / len(self.options) if self.type == "choice" else 0.0


@dataclass(frozen=True)
class Suite:
    """A validated suite: header facts and the cases in file order."""

    version: str
    changelog: tuple[dict[str, str], ...]
    cases: tuple[Case, ...]
    path: str = ""

    def slice(self, name: str) -> tuple[Case, ...]:
        return tuple(c for c in self.cases if c.slice == name)

    def stats(self) -> dict[str, dict[str, int]]:
        """Cases per slice and type: {slice: {type: count}}, plus per-tag counts under 'tags'."""
        out: dict[str, dict[str, int]] = {s: dict(Counter(c.type for c in self.slice(s))) for s in SLICES}
        out["tags"] = dict(Counter(t for c in self.cases for t in c.tags))
        out["languages"] = dict(Counter(c.lang for c in self.cases))
        return out


# --------------------------------------------------------------------------- parsing


def _str_list(value: Any, key: str, where: str, allow_empty: bool = False) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value) or (not value and not allow_empty):
        raise EvalError(f"{where}: {key!r} must be a non-empty list of strings, got {value!r}")
    return tuple(value)


def _case(d: Any, where: str) -> Case:
    if not isinstance(d, dict):
        raise EvalError(f"{where}: a case must be a JSON object, got {type(d).__name__}")
    for key in _COMMON_REQUIRED:
        if key not in d:
            raise EvalError(f"{where}: missing field {key!r}; every case needs {list(_COMMON_REQUIRED)}")
    kind = d["type"]
    if kind not in CASE_TYPES:
        raise EvalError(f"{where}: unknown scoring type {kind!r}; use one of {list(CASE_TYPES)}")
    if d["slice"] not in SLICES:
        raise EvalError(f"{where}: unknown slice {d['slice']!r}; use one of {list(SLICES)}")
    required, optional = _TYPE_KEYS[kind]
    for key in required:
        if key not in d:
            raise EvalError(f"{where}: missing field {key!r}; a {kind!r} case needs {list(required)}")
    unknown = sorted(set(d) - set(_COMMON_REQUIRED) - set(_COMMON_OPTIONAL) - set(required) - set(optional))
    if unknown:
        raise EvalError(f"{where}: unknown fields {unknown} for a {kind!r} case; remove them or fix the type")
    if not isinstance(d["id"], str) or not _ID.match(d["id"]):
        raise EvalError(f"{where}: 'id' must be lowercase letters, digits, '.', '_' or '-', got {d['id']!r}")
    if not isinstance(d["prompt"], str) or not d["prompt"].strip():
        raise EvalError(f"{where}: 'prompt' must be a non-empty string, got {d['prompt']!r}")
    template = d.get("template", "raw")
    if template not in TEMPLATES:
        raise EvalError(f"{where}: 'template' must be one of {list(TEMPLATES)}, got {template!r}")
    tags = _str_list(d.get("tags", []), "tags", where, allow_empty=True)
    bad = [t for t in tags if t not in TAGS]
    if bad:
        raise EvalError(f"{where}: unknown tags {bad}; use any of {list(TAGS)}")
    lang = d.get("lang", "en")
    if not isinstance(lang, str) or not re.fullmatch(r"[a-z]{2,3}", lang):
        raise EvalError(f"{where}: 'lang' must be an ISO 639 code such as 'fr', got {lang!r}")
    budget = d.get("max_new_tokens", 24)
    if isinstance(budget, bool) or not isinstance(budget, int) or not 1 <= budget <= 256:
        raise EvalError(f"{where}: 'max_new_tokens' must be an int in [1, 256], got {budget!r}")
    kw: dict[str, Any] = dict(
        id=d["id"], slice=d["slice"], type=kind, prompt=d["prompt"], template=template, tags=tags,
        lang=lang, note=str(d.get("note", "")), max_new_tokens=budget,
        stop=_str_list(d.get("stop", []), "stop", where, allow_empty=True),
    )
    if kind == "choice":
        options = _str_list(d["options"], "options", where)
        if len(options) < 2 or len(set(options)) != len(options):
            raise EvalError(f"{where}: 'options' must hold at least 2 distinct strings, got {list(options)}")
        answer = d["answer"]
        if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(options):
            raise EvalError(f"{where}: 'answer' must be an option index in [0, {len(options) - 1}], got {answer!r}")
        kw.update(options=options, answer=answer)
    elif kind == "exact":
        kw.update(answer=_str_list(d["answer"], "answer", where))
    elif kind == "regex":
        try:
            re.compile(d["pattern"])
        except (re.error, TypeError) as e:
            raise EvalError(f"{where}: 'pattern' is not a valid regular expression ({e}): {d['pattern']!r}") from e
        kw.update(pattern=d["pattern"])
    elif kind == "json":
        expect = d.get("expect", {})
        if not isinstance(expect, dict):
            raise EvalError(f"{where}: 'expect' must be an object of key -> value, got {expect!r}")
        kw.update(keys=_str_list(d.get("keys", []), "keys", where, allow_empty=True), expect=expect)
    elif kind == "list":
        n, style = d["n"], d.get("style", "lines")
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 20:
            raise EvalError(f"{where}: 'n' must be an int in [1, 20], got {n!r}")
        if style not in LIST_STYLES:
            raise EvalError(f"{where}: 'style' must be one of {list(LIST_STYLES)}, got {style!r}")
        kw.update(n=n, style=style, contains=_str_list(d.get("contains", []), "contains", where, allow_empty=True))
    return Case(**kw)


def _header(d: Any, where: str) -> tuple[str, tuple[dict[str, str], ...]]:
    if not isinstance(d, dict) or d.get("suite") != SUITE_FORMAT:
        raise EvalError(
            f"{where}: the first line must be the header "
            f'{{"suite": "{SUITE_FORMAT}", "version": "X.Y.Z", "changelog": [...]}}, got {str(d)[:80]!r}'
        )
    version = d.get("version")
    if not isinstance(version, str) or not _VERSION.match(version):
        raise EvalError(f"{where}: header 'version' must look like '1.0.0', got {version!r}")
    log = d.get("changelog")
    if (
        not isinstance(log, list)
        or not log
        or not all(isinstance(e, dict) and isinstance(e.get("version"), str) and isinstance(e.get("changes"), str) for e in log)
    ):
        raise EvalError(f"{where}: header 'changelog' must be a non-empty list of {{'version', 'changes'}} objects")
    if log[-1]["version"] != version:
        raise EvalError(
            f"{where}: the last changelog entry is for {log[-1]['version']!r} but the suite is {version!r}; "
            "add a changelog entry when you bump the version"
        )
    return version, tuple(log)


def parse_suite(lines: list[str], name: str = "<suite>") -> Suite:
    """Validate the lines of a suite file; errors read `NAME:LINE: what was wrong`."""
    records: list[tuple[int, Any]] = []
    for no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append((no, json.loads(line)))
        except json.JSONDecodeError as e:
            raise EvalError(f"{name}:{no}: not valid JSON ({e.msg} at column {e.colno}); fix or remove the line") from e
    if not records:
        raise EvalError(f"{name}: the suite is empty; it needs a header line and at least one case")
    version, changelog = _header(records[0][1], f"{name}:{records[0][0]}")
    cases: list[Case] = []
    seen: dict[str, int] = {}
    for no, d in records[1:]:
        case = _case(d, f"{name}:{no}")
        if case.id in seen:
            raise EvalError(f"{name}:{no}: duplicate case id {case.id!r} (first on line {seen[case.id]})")
        seen[case.id] = no
        cases.append(case)
    if not cases:
        raise EvalError(f"{name}: the suite has a header but no cases")
    return Suite(version, changelog, tuple(cases), name)


def load_suite(path: str | Path = DEFAULT_SUITE) -> Suite:
    """Read and validate a suite file (JSON Lines, header first)."""
    p = Path(path)
    if not p.is_file():
        raise EvalError(f"suite file {str(p)!r} does not exist; pass --suite FILE or omit it for the built-in suite")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise EvalError(f"{str(p)}: not UTF-8 text ({e}); save the suite as UTF-8") from e
    return parse_suite(text.splitlines(), str(p))
