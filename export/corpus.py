"""Calibration text that installs with the project (see data/build_corpus.py).

The "What's New" pages of the Python 3.11 documentation: English prose under the PSF
License (data/LICENSE-PYTHON-DOCS.txt), disjoint from the held-out text the harness
evaluates on (harness/text.py).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from harness.text import token_windows

DATA = Path(__file__).parent / "data"


@cache
def calibration_text() -> str:
    return (DATA / "calibration.txt").read_text(encoding="utf-8")


def calibration_windows(tokenizer: Tokenizer, n: int, length: int) -> np.ndarray:
    """Calibration batches [n, length] from the calibration prose."""
    return token_windows(tokenizer, calibration_text(), n, length, "calibration text")
