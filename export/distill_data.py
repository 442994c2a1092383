"""Recovery training data: the dense parent's own chat answers plus calibration prose, and
the parent's outputs on them, cached once for every variant that recovers.

    prompts = load_prompts()                       # export/data/recovery_prompts.jsonl
    chats = chat_rows(dense_generate, tok, template, prompts, max_new_tokens=160)
    rows = chats + prose_rows(tok, n=40, length=256)
    cache = TeacherCache.build(rows, teacher_logits, top_k=32)

A row is one training sequence and the positions whose next token carries loss: the
assistant tokens (and the end-of-turn token) of a chat row, every position of a prose row.
The teacher's logits are kept only at those positions, as their top-k (values fp16,
indices int32): 6 bytes x k per loss token instead of 4 x 49,152.

The data never touches the evaluation: prose comes from the calibration text, prompts
from a set written for this project that `near_copies` checks against the suite.
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from edge_runtime.errors import RecoveryError

log = logging.getLogger(__name__)

DATA = Path(__file__).parent / "data"
DEFAULT_PROMPTS = DATA / "recovery_prompts.jsonl"

# Near-copy rule: a training prompt is a near copy of a suite prompt when, after normalization,
# it has the same words, contains the suite prompt's words (4 or more) in a row, or holds at
# least this share of the suite prompt's word trigrams (suite prompts of 5 words or more).
NGRAM = 3
NEAR_COPY_SHARE = 0.5


# --------------------------------------------------------------------------- text files


def read_text(path: str | Path, what: str) -> str:
    """A UTF-8 text file that is not empty, or one clear RecoveryError."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError as e:
        raise RecoveryError(f"recovery {what} {str(path)!r} does not exist") from e
    except UnicodeDecodeError as e:
        raise RecoveryError(f"recovery {what} {str(path)!r} is not UTF-8 (byte {e.start}); re-save it as UTF-8") from e
    if not text.strip():
        raise RecoveryError(f"recovery {what} {str(path)!r} is empty; it needs text to train on")
    return text


