"""Regression cases from real traffic: opt-in, local, bounded, redacted, written atomically.

`Capture` keeps one file, `DIR/captured.jsonl`, in the evaluation suite's JSON Lines format
(`harness.suite`: a header line, then one case a line), so

    edge-eval --bundle B --suite DIR/captured.jsonl

re-gates a bundle on what users actually asked, with no edits. Privacy: capture is off
unless the operator names a directory; nothing is sent anywhere; the operator's redaction
patterns (`load_redactions`) replace their matches with `[REDACTED]` in every text field
before a byte is written; the file holds at most `max_bytes` and no case older than
`max_age_s` (the oldest leave first). Each write goes to a temporary file in the same
directory that replaces the old one (`os.replace`), so a crash or a full disk never
leaves a half-written file. A directory that cannot be written, or a write that fails,
turns capture off with one warning; serving is never affected.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_runtime.errors import ShadowError

log = logging.getLogger(__name__)

FILE = "captured.jsonl"
SUITE_FORMAT = "edge-eval"  # harness.suite.SUITE_FORMAT (edge_runtime may not import the harness)
REDACTED = "[REDACTED]"
_ID_TIME = re.compile(r"^cap-(\d+)-")


def load_redactions(path: str | os.PathLike[str]) -> tuple[re.Pattern[str], ...]:
    """Compile the operator's redaction patterns: one regular expression a line; blank and # lines skipped.

    Raises:
        ShadowError: the file cannot be read, or a pattern does not compile (named, with its line).
    """
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ShadowError(f"redaction patterns {str(p)!r} cannot be read ({e}); give a UTF-8 file of regular "
                          "expressions, one a line") from e
    out = []
    for no, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            out.append(re.compile(line))
        except re.error as e:
            raise ShadowError(f"{p}:{no}: redaction pattern {line!r} does not compile ({e}); fix or remove it") \
                from e
    return tuple(out)


def redact(text: str, patterns: tuple[re.Pattern[str], ...]) -> str:
    """`text` with every match of every pattern replaced by `[REDACTED]`."""
    for pat in patterns:
        text = pat.sub(REDACTED, text)
    return text


class Capture:
    """The capture file of one runtime; `add` a case, it is redacted, bounded and written.

    Args:
        directory: where `captured.jsonl` lives (created if missing).
        max_bytes, max_age_s: bounds on the file (see `ShadowConfig`).
        redactions: compiled patterns applied before writing.
        clock: wall-clock seconds (tests move time).
    """

    def __init__(self, directory: str | os.PathLike[str], max_bytes: int, max_age_s: float,
                 redactions: tuple[re.Pattern[str], ...] = (), clock: Callable[[], float] = time.time) -> None:
        self.path = Path(directory) / FILE
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.redactions = redactions
        self.clock = clock
        self.active = True
        self.written = 0  # cases written by this runtime
        self._lines: list[str] = []  # the cases in the file, oldest first
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            probe = self.path.parent / f".{FILE}.{os.getpid()}.probe"
            probe.write_text("")
            probe.unlink()
        except OSError as e:
            self._stop(f"capture directory {str(self.path.parent)!r} is not writable ({e})")
            return
        if self.path.is_file():
            self._lines = self._read_existing()

    def _stop(self, why: str) -> None:
        self.active = False
        log.warning("shadow: %s; capture is off, serving continues", why)

    def _read_existing(self) -> list[str]:
        """Cases a previous run captured (kept, within the bounds); a foreign file turns capture off."""
        lines = [ln for ln in self.path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        try:
            header = json.loads(lines[0]) if lines else {}
            ok = header.get("suite") == SUITE_FORMAT and all(_ID_TIME.match(json.loads(ln)["id"]) for ln in lines[1:])
        except (ValueError, KeyError, TypeError, AttributeError):
            ok = False
        if not ok:
            self._stop(f"{str(self.path)!r} exists and is not a capture file; move it away to capture")
            return []
        return lines[1:]

    def add(self, case: dict[str, Any]) -> bool:
        """Redact `case`'s text, append it, drop what is too old or too much, write; False if not written."""
        if not self.active:
            return False
        case = dict(case)
        for key in ("prompt", "note"):
            if isinstance(case.get(key), str):
                case[key] = redact(case[key], self.redactions)
        if isinstance(case.get("answer"), list):
            case["answer"] = [redact(a, self.redactions) for a in case["answer"]]
        now = self.clock()
        case["id"] = f"cap-{int(now)}-{self.written:06d}-{os.getpid()}"
        lines = [ln for ln in self._lines if now - _stamp(ln) <= self.max_age_s]
        lines.append(json.dumps(case, ensure_ascii=False))
        header = self._header(now)
        while lines and len(header) + sum(len(ln.encode("utf-8")) + 1 for ln in lines) > self.max_bytes:
            lines.pop(0)
        if not lines:
            log.info("shadow: a captured case is larger than capture_max_bytes (%d); not kept", self.max_bytes)
            return False
        try:
            self._write(header, lines)
        except OSError as e:
            self._stop(f"writing {str(self.path)!r} failed ({e})")
            return False
        self._lines = lines
        self.written += 1
        return True

    def _header(self, now: float) -> bytes:
        day = time.strftime("%Y-%m-%d", time.gmtime(now))
        return (json.dumps({"suite": SUITE_FORMAT, "version": "1.0.0", "changelog": [
            {"version": "1.0.0", "changes": f"regression cases captured on the device by shadow scoring ({day})"}]})
            + "\n").encode("utf-8")

    def _write(self, header: bytes, lines: list[str]) -> None:
        tmp = self.path.with_name(f".{FILE}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(header)
                f.write("".join(ln + "\n" for ln in lines).encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise


def _stamp(line: str) -> float:
    """When a captured line was written (from its id)."""
    m = _ID_TIME.match(json.loads(line)["id"])
    return float(m.group(1)) if m else 0.0
