"""Scoring that works for small models: option log-likelihoods, output checks, perplexity.

- `choice` cases: the log-likelihood of each option given the context, summed over the
  option's tokens (lm-evaluation-harness `acc`) and divided by its length in characters
  (`acc_norm`); the highest wins. No generation, so a 135M model is not penalised for
  rambling.
- generation cases (`exact`, `regex`, `json`, `list`): greedy decoding up to the case's
  budget or stop string, then a check from `CHECKS`, which also says whether the output has
  the asked-for form (the `format` dimension).
- perplexity of held-out windows: one full-sequence pass per window, mean next-token NLL.

Everything talks to the model through `LanguageModel`, a two-method protocol that the ORT
session (harness.evaluate) and the tests' fake models both implement.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from edge_runtime.errors import EvalError
from edge_runtime.shadow.checks import json_object, list_items, normalize
from harness.suite import SLICES, Case

if TYPE_CHECKING:
    from tokenizers import Tokenizer  # the `[eval]` extra; imported where a bundle is opened

log = logging.getLogger(__name__)

CHOICE_METRICS = ("sum", "norm")  # sum of option log-probs | per character of the option


class LanguageModel(Protocol):
    """What the harness needs from a model: logits for a batch, and greedy generation."""

    def logits(self, input_ids: np.ndarray) -> np.ndarray:
        """Next-token logits for every position: [B, S] int64 -> [B, S, V] float32 (no padding on the left)."""
        ...

    def generate(self, prompt_ids: Sequence[int], max_new_tokens: int, stop_ids: Collection[int]) -> Iterator[int]:
        """Greedy continuation of `prompt_ids`, one token id at a time, ending before a stop id."""
        ...


def greedy(model: LanguageModel, prompt_ids: Sequence[int], max_new_tokens: int, stop_ids: Collection[int]) -> Iterator[int]:
    """Greedy decoding by recomputing the whole sequence each step (for models without a KV cache)."""
    ids = list(prompt_ids)
    for _ in range(max_new_tokens):
        nxt = int(np.argmax(model.logits(np.asarray([ids], dtype=np.int64))[0, -1]))
        if nxt in stop_ids:
            return
        ids.append(nxt)
        yield nxt


def log_softmax_at(logits: np.ndarray, targets: np.ndarray, rows: int = 64) -> np.ndarray:
    """log p(target) per row: logits [N, V], targets [N] -> [N] float64.

    Works in the logits' own float32, `rows` rows at a time, so a 512-token window never
    makes a float64 copy of [512, 49152] logits (200 MB): the max-shifted exponentials are
    summed in float32 (relative error ~1e-7 per row) and only the [N] results are float64.
    """
    out = np.empty(len(targets), np.float64)
    for start in range(0, len(targets), rows):
        x = logits[start : start + rows]  # [r, V]
        t = np.asarray(targets[start : start + rows])
        m = x.max(axis=-1, keepdims=True)  # [r, 1]
        e = np.exp(x - m)  # [r, V] scratch in the logits' dtype; every value in (0, 1]
        lse = m[:, 0].astype(np.float64) + np.log(e.sum(axis=-1).astype(np.float64))
        out[start : start + len(t)] = x[np.arange(len(t)), t] - lse
    return out


# --------------------------------------------------------------------------- prompts


@dataclass(frozen=True)
class PromptFormat:
    """Turns a case into model text: raw completion, or the bundle's chat template."""

    chat_template: str | None = None  # jinja2, as in the manifest's model.chat_template

    def render(self, case: Case) -> str:
        if case.template == "raw":
            return case.prompt
        if self.chat_template is None:
            log.warning("no chat template in the bundle: case %s uses its raw prompt", case.id)
            return case.prompt + "\n"
        return _chat(self.chat_template, case.prompt)


_TEMPLATES: dict[str, Any] = {}


def _chat(template: str, user: str) -> str:
    if template not in _TEMPLATES:
        from jinja2.exceptions import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message: str) -> None:
            raise EvalError(f"the chat template refused the prompt: {message}")

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = raise_exception
        try:
            _TEMPLATES[template] = env.from_string(template)
        except TemplateError as e:
            raise EvalError(f"the manifest's chat template is not valid jinja2 ({e}); re-export the bundle") from e
    return _TEMPLATES[template].render(messages=[{"role": "user", "content": user}], add_generation_prompt=True)


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class CaseResult:
    """How one variant did on one case."""

    id: str
    slice: str
    type: str
    tags: tuple[str, ...]
    correct: bool  # under the run's choice metric for choice cases
    format_ok: bool | None  # None when the case does not count for the format dimension
    output: str  # generated text, or the chosen option
    detail: dict[str, Any] = field(default_factory=dict)  # per-option log-likelihoods, etc.

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "slice": self.slice, "type": self.type, "tags": list(self.tags),
            "correct": self.correct, "format_ok": self.format_ok, "output": self.output, **self.detail,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CaseResult:
        known = ("id", "slice", "type", "tags", "correct", "format_ok", "output")
        return cls(d["id"], d["slice"], d["type"], tuple(d["tags"]), d["correct"], d["format_ok"], d["output"],
                   {k: v for k, v in d.items() if k not in known})


