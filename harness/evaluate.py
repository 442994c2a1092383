"""The evaluation harness: score every variant of a bundle through onnxruntime and gate it.

    result = evaluate_bundle("bundles/smollm2-135m", load_suite(), Floors.from_toml(f))
    write_report(result, "bundles/smollm2-135m/eval")   # harness.report
    apply_to_manifest("bundles/smollm2-135m", result)    # quality + gate, atomically

Each variant runs in the same kind of ORT session the device runs (CPU provider, the
graph's own I/O names), never through torch. Scores per variant (`quality.scores`):
the four slice accuracies, `format`, `instruction` (0-1), `ppl_retention` (dense
perplexity / variant perplexity, capped at 1), and the costs `latency` and `size`
relative to the dense variant. Nothing is written until every variant has been scored.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_runtime.bundle import Gate, Manifest, Quality, Variant, read_manifest, write_manifest
from edge_runtime.errors import BundleError, EdgeError, EvalError, VariantError
from harness.batched import score_cases
from harness.floors import DIMENSIONS, FloorRule, Floors, gate, set_floors
from harness.scoring import (
    CHOICE_METRICS,
    CaseResult,
    LanguageModel,
    PromptFormat,
    choice_accuracy,
    covered,
    perplexity,
    score_case,
    summarize,
)
from harness.suite import SLICES, Suite
from harness.text import heldout_text, heldout_windows, token_windows

if TYPE_CHECKING:
    from tokenizers import Tokenizer  # the `[eval]` extra; imported where a bundle is opened

log = logging.getLogger(__name__)

REPORT_DIR = "eval"  # default report folder inside the bundle
FLOORS_FILE = "floors.toml"  # default floors file inside the bundle



def _progress(*args: Any, **kwargs: Any) -> Any:
    """A tqdm bar, imported here so that `edge-eval` without the [eval] extra reaches its one-line message."""
    from tqdm import tqdm

    return tqdm(*args, **kwargs)

@dataclass(frozen=True)
class EvalConfig:
    """How hard to look. The defaults are the real report's; tests shrink them."""

    windows: int = 60  # held-out windows for perplexity; 60 x 512 = 30,720 tokens
    window: int = 512  # tokens per window (non-overlapping)
    choice_metric: str = "sum"  # sum: total option log-prob (lm-eval acc) | norm: per character (acc_norm)
    limit: int | None = None  # cases per slice (smoke runs only; floors need the full suite)
    threads: int | None = None  # ORT intra-op threads; None: every core this process may use
    latency_prompt: int = 128  # reference request: prompt tokens ...
    latency_new: int = 32  # ... and generated tokens, timed per variant
    latency_repeats: int = 3  # median of this many timings
    progress: bool = False  # tqdm bars on stderr
    batch: int = 8  # cases a forward pass (ORT variants): each pass reads every weight once, so fewer passes win

    def __post_init__(self) -> None:
        if self.choice_metric not in CHOICE_METRICS:
            raise EvalError(f"choice_metric must be one of {CHOICE_METRICS}, got {self.choice_metric!r}")
        if self.windows < 1 or self.window < 2:
            raise EvalError(f"need windows >= 1 and window >= 2 tokens, got {self.windows} x {self.window}")
        if self.limit is not None and self.limit < 1:
            raise EvalError(f"limit must be >= 1 case per slice, got {self.limit}; leave it out for the whole suite")
        if self.threads is not None and self.threads < 1:
            raise EvalError(f"threads must be >= 1, got {self.threads}; leave it out to use every core")
        if self.batch < 1:
            raise EvalError(f"batch must be >= 1 case a forward pass, got {self.batch}")


# --------------------------------------------------------------------------- the ORT model


