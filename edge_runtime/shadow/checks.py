"""Output checks shared by the gate and the device: one implementation of each.

The evaluation harness (`harness.scoring`) scores its suite cases with these functions, and
shadow scoring (`edge_runtime.shadow.scorer`) scores live answers with them, so a format or
instruction check means the same thing in the gate and in the field. Everything here is pure
Python on strings and token ids (no model, no torch).

- `normalize`, `strip_fence`, `json_object`, `list_items`: the pieces of the harness's
  `exact`, `json` and `list` checks.
- `Constraint` and `infer_constraint`: a checkable instruction read from a live prompt
  ("Answer only yes or no.", "List three fruits, one per line", "Give a JSON object ...").
- `agreement`: how close a served answer is to the dense model's (exact, prefix, token F1).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

AGREEMENT = ("exact", "prefix", "token_f1")  # agreement dimensions, in the order reported


def normalize(text: str) -> str:
    """Case-folded, NFKC, whitespace collapsed, surrounding punctuation and quotes removed."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = " ".join(text.split())
    return text.strip(" .,;:!?\"'`*()[]«»¡¿“”‘’")


_FENCE = re.compile(r"^```[a-zA-Z]*\s*\n?(.*?)\n?```", re.S)


def strip_fence(text: str) -> str:
    """The text inside one surrounding Markdown code fence, else the text (stripped)."""
    m = _FENCE.match(text.strip())
    return m.group(1).strip() if m else text.strip()


def json_object(text: str) -> dict[str, Any] | None:
    """The JSON object the output holds (inside an optional code fence), or None if it holds none."""
    try:
        obj = json.loads(strip_fence(text))
    except json.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+(.*\S)\s*$")
_AND = r",\s*(?:and\s+|y\s+|et\s+|und\s+|na\s+)?|\s+(?:and|y|et|und|na)\s+"


def list_items(text: str, style: str) -> list[str]:
    """Items of a list answer: bulleted or numbered lines (or all lines if none is), or comma-separated."""
    if style == "comma":
        line = next((ln for ln in text.strip().splitlines() if ln.strip()), "")
        parts = re.split(_AND, line.strip().rstrip("."))
        return [p.strip() for p in parts if p.strip()]
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    marked = [m.group(1) for m in map(_BULLET.match, lines) if m]
    return marked if marked else [ln.strip() for ln in lines]


# --------------------------------------------------------------------------- constraints


@dataclass(frozen=True)
class Constraint:
    """A checkable instruction: the form the answer was asked to take.

    `kind` is a suite case type: "json" (one JSON object), "list" (`n` items in `style`) or
    "regex" (the answer matches `pattern`). json and list answers also count for the
    `format` dimension, as they do in the harness (`harness.scoring.covered`).
    """

    kind: str  # json | list | regex
    why: str  # the instruction it was read from, e.g. "yes-no"
    n: int = 0  # list: items asked for
    style: str = "lines"  # list: lines | comma
    pattern: str = ""  # regex: re.search must match

    @property
    def format(self) -> bool:
        """True when the constraint counts for the `format` dimension too."""
        return self.kind in ("json", "list")

    def check(self, text: str) -> bool:
        """Whether `text` has the asked-for form."""
        if self.kind == "json":
            return json_object(text) is not None
        if self.kind == "list":
            return len(list_items(text, self.style)) == self.n
        return re.search(self.pattern, text) is not None


_NUMBERS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve".split())}
_N = r"(\d{1,2}|" + "|".join(_NUMBERS) + r")"
_I = re.IGNORECASE

# (why, prompt regex, answer pattern): the first that matches the prompt wins; the answer
# patterns are the suite's own (harness/data/suite.jsonl) with the expected value left open.
_RULES: tuple[tuple[str, re.Pattern[str], str], ...] = (
    ("yes-no", re.compile(r"\b(answer|reply)\b[^.?!]*\byes or no\b", _I), r"(?i)^\W*(yes|no)\W*$"),
    ("letter-only", re.compile(r"\bthe letter only\b|\bwith (only )?the letter\b", _I), r"^\W*[A-Za-z]\W*$"),
    ("number-only", re.compile(r"\b(number|digits) only\b|\bonly the number\b", _I), r"^\W*-?\d[\d,.]*\W*$"),
    ("year-only", re.compile(r"\bthe year only\b", _I), r"^\W*\d{3,4}\W*$"),
    ("one-word", re.compile(r"\b(in|with) (one|a single) word\b|\bone word\b:", _I), r"^\W*[\w'-]+\W*$"),
    ("lowercase", re.compile(r"\blower ?case( letters)? only\b|\bonly lower ?case\b", _I), r"^[^A-Z]*$"),
    ("one-sentence", re.compile(r"\b(write|answer in|reply in) one sentence\b", _I), r"^[^.!?\n]+[.!?]\s*$"),
)
_LIST = re.compile(r"\b(?:list|name|give|write)\b(?:\s+(?:me|a|an|the|numbered|bulleted|list|of))*\s+"
                   + _N + r"\s+\w+", _I)
_JSON = re.compile(r"\bJSON\b")


def infer_constraint(prompt: str) -> Constraint | None:
    """The checkable instruction a live prompt carries, or None when it carries none we can check.

    Reads only the last user turn's text; conservative on purpose: a wrong inference would
    score a variant against an instruction nobody gave.
    """
    if _JSON.search(prompt):
        return Constraint("json", "json")
    m = _LIST.search(prompt)
    if m is not None and not re.search(r"\bpoem\b|\bsentences?\b|\bwords?\b", m.group(0), _I):
        raw = m.group(1).lower()
        n = int(raw) if raw.isdigit() else _NUMBERS[raw]
        if 1 <= n <= 20:
            comma = re.search(r"\bcommas?\b", prompt, _I) is not None
            return Constraint("list", "list", n=n, style="comma" if comma else "lines")
    for why, rule, pattern in _RULES:
        if rule.search(prompt):
            return Constraint("regex", why, pattern=pattern)
    return None


# --------------------------------------------------------------------------- agreement


def agreement(served: Sequence[int], dense: Sequence[int]) -> dict[str, float]:
    """How far a served answer agrees with the dense one, over token ids, each in [0, 1].

    exact: 1 if identical. prefix: tokens shared from the start / the longer answer's length.
    token_f1: F1 of the two answers' token multisets (SQuAD-style overlap, order-free).
    Two empty answers agree fully.
    """
    a, b = list(served), list(dense)
    if not a and not b:
        return {"exact": 1.0, "prefix": 1.0, "token_f1": 1.0}
    shared = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        shared += 1
    common = sum((Counter(a) & Counter(b)).values())
    f1 = 0.0 if common == 0 else 2.0 * common / (len(a) + len(b))
    return {"exact": float(a == b), "prefix": shared / max(len(a), len(b)), "token_f1": f1}
