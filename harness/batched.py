"""Many sequences through one forward pass: right-padded batches over a variant's KV cache.

Scoring one case at a time pays a full pass over the weights for every forward call, and
at the suite's lengths (a 19-token context, 1-3 option tokens, 24 generated tokens) that
pass is most of the time. Here a group of cases shares every pass instead:

- `prefill`: the contexts of a group as one right-padded batch [N, C]; the attention mask
  (ones, then zeros) gives each row its own length, which GroupQueryAttention reads as the
  row's sequence length, so a row's logits and cache are those of the row alone.
- `step`: one token per row over that cache; the mask's row sums (length + 1) say where
  each row's new token goes and what it attends to, so rows of different lengths advance
  together. Rows stay in the batch after they are done (their outputs are not read).

Both are exact on onnxruntime's CPU kernels (tests/harness/test_fast_scoring.py compares
them with one sequence at a time).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from edge_runtime.engine.session import VariantSession
from edge_runtime.errors import EvalError
from harness.scoring import (
    CHECKS,
    CaseResult,
    PromptFormat,
    choice_result,
    choice_tokens,
    cut_text,
    generation_result,
    log_softmax_at,
    stopped,
)
from harness.suite import Case

if TYPE_CHECKING:
    from tokenizers import Tokenizer  # the `[eval]` extra; imported where a bundle is opened


@dataclass
class Batch:
    """A right-padded batch in flight: each row's cache and its length."""

    past: list[np.ndarray]  # per layer key/value [N, kv_heads, width, head_dim]; row r valid up to lengths[r]
    lengths: np.ndarray  # [N] tokens in each row's cache

    def take(self, rows: Sequence[int]) -> Batch:
        """The batch of `rows` (repeats allowed: one context, several continuations)."""
        index = np.asarray(rows)
        return Batch([p[index] for p in self.past], self.lengths[index].copy())


def prefill(session: VariantSession, seqs: Sequence[Sequence[int]]) -> tuple[np.ndarray, Batch]:
    """Logits [N, V] after each sequence's last token, and the batch to step from."""
    lengths = np.asarray([len(s) for s in seqs])
    ids = np.zeros((len(seqs), int(lengths.max())), np.int64)  # [N, C], right-padded
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
    mask = (np.arange(ids.shape[1])[None, :] < lengths[:, None]).astype(np.int64)  # [N, C]
    logits, present = session.forward(ids, None, mask)  # [N, C, V]
    return logits[np.arange(len(seqs)), lengths - 1], Batch(present, lengths)


def step(session: VariantSession, tokens: np.ndarray, batch: Batch) -> tuple[np.ndarray, Batch]:
    """Append one token [N] to each row; logits [N, V] after it."""
    width = batch.past[0].shape[2] + 1
    mask = (np.arange(width)[None, :] <= batch.lengths[:, None]).astype(np.int64)  # row sums: length + 1
    logits, present = session.forward(np.asarray(tokens, np.int64)[:, None], batch.past, mask)  # [N, 1, V]
    return logits[:, 0], Batch(present, batch.lengths + 1)


def continuation_logliks(
    session: VariantSession, items: Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]], cached: bool = True
) -> list[list[float]]:
    """Per item (context ids, continuations' ids): each continuation's summed token log-probs.

    `cached`: the contexts run as one batch, then every continuation of every item steps
    over its context's cache together, one token a pass (the fewest tokens and passes).
    Otherwise every (context + continuation) runs as a whole sequence, all in one
    right-padded batch: on int8 variants a cached step and a whole-sequence pass take
    different kernel paths and disagree by up to ~0.4 nats, so the exact scores of the
    one-case-at-a-time path need whole sequences there.
    """
    rows = [(i, cont) for i, (_, conts) in enumerate(items) for cont in conts]
    conts = [cont for _, cont in rows]
    if cached:
        last, ctx = prefill(session, [c for c, _ in items])  # [N, V]
        sums = log_softmax_at(last[[i for i, _ in rows]], np.asarray([c[0] for c in conts]))  # first tokens
        batch = ctx.take([i for i, _ in rows])
        for j in range(1, max(len(c) for c in conts)):
            feed = np.asarray([c[j - 1] if j < len(c) else 0 for c in conts])  # the token that predicts c[j]
            logits, batch = step(session, feed, batch)
            live = [r for r, c in enumerate(conts) if j < len(c)]
            sums[live] += log_softmax_at(logits[live], np.asarray([conts[r][j] for r in live]))
    else:
        seqs = [list(items[i][0]) + list(c) for i, c in rows]
        ids = np.zeros((len(seqs), max(map(len, seqs))), np.int64)  # [R, S], right-padded: pads come after
        for r, q in enumerate(seqs):  # every scored position, so a causal model never sees them
            ids[r, : len(q)] = q
        logits = session.logits(ids)  # [R, S, V]
        sums = np.asarray([
            log_softmax_at(logits[r, len(items[i][0]) - 1 : len(seqs[r]) - 1], np.asarray(c)).sum()
            for r, (i, c) in enumerate(rows)
        ])
    out: list[list[float]] = [[] for _ in items]
    for (i, _), total in zip(rows, sums, strict=True):
        out[i].append(float(total))
    return out