class OrtModel:
    """A variant's ONNX graph behind the `LanguageModel` protocol, through the runtime's session.

    `edge_runtime.engine.session.VariantSession` is what the device runs (same providers, same
    expansion of masked weights, same in-place KV cache); this adapter adds greedy
    generation and the timing of a reference request.
    """

    def __init__(self, path: str | Path, threads: int | None = None, name: str = "", storage: str | None = None,
                 quantized: bool = False) -> None:
        from edge_runtime.engine.session import VariantSession

        self.name = name or str(path)
        self.quantized = quantized  # int8/int4 kernels: choice options are scored as whole sequences (harness.batched)
        try:
            self.session = VariantSession(path, threads=threads, providers=["CPUExecutionProvider"], storage=storage)
        except VariantError as e:
            raise VariantError(f"variant {self.name!r}: {e}") from e
        outputs = {o.name for o in self.session.session.get_outputs()}
        if "logits" not in outputs:
            raise VariantError(f"variant {self.name!r}: the graph has no 'logits' output: not an edge-export graph")
        self._decoder: Any = None

    @property
    def past(self) -> list[tuple[int, int]]:
        """(kv_heads, head_dim) per layer, read from the graph."""
        return [(k.kv_heads, k.head_dim) for k in self.session.kv]

    def logits(self, input_ids: np.ndarray) -> np.ndarray:
        return self.session.logits(input_ids).astype(np.float32, copy=False)  # [B, S, V]

    def _fresh_decoder(self, capacity: int) -> Any:
        if self._decoder is None:
            self._decoder = self.session.decoder(capacity)
        self._decoder.reserve(capacity)
        self._decoder.reset()
        return self._decoder

    def generate(self, prompt_ids: Sequence[int], max_new_tokens: int, stop_ids: Collection[int]) -> Iterator[int]:
        dec = self._fresh_decoder(len(prompt_ids) + max_new_tokens)
        row = dec.prefill(list(prompt_ids))  # [V]
        for k in range(max_new_tokens):
            nxt = int(np.argmax(row))
            if nxt in stop_ids:
                return
            yield nxt
            if k + 1 < max_new_tokens:
                row = dec.step(nxt)

    def time_request(self, prompt: int, new: int, repeats: int, vocab: int) -> float:
        """Median ms of a reference request: prefill `prompt` tokens, then decode `new` tokens."""
        ids = np.random.default_rng(0).integers(0, vocab, size=prompt, dtype=np.int64)
        times = []
        for _ in range(repeats + 1):  # the first run warms up allocations and is dropped
            dec = self._fresh_decoder(prompt + new)
            t = time.perf_counter()
            row = dec.prefill(ids)
            for _ in range(new):
                row = dec.step(int(np.argmax(row)))
            times.append((time.perf_counter() - t) * 1e3)
        return float(np.median(times[1:]))


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class VariantEval:
    """One variant's scores, perplexity, per-case results and gate."""

    name: str
    scores: dict[str, float]  # dimension -> value; see module docstring
    perplexity: float
    cases: tuple[CaseResult, ...]
    choice: dict[str, dict[str, float]]  # slice -> choice accuracy under both metrics
    latency_ms: float  # reference request on this machine (or from the manifest's cost)
    file_bytes: int
    gate: Gate = field(default_factory=Gate)
    seconds: float = 0.0  # wall time spent scoring it

    def to_dict(self, cases: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name, "scores": self.scores, "perplexity": _finite(self.perplexity),
            "choice": self.choice, "latency_ms": self.latency_ms, "file_bytes": self.file_bytes,
            "gate": {"status": self.gate.status, "failed": list(self.gate.failed)}, "seconds": round(self.seconds, 1),
        }
        if cases:
            d["cases"] = [c.to_dict() for c in self.cases]
        return d


@dataclass(frozen=True)
class BundleEval:
    """Every variant's evaluation, with what it was measured against."""

    bundle: str
    manifest: Manifest
    suite: Suite
    config: EvalConfig
    variants: tuple[VariantEval, ...]  # manifest order, densest first
    reference: str  # the dense variant the relative dimensions divide by
    floors: Floors | None = None
    latency_source: str = "edge-eval"  # "edge-eval" (timed here) | "manifest" (cost from edge-export)
    tokens: int = 0  # held-out tokens behind each perplexity

    def variant(self, name: str) -> VariantEval:
        for v in self.variants:
            if v.name == name:
                return v
        raise VariantError(f"no evaluation for {name!r}; evaluated: {[v.name for v in self.variants]}")


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


# --------------------------------------------------------------------------- bundle plumbing


def open_bundle(bundle_dir: str | Path) -> tuple[Manifest, Tokenizer]:
    """Read the manifest and the tokenizer; raise BundleError naming what is missing."""
    manifest = read_manifest(bundle_dir)
    path = Path(bundle_dir) / manifest.tokenizer
    if not path.is_file():
        raise BundleError(f"bundle {str(bundle_dir)!r} is missing {manifest.tokenizer!r}; re-export the bundle with edge-export")
    from tokenizers import Tokenizer

    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:
        raise BundleError(f"{str(path)!r} is not a tokenizers file ({e}); re-export the bundle") from e
    return manifest, tok