# --------------------------------------------------------------------------- choice


def _split_ws(context: str, option: str) -> tuple[str, str]:
    """Move trailing whitespace of the context onto the option, as lm-evaluation-harness does."""
    stripped = context.rstrip(" ")
    return stripped, context[len(stripped):] + option


def choice_tokens(tokenizer: Tokenizer, context: str, options: Sequence[str]) -> tuple[list[int], list[list[int]]]:
    """The context's token ids and each option's: the context is the same for every option
    (its trailing spaces move onto the options), so a model may run it once."""
    ctx_ids = tokenizer.encode(_split_ws(context, "")[0]).ids
    conts = [tokenizer.encode(_split_ws(context, opt)[1]).ids for opt in options]
    if not ctx_ids or not all(conts):
        raise EvalError(f"context {context[:40]!r} or an option of {list(options)!r} encodes to no tokens; give both some text")
    return ctx_ids, conts


def option_loglikelihoods(
    model: LanguageModel, tokenizer: Tokenizer, context: str, options: Sequence[str]
) -> list[tuple[float, int]]:
    """(sum of option-token log-probs, option token count) per option, in one right-padded batch."""
    ctx_ids, conts = choice_tokens(tokenizer, context, options)
    rows = [ctx_ids + c for c in conts]
    # Right padding with a causal model: pad positions come after every scored position,
    # so they cannot change the logits we read.
    batch = np.zeros((len(rows), max(map(len, rows))), dtype=np.int64)  # [B, S]
    for i, ids in enumerate(rows):
        batch[i, : len(ids)] = ids
    logits = model.logits(batch)  # [B, S, V]
    start = len(ctx_ids) - 1  # the position that predicts the first option token
    return [(float(log_softmax_at(logits[i, start : start + len(c)], np.asarray(c)).sum()), len(c))
            for i, c in enumerate(conts)]


def score_choice(model: LanguageModel, tokenizer: Tokenizer, fmt: PromptFormat, case: Case, metric: str = "sum") -> CaseResult:
    """Pick the option with the highest log-likelihood (`sum`) or per-character log-likelihood (`norm`)."""
    ll = option_loglikelihoods(model, tokenizer, fmt.render(case), case.options)
    return choice_result(case, [s for s, _ in ll], metric)


def choice_result(case: Case, sums: Sequence[float], metric: str = "sum") -> CaseResult:
    """A choice case's result from its options' summed log-likelihoods."""
    norms = [s / max(1, len(o)) for s, o in zip(sums, case.options, strict=True)]
    pred_sum, pred_norm = int(np.argmax(sums)), int(np.argmax(norms))
    pred = pred_sum if metric == "sum" else pred_norm
    return CaseResult(
        case.id, case.slice, case.type, case.tags, pred == case.answer,
        (pred == case.answer) if "format" in case.tags else None,
        case.options[pred],
        {"loglik": [round(s, 4) for s in sums], "correct_sum": pred_sum == case.answer,
         "correct_norm": pred_norm == case.answer},
    )


# --------------------------------------------------------------------------- generation checks


def check_exact(case: Case, text: str) -> tuple[bool, bool | None]:
    """The normalized output equals one of the accepted answers."""
    ok = normalize(text) in {normalize(a) for a in case.answer}  # type: ignore[union-attr]
    return ok, (ok if "format" in case.tags else None)


def check_regex(case: Case, text: str) -> tuple[bool, bool | None]:
    """`re.search(pattern, output)`; flags go in the pattern, e.g. `(?i)`."""
    ok = re.search(case.pattern, text) is not None
    return ok, (ok if "format" in case.tags else None)


def check_json(case: Case, text: str) -> tuple[bool, bool | None]:
    """Format: the output (inside an optional code fence) parses as one JSON object.

    Correct: it is valid, has every key in `keys`, and every `expect` value (strings
    compared after `normalize`).
    """
    obj = json_object(text)
    if obj is None:
        return False, False
    ok = all(k in obj for k in case.keys)
    for k, want in case.expect.items():
        got = obj.get(k)
        same = normalize(got) == normalize(want) if isinstance(got, str) and isinstance(want, str) else got == want
        ok = ok and same
    return ok, True


def check_list(case: Case, text: str) -> tuple[bool, bool | None]:
    """Format: exactly `n` items. Correct: that, and every `contains` entry among them."""
    items = [normalize(i) for i in list_items(text, case.style)]
    fmt_ok = len(items) == case.n
    ok = fmt_ok and all(any(normalize(c) in i for i in items) for c in case.contains)
    return ok, fmt_ok


# type -> check(case, output) -> (correct, format_ok or None)
CHECKS: dict[str, Callable[[Case, str], tuple[bool, bool | None]]] = {
    "exact": check_exact,
    "regex": check_regex,
    "json": check_json,
    "list": check_list,
}