def load_prompts(path: str | Path = DEFAULT_PROMPTS) -> list[str]:
    """The prompts of a JSON Lines prompt set (a header line without `prompt` is skipped)."""
    prompts = []
    for i, line in enumerate(read_text(path, "prompt file").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise RecoveryError(f"recovery prompt file {str(path)!r} line {i}: not JSON ({e.msg})") from e
        if isinstance(row, dict) and isinstance(row.get("prompt"), str):
            prompts.append(row["prompt"])
    if not prompts:
        raise RecoveryError(f"recovery prompt file {str(path)!r} has no {{\"prompt\": ...}} rows")
    return prompts


# --------------------------------------------------------------------------- overlap with the suite


def normalize(text: str) -> list[str]:
    """Lower-case words without punctuation or accents' compatibility forms."""
    text = unicodedata.normalize("NFKC", text).lower()
    return re.sub(r"[^\w\s]", " ", text).split()


def _grams(words: Sequence[str], n: int = NGRAM) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def near_copies(data: Iterable[str], suite: Iterable[str], share: float = NEAR_COPY_SHARE) -> list[tuple[str, str]]:
    """(suite prompt, training prompt) pairs where the training text copies or nearly copies a suite prompt."""
    data_words = [(d, normalize(d)) for d in data]
    data_grams = [(d, w, _grams(w)) for d, w in data_words]
    hits = []
    for s in suite:
        sw = normalize(s)
        sg = _grams(sw)
        joined = " ".join(sw)
        for d, dw, dg in data_grams:
            if sw == dw or (len(sw) >= 4 and f" {joined} " in f" {' '.join(dw)} "):
                hits.append((s, d))
            elif len(sg) >= 3 and len(sg & dg) / len(sg) >= share:
                hits.append((s, d))
    return hits


# --------------------------------------------------------------------------- rows


@dataclass(frozen=True)
class Row:
    """One training sequence: token ids [S] and the positions whose next token carries loss."""

    ids: np.ndarray  # [S] int64
    loss_at: np.ndarray  # [L] int64, positions p whose target is ids[p + 1]
    source: str  # "chat" | "prose"


def chat_rows(
    generate: Callable[[list[int], int], list[int]],
    tokenizer: Tokenizer,
    render: Callable[[str], str],
    prompts: Sequence[str],
    max_new_tokens: int,
    end_id: int | None,
    progress: Callable[[int], None] | None = None,
) -> list[Row]:
    """The dense model's greedy answer to each prompt, as a chat row with loss on the answer.

    `generate(prompt_ids, max_new_tokens)` returns the answer ids without the end token;
    `render(prompt)` applies the chat template with the generation prompt.
    """
    rows = []
    for p in prompts:
        prompt_ids = tokenizer.encode(render(p)).ids
        answer = generate(prompt_ids, max_new_tokens)
        ids = prompt_ids + answer + ([end_id] if end_id is not None else [])
        if len(ids) > len(prompt_ids):
            loss_at = np.arange(len(prompt_ids) - 1, len(ids) - 1, dtype=np.int64)
            rows.append(Row(np.asarray(ids, dtype=np.int64), loss_at, "chat"))
        if progress is not None:
            progress(1)
    return rows


def prose_rows(windows: np.ndarray) -> list[Row]:
    """Calibration windows [N, S] as rows with loss on every position."""
    return [Row(w.astype(np.int64), np.arange(w.shape[0] - 1, dtype=np.int64), "prose") for w in windows]


def mix(rows: Sequence[Row], tokens: int, chat_share: float, seed: int) -> list[int]:
    """Indices into `rows` holding about `tokens` loss tokens, `chat_share` of them chat (cycling when short)."""
    rng = np.random.default_rng(seed)
    out: list[int] = []
    want = {"chat": round(tokens * chat_share), "prose": tokens - round(tokens * chat_share)}
    for source, n in want.items():
        pool = [i for i, r in enumerate(rows) if r.source == source]
        if n <= 0:
            continue
        if not pool:
            raise RecoveryError(f"recovery wants {n} {source} tokens but the data has no {source} rows; check chat_share")
        got = 0
        while got < n:
            for i in rng.permutation(pool):
                if got >= n:
                    break
                out.append(int(i))
                got += len(rows[i].loss_at)
    return [out[i] for i in rng.permutation(len(out))]


# --------------------------------------------------------------------------- teacher cache


@dataclass
class TeacherCache:
    """Top-k teacher logits at every loss position of every row, aligned with `rows`."""

    rows: list[Row]
    values: list[torch.Tensor]  # per row [L, k] float16: teacher logits
    indices: list[torch.Tensor]  # per row [L, k] int32: their token ids
    top_k: int

    @property
    def loss_tokens(self) -> int:
        return sum(len(r.loss_at) for r in self.rows)

    @classmethod
    def build(
        cls, rows: Sequence[Row], teacher_logits: Callable[[np.ndarray], np.ndarray], top_k: int,
        progress: Callable[[int], None] | None = None,
    ) -> TeacherCache:
        """Run the teacher once per row; `teacher_logits(ids [1, S])` returns logits [1, S, V]."""
        values, indices = [], []
        for r in rows:
            logits = torch.from_numpy(np.ascontiguousarray(teacher_logits(r.ids[None, :])[0]))  # [S, V]
            v, i = torch.topk(logits[torch.from_numpy(r.loss_at)].float(), top_k, dim=-1)  # [L, k]
            values.append(v.to(torch.float16))
            indices.append(i.to(torch.int32))
            if progress is not None:
                progress(len(r.loss_at))
        return cls(list(rows), values, indices, top_k)

    def select(self, tokens: int, chat_share: float, seed: int) -> TeacherCache:
        """The rows (with their teacher logits) of one variant's data mix."""
        idx = mix(self.rows, tokens, chat_share, seed)
        return TeacherCache([self.rows[i] for i in idx], [self.values[i] for i in idx],
                            [self.indices[i] for i in idx], self.top_k)

    def state(self) -> dict[str, object]:
        return {"rows": [(r.ids, r.loss_at, r.source) for r in self.rows], "values": self.values,
                "indices": self.indices, "top_k": self.top_k}

    @classmethod
    def from_state(cls, s: dict[str, object]) -> TeacherCache:
        rows = [Row(ids, loss_at, src) for ids, loss_at, src in s["rows"]]  # type: ignore[attr-defined]
        return cls(rows, list(s["values"]), list(s["indices"]), int(s["top_k"]))  # type: ignore[arg-type,call-overload]