def reference_variant(manifest: Manifest) -> Variant:
    """The dense, unquantized variant every relative dimension divides by."""
    for v in manifest.variants:
        if v.method == "dense" and v.quantization == "none":
            return v
    raise EvalError(
        f"the bundle has no dense unquantized variant (variants: {list(manifest.names)}); "
        "floors and relative scores need one: re-export with the dense variant included"
    )


def stop_ids(manifest: Manifest, tok: Tokenizer) -> set[int]:
    ids = set(manifest.model.eos_token_ids)
    for special in ("<|im_end|>", "<|endoftext|>"):
        i = tok.token_to_id(special)
        if i is not None:
            ids.add(i)
    return ids


def perplexity_windows(tok: Tokenizer, n: int, length: int) -> np.ndarray:
    """The first `n` held-out windows [n, length], tokenizing only as much text as they need."""
    text = heldout_text()
    prefix = text[: n * length * 8]  # ~4 characters a token for English prose: twice what is needed
    if len(prefix) < len(text):
        try:
            return token_windows(tok, prefix, n, length, "held-out text")
        except EdgeError:
            pass  # a tokenizer with few characters per token: fall back to the whole text
    return heldout_windows(tok, n, length)


def open_variants(bundle_dir: str | Path, manifest: Manifest, threads: int | None = None) -> None:
    """Load every variant once (then drop it) so a broken one fails before any scoring."""
    for v in manifest.variants:
        path = Path(bundle_dir) / v.onnx
        if not path.is_file():
            raise VariantError(f"variant {v.name!r}: {str(path)!r} is missing; re-export the bundle with edge-export")
        OrtModel(path, threads, v.name, v.extra.get("storage"))


# --------------------------------------------------------------------------- scoring


def score_variant(
    model: LanguageModel,
    tok: Tokenizer,
    suite: Suite,
    windows: np.ndarray,
    *,
    chat_template: str | None = None,
    stop: Collection[int] = (),
    config: EvalConfig = EvalConfig(),
    name: str = "",
) -> tuple[dict[str, float], float, tuple[CaseResult, ...]]:
    """Absolute scores (slices, format, instruction), perplexity and per-case results."""
    fmt = PromptFormat(chat_template)
    cases = _limited(suite, config.limit)
    with _progress(total=len(cases), desc=f"{name or 'variant'}: cases", disable=not config.progress, leave=False) as bar:
        if isinstance(model, OrtModel):  # many cases a forward pass (harness.batched)
            results = score_cases(model.session, tok, fmt, cases, config.choice_metric, stop, config.batch, bar.update,
                                  cached=not model.quantized)
        else:
            results = []
            for case in cases:
                results.append(score_case(model, tok, fmt, case, config.choice_metric, stop))
                bar.update(1)
    bar = _progress(total=len(windows), desc=f"{name or 'variant'}: perplexity", disable=not config.progress, leave=False)
    with bar:
        ppl = perplexity(model, windows, bar.update)
    return summarize(results), ppl, tuple(results)


def _limited(suite: Suite, limit: int | None) -> tuple[Any, ...]:
    if limit is None:
        return suite.cases
    return tuple(c for s in SLICES for c in suite.slice(s)[:limit])


def check_floors(floors: Floors, suite: Suite, limit: int | None = None) -> None:
    """Refuse floors measured on another suite version, or that gate a dimension the suite cannot score."""
    if floors.suite_version and floors.suite_version != suite.version:
        raise EvalError(
            f"{floors.path}: floors were set on suite {floors.suite_version!r} but the suite is {suite.version!r}; "
            "re-run edge-eval --set-floors on the dense model with this suite"
        )
    have = covered(_limited(suite, limit))
    missing = [d for d in floors.floors if d in DIMENSIONS and d != "ppl_retention" and d not in have]
    if missing:
        raise EvalError(f"{floors.path}: floors for {missing} but the suite has no cases for them; remove those floors")