def greedy_many(
    session: VariantSession, prompts: Sequence[Sequence[int]], max_new: Sequence[int], stop_ids: Collection[int],
    done: Callable[[int, list[int]], bool] = lambda i, ids: False,
) -> list[list[int]]:
    """Greedy continuations of every prompt, decoded together.

    Row i ends before a stop id, after `max_new[i]` tokens, or when `done(i, its tokens)`
    says so (the caller's stop strings); its tokens are then kept as they are.
    """
    logits, batch = prefill(session, prompts)
    out: list[list[int]] = [[] for _ in prompts]
    live = [i for i, n in enumerate(max_new) if n > 0]
    while live:
        nxt = np.argmax(logits, axis=-1)  # [N]
        for i in list(live):
            t = int(nxt[i])
            if t in stop_ids:
                live.remove(i)
                continue
            out[i].append(t)
            if len(out[i]) >= max_new[i] or done(i, out[i]):
                live.remove(i)
        if live:
            logits, batch = step(session, nxt, batch)
    return out


def score_cases(
    session: VariantSession, tokenizer: Tokenizer, fmt: PromptFormat, cases: Sequence[Case], metric: str = "sum",
    stop_ids: Collection[int] = (), group: int = 8, progress: Callable[[int], None] | None = None,
    cached: bool = True,
) -> list[CaseResult]:
    """`harness.scoring.score_case` for every case, `group` cases a forward pass; results in case order.

    Cases are grouped by prompt length (so a group pads little): choice cases through
    `continuation_logliks` (`cached` as there), generation cases through `greedy_many`.
    """
    for c in cases:
        if c.type != "choice" and c.type not in CHECKS:
            raise EvalError(f"case {c.id!r}: unknown scoring type {c.type!r}; use one of {['choice', *CHECKS]}")
    out: dict[int, CaseResult] = {}
    choice = {i: choice_tokens(tokenizer, fmt.render(c), c.options) for i, c in enumerate(cases) if c.type == "choice"}
    for g in _groups(choice, lambda i: len(choice[i][0]), group):
        for i, sums in zip(g, continuation_logliks(session, [choice[i] for i in g], cached), strict=True):
            out[i] = choice_result(cases[i], sums, metric)
        if progress is not None:
            progress(len(g))
    prompts = {i: tokenizer.encode(fmt.render(c)).ids for i, c in enumerate(cases) if c.type != "choice"}
    for g in _groups(prompts, lambda i: len(prompts[i]), group):
        stops = [cases[i].stop for i in g]
        ids = greedy_many(session, [prompts[i] for i in g], [cases[i].max_new_tokens for i in g], stop_ids,
                          lambda r, toks, stops=stops: stopped(tokenizer, toks, stops[r]))
        for i, toks in zip(g, ids, strict=True):
            out[i] = generation_result(cases[i], cut_text(tokenizer.decode(toks), cases[i].stop))
        if progress is not None:
            progress(len(g))
    return [out[i] for i in range(len(cases))]


def _groups(items: dict[int, object], length: Callable[[int], int], size: int) -> list[list[int]]:
    order = sorted(items, key=length)
    return [order[k : k + size] for k in range(0, len(order), size)]