def generate_text(
    model: LanguageModel, tokenizer: Tokenizer, prompt: str, max_new_tokens: int,
    stop: Sequence[str] = (), stop_ids: Collection[int] = (),
) -> str:
    """Greedy text after `prompt`, cut before the first stop string."""
    ids: list[int] = []
    for tok in model.generate(tokenizer.encode(prompt).ids, max_new_tokens, stop_ids):
        ids.append(tok)
        if stopped(tokenizer, ids, stop):
            break
    return cut_text(tokenizer.decode(ids), stop)


def stopped(tokenizer: Tokenizer, ids: list[int], stop: Sequence[str]) -> bool:
    """True once the text of `ids` holds a stop string (generation ends there)."""
    return bool(stop) and any(s in tokenizer.decode(ids) for s in stop)


def cut_text(text: str, stop: Sequence[str]) -> str:
    """`text` up to the first stop string."""
    return text[: min((text.index(s) for s in stop if s in text), default=len(text))]


def score_generation(
    model: LanguageModel, tokenizer: Tokenizer, fmt: PromptFormat, case: Case, stop_ids: Collection[int] = ()
) -> CaseResult:
    """Generate greedily and check the output with `CHECKS[case.type]`."""
    text = generate_text(model, tokenizer, fmt.render(case), case.max_new_tokens, case.stop, stop_ids)
    return generation_result(case, text)


def generation_result(case: Case, text: str) -> CaseResult:
    """A generation case's result: its output checked by `CHECKS[case.type]`."""
    correct, fmt_ok = CHECKS[case.type](case, text)
    return CaseResult(case.id, case.slice, case.type, case.tags, correct, fmt_ok, text)


def score_case(
    model: LanguageModel, tokenizer: Tokenizer, fmt: PromptFormat, case: Case,
    metric: str = "sum", stop_ids: Collection[int] = (),
) -> CaseResult:
    """Score one case with the scorer its type names."""
    if case.type == "choice":
        return score_choice(model, tokenizer, fmt, case, metric)
    if case.type not in CHECKS:
        raise EvalError(f"case {case.id!r}: unknown scoring type {case.type!r}; use one of {['choice', *CHECKS]}")
    return score_generation(model, tokenizer, fmt, case, stop_ids)


# --------------------------------------------------------------------------- aggregation


def summarize(results: Iterable[CaseResult]) -> dict[str, float]:
    """Per-slice accuracy, `format` compliance and `instruction` following, each 0-1.

    A dimension with no cases is left out rather than reported as 0 or 1.
    """
    results = list(results)
    out: dict[str, float] = {}
    for s in SLICES:
        rs = [r.correct for r in results if r.slice == s]
        if rs:
            out[s] = float(np.mean(rs))
    fmt = [r.format_ok for r in results if r.format_ok is not None]
    if fmt:
        out["format"] = float(np.mean(fmt))
    ins = [r.correct for r in results if "instruction" in r.tags]
    if ins:
        out["instruction"] = float(np.mean(ins))
    return out


def covered(cases: Iterable[Case]) -> dict[str, int]:
    """How many cases feed each dimension `summarize` reports: {dimension: count}."""
    out: dict[str, int] = {}
    for c in cases:
        dims = [c.slice]
        if c.type in ("json", "list") or "format" in c.tags:
            dims.append("format")
        if "instruction" in c.tags:
            dims.append("instruction")
        for d in dims:
            out[d] = out.get(d, 0) + 1
    return out


def choice_accuracy(results: Iterable[CaseResult]) -> dict[str, dict[str, float]]:
    """Per-slice accuracy of choice cases under both metrics: {slice: {"sum": a, "norm": b, "n": k}}."""
    out: dict[str, dict[str, float]] = {}
    results = [r for r in results if r.type == "choice"]
    for s in SLICES:
        rs = [r for r in results if r.slice == s]
        if rs:
            out[s] = {
                "sum": float(np.mean([r.detail["correct_sum"] for r in rs])),
                "norm": float(np.mean([r.detail["correct_norm"] for r in rs])),
                "n": len(rs),
            }
    return out


# --------------------------------------------------------------------------- perplexity


def perplexity(
    model: LanguageModel, windows: np.ndarray, progress: Callable[[int], None] | None = None, batch: int = 2
) -> float:
    """exp(mean next-token NLL) over non-overlapping windows [N, L], `batch` windows a call.

    Two 512-token windows a pass are about 1.1x faster than one on 2 cores (measured
    interleaved), for 100 MB more of transient logits; a row's logits do not depend on the batch.
    """
    if windows.ndim != 2 or windows.shape[1] < 2:
        raise EvalError(f"perplexity needs windows shaped [N, L >= 2], got {windows.shape}")
    total, count = 0.0, 0
    for start in range(0, len(windows), batch):
        ws = windows[start : start + batch].astype(np.int64)  # [b, L]
        logits = model.logits(ws)  # [b, L, V]
        for w, lg in zip(ws, logits, strict=True):
            lp = log_softmax_at(lg[:-1], w[1:])
            total -= float(lp.sum())
            count += len(lp)
        if progress is not None:
            progress(len(ws))
    nll = total / count
    return math.exp(nll) if nll < 700 else math.inf