def evaluate_bundle(
    bundle_dir: str | Path,
    suite: Suite,
    floors: Floors | None = None,
    config: EvalConfig = EvalConfig(),
    only: Sequence[str] | None = None,
    reuse: BundleEval | None = None,
) -> BundleEval:
    """Score every variant (or those in `only`, plus the dense reference) and gate them on `floors`.

    `reuse`: an earlier evaluation with the same suite and config (e.g. the dense run that
    set the floors) whose variants are taken as they are instead of being scored again.
    Raises EvalError / VariantError / BundleError before any scoring if the bundle, the suite or the
    floors cannot work together. Writes nothing.
    """
    manifest, tok = open_bundle(bundle_dir)
    ref = reference_variant(manifest)
    if floors is not None:
        check_floors(floors, suite, config.limit)
    names = list(manifest.names)
    if only is not None:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise VariantError(f"unknown variants {unknown}; this bundle has {names}")
        names = [n for n in names if n in only or n == ref.name]
    chosen = replace(manifest, variants=tuple(manifest.variant(n) for n in names))
    open_variants(bundle_dir, chosen, config.threads)
    windows = perplexity_windows(tok, config.windows, config.window)
    stops = stop_ids(manifest, tok)
    use_manifest_cost = all(v.cost.measured for v in chosen.variants)

    if reuse is not None and (reuse.suite.version != suite.version or reuse.config != config):
        raise EvalError("reuse needs an evaluation with the same suite version and config")
    done = {v.name: v for v in reuse.variants} if reuse is not None else {}
    relative = ("ppl_retention", "latency", "size")

    raw: list[tuple[Variant, dict[str, float], float, tuple[CaseResult, ...], float, float]] = []
    for v in _progress(chosen.variants, desc="variants", disable=not config.progress):
        if v.name in done:
            ev = done[v.name]
            absolute = {k: x for k, x in ev.scores.items() if k not in relative}
            raw.append((v, absolute, ev.perplexity, ev.cases, ev.latency_ms, ev.seconds))
            continue
        t = time.perf_counter()
        model = OrtModel(Path(bundle_dir) / v.onnx, config.threads, v.name, v.extra.get("storage"), v.quantization != "none")
        scores, ppl, results = score_variant(
            model, tok, suite, windows, chat_template=manifest.model.chat_template, stop=stops, config=config, name=v.name
        )
        if use_manifest_cost:
            ms = _manifest_ms(v, config)
        else:
            ms = model.time_request(config.latency_prompt, config.latency_new, config.latency_repeats, manifest.model.vocab_size)
        del model
        raw.append((v, scores, ppl, results, ms, time.perf_counter() - t))
        log.info("%s: %s ppl=%.2f (%.0f s)", v.name, {k: round(x, 3) for k, x in scores.items()}, ppl, raw[-1][-1])

    dense = next(r for r in raw if r[0].name == ref.name)
    evals = []
    for v, scores, ppl, results, ms, secs in raw:
        full = dict(scores)
        full["ppl_retention"] = min(1.0, dense[2] / ppl) if math.isfinite(ppl) and ppl > 0 else 0.0
        full["latency"] = ms / dense[4]
        full["size"] = v.file_bytes / ref.file_bytes if ref.file_bytes > 0 else 1.0
        full = {k: round(x, 4) for k, x in full.items()}
        g = gate(full, floors) if floors is not None else Gate()
        evals.append(VariantEval(v.name, full, ppl, results, choice_accuracy(results), ms, v.file_bytes, g, secs))
    return BundleEval(
        str(bundle_dir), manifest, suite, config, tuple(evals), ref.name, floors,
        "manifest" if use_manifest_cost else "edge-eval", int(windows.size),
    )


def _manifest_ms(v: Variant, config: EvalConfig) -> float:
    assert v.cost.prefill_ms_per_token is not None and v.cost.decode_ms_per_token is not None
    return v.cost.prefill_ms_per_token * config.latency_prompt + v.cost.decode_ms_per_token * config.latency_new


def apply_to_manifest(bundle_dir: str | Path, result: BundleEval) -> Manifest:
    """Write each evaluated variant's quality and gate into the manifest, atomically.

    The manifest is read again just before writing, so keys another tool changed meanwhile
    (cost, parity, the controller) survive; only `quality` and `gate` are replaced.
    """
    manifest = read_manifest(bundle_dir)
    for ev in result.variants:
        try:
            old = manifest.variant(ev.name)
        except VariantError as e:
            raise EvalError(f"variant {ev.name!r} left the manifest while it was being evaluated; evaluate again") from e
        quality = Quality(
            perplexity=_finite(ev.perplexity),
            scores=dict(ev.scores),
            extra={**old.quality.extra, "suite_version": result.suite.version,
                   "choice_metric": result.config.choice_metric, "heldout_tokens": result.tokens},
        )
        manifest = manifest.replace_variant(replace(old, quality=quality, gate=ev.gate if result.floors else old.gate))
    if result.floors is not None and result.floors.tiers:  # the runtime reads which tiers the gate recorded
        manifest = replace(manifest, extra={**manifest.extra, "tiers": list(result.floors.tiers)})
    write_manifest(bundle_dir, manifest)
    return manifest


