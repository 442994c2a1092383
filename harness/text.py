"""Held-out text that installs with the project, and the token windows cut from it.

Evaluation text comes from the tutorial, FAQ and HOWTOs of the Python 3.11 documentation;
calibration (export/corpus.py) from its "What's New" pages: disjoint files, so the two never
overlap (both built by export/data/build_corpus.py). English prose under the PSF License
(data/LICENSE-PYTHON-DOCS.txt).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edge_runtime.errors import ExportError

if TYPE_CHECKING:
    from tokenizers import Tokenizer  # the `[eval]` extra; imported where a bundle is opened

DATA = Path(__file__).parent / "data"


@cache
def heldout_text() -> str:
    return (DATA / "heldout.txt").read_text(encoding="utf-8")


def token_windows(
    tokenizer: Tokenizer, text: str, n: int, length: int, what: str = "text"
) -> np.ndarray:
    """The first `n` non-overlapping windows of `length` tokens, shape [n, length] int64.

    Raises `ExportError` if the text is too short, naming how many windows it holds.
    """
    if n <= 0 or length <= 1:
        raise ExportError(f"need n >= 1 windows of length >= 2, got n={n}, length={length}")
    ids = np.asarray(tokenizer.encode(text).ids, dtype=np.int64)
    have = len(ids) // length
    if have < n:
        raise ExportError(
            f"too little {what}: {len(ids)} tokens hold {have} windows of {length}, {n} asked; "
            f"lower the number of samples or the sequence length"
        )
    return ids[: n * length].reshape(n, length)


def heldout_windows(tokenizer: Tokenizer, n: int, length: int) -> np.ndarray:
    """Evaluation windows [n, length] from the held-out prose."""
    return token_windows(tokenizer, heldout_text(), n, length, "held-out text")
