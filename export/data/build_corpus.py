"""Rebuild the calibration prose shipped in this folder and the held-out prose in harness/data/.

Source: the reStructuredText sources of the Python 3.11 documentation as packaged by
Debian (`apt-get download python3.11-doc`, version 3.11.2-6+deb12u8), under
`/usr/share/doc/python3.11/html/_sources/`. The documentation is licensed under the
PSF License Version 2 (see LICENSE-PYTHON-DOCS.txt beside this file).

- `harness/data/heldout.txt`: the tutorial, FAQ and HOWTO sections (evaluation only).
- `calibration.txt`: the "What's New" section (calibration only).

The two come from disjoint files, so calibration and evaluation never overlap. Code
blocks, directives, tables and reST markup are dropped so that what remains is English
prose. Run: `python export/data/build_corpus.py /path/to/_sources`.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

HELDOUT_DIRS = ("tutorial", "faq", "howto")
CALIBRATION_DIRS = ("whatsnew",)

_ROLE = re.compile(r":[a-zA-Z:]+:`~?!?([^`<]*?)(?:\s*<[^>]*>)?`")
_LINK = re.compile(r"`([^`<]+?)\s*<[^>]*>`_+")
_LITERAL = re.compile(r"``([^`]*)``")
_EMPH = re.compile(r"\*\*?([^*]+)\*\*?")
_REF = re.compile(r"`([^`]+)`_*")


def _prose_lines(text: str) -> list[str]:
    """Paragraphs of prose from one reST file, code and directives removed."""
    out: list[str] = []
    skip_indent: int | None = None  # inside a literal block or directive body
    for raw in text.splitlines():
        line = raw.rstrip()
        indent = len(line) - len(line.lstrip())
        if skip_indent is not None:
            if line and indent <= skip_indent:
                skip_indent = None
            else:
                continue
        stripped = line.strip()
        if stripped.startswith(".."):
            skip_indent = indent
            continue
        if stripped.startswith((">>>", "...", "$ ", "+--", "+==", "|")):
            continue
        if stripped and set(stripped) <= set("=-~^*#+`:'\"._"):
            out.append("")  # section underline
            continue
        if stripped.endswith("::"):
            skip_indent = indent
            stripped = stripped[:-2].rstrip()
            if stripped.endswith(":") or not stripped:
                stripped = stripped.rstrip(":")
            else:
                stripped += ":"
        for pattern in (_ROLE, _LINK, _LITERAL, _EMPH, _REF):
            stripped = pattern.sub(r"\1", stripped)
        out.append(stripped)
    return out


def _paragraphs(lines: list[str]) -> list[str]:
    paras, cur = [], []
    for line in lines + [""]:
        if line:
            cur.append(line.lstrip("*-#0123456789. ") if not cur else line)
        elif cur:
            para = " ".join(cur)
            if len(para.split()) >= 8:  # drop headings and fragments
                paras.append(para)
            cur = []
    return paras


def build(sources: Path, dirs: tuple[str, ...]) -> str:
    paras: list[str] = []
    for d in dirs:
        for path in sorted((sources / d).rglob("*.rst.txt")):
            paras.extend(_paragraphs(_prose_lines(path.read_text(encoding="utf-8"))))
    return "\n\n".join(paras) + "\n"


def main() -> None:
    sources = Path(sys.argv[1])
    here = Path(__file__).parent
    (here.parents[1] / "harness" / "data" / "heldout.txt").write_text(build(sources, HELDOUT_DIRS), encoding="utf-8")
    (here / "calibration.txt").write_text(build(sources, CALIBRATION_DIRS), encoding="utf-8")


if __name__ == "__main__":
    main()