def floors_from_dense(
    bundle_dir: str | Path, suite: Suite, config: EvalConfig = EvalConfig(), rule: FloorRule | None = None,
    previous: Floors | None = None,
) -> tuple[Floors, BundleEval]:
    """Evaluate the dense variant alone and derive floors from it (never from a pruned variant)."""
    if config.limit is not None:
        raise EvalError("floors need the full suite: drop --limit when setting floors")
    manifest, _ = open_bundle(bundle_dir)
    ref = reference_variant(manifest)
    result = evaluate_bundle(bundle_dir, suite, None, config, only=[ref.name])
    dense = result.variant(ref.name)
    counts = covered(suite.cases)
    chance = {s: float(np.mean([c.chance for c in suite.slice(s)])) for s in SLICES if suite.slice(s)}
    floors = set_floors(
        dense.scores, counts, chance, rule or FloorRule(), suite_version=suite.version, model=manifest.model.source, previous=previous
    )
    return floors, result


FAILED = "(failed)"  # pseudo-variant: requests the system did not serve


def profile_mixes(
    bundle_dir: str | Path, profiles: Sequence[str], controller: str = "rule", seed: int | None = None,
    tiered: bool = False,
) -> dict[str, dict[str, float]]:
    """Share of requests each variant served when `edge-sim` replays each profile with `controller`.

    Requests that failed (dropped, errored) are the share of the pseudo-variant `FAILED`, which
    delivers no quality. With `tiered`, each tier the replay ran under adds a mix
    `"<profile>@<tier>"` of the requests served under it (for `gate_system`'s `tiers`).
    """
    from edge_runtime.sim.cli import simulate

    out: dict[str, dict[str, float]] = {}
    for prof in profiles:
        r = simulate(bundle_dir, prof, controller, seed=seed, record=False)
        failed = r.failed / r.requests if r.requests else 0.0
        out[r.profile] = {**{k: v * (1.0 - failed) for k, v in r.variant_share.items()}, FAILED: failed}
        if tiered:
            for tier, share in r.tier_share.items():
                out[f"{r.profile}@{tier}"] = dict(share)
    return out


def gate_system(manifest: Manifest, mixes: dict[str, dict[str, float]], floors: Floors,
                tiers: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """Delivered per-slice quality and its gate for each profile's variant mix (scores from the manifest).

    `tiers` (mix name -> tier) holds those mixes to their tier's floors (`harness.floors.gate_profiles`).
    """
    from harness.floors import delivered_quality, gate_profiles

    scores = manifest.slice_scores()
    if not scores:
        raise EvalError("the manifest has no scores yet; run edge-eval --bundle DIR first")
    scores[FAILED] = dict.fromkeys(SLICES, 0.0)
    delivered = {prof: delivered_quality(scores, {k: v for k, v in mix.items() if v > 0}) for prof, mix in mixes.items()}
    gates = gate_profiles(delivered, floors, tiers)
    return {
        prof: {"mix": {k: round(v, 4) for k, v in mixes[prof].items()},
               "delivered": {k: round(x, 4) for k, x in delivered[prof].items()},
               "tier": (tiers or {}).get(prof),
               "floors": _system_floors(floors, prof, tiers), "gate": {"status": g.status, "failed": list(g.failed)}}
        for prof, g in gates.items()
    }


def _system_floors(floors: Floors, prof: str, tiers: dict[str, str] | None) -> dict[str, float]:
    tier = (tiers or {}).get(prof)
    if tier is not None and floors.tiers:
        return {s: f for s, f in floors.tier(tier).items() if s in SLICES}
    return floors.profile(prof)


__all__ = [
    "BundleEval", "EdgeError", "EvalConfig", "OrtModel", "VariantEval", "apply_to_manifest", "check_floors",
    "evaluate_bundle", "floors_from_dense", "gate_system", "open_bundle", "profile_mixes", "reference_variant",
    "score_variant",
]
