"""Pruning a Llama-family decoder: the recipe (`PruneConfig`), the methods (`PRUNERS`, in export/pruners.py), and
`prune_model`, which the exporter calls once per variant.

"Sparsity" is the share of decoder Linear weights (q, k, v, o, gate, up, down) that are
zero or removed; embeddings, lm_head and norms are never touched. Unstructured methods
reach the level exactly (to the weight); structured pruning removes whole neurons and
heads, so it lands within half a neuron (3·hidden weights) of the level.

Data flow (see export/calibrate.py for the engine):

1. *plan*: how many weights each Linear (unstructured) or units each layer (structured)
   lose. Uniform plans need no data; OWL and the global structured allocation score every
   layer first, on the dense model (a pre-pass over `plan_samples` windows, or the shared
   `DenseStats` when given).
2. *prune*: walk the layers; each is pruned with its own statistics, gathered on the
   already-pruned model's activations when `sequential`, else on the dense model's.

Sharing work between variants: `collect_stats` once, then `prune_model(..., stats=dense)`
for every one-pass (`sequential=False`) variant: each then costs seconds, not passes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from edge_runtime.errors import RecipeError
from export import structured as st
from export.calibrate import (
    Calibrator,
    DenseStats,
    LayerStats,
    Needs,
    collect_stats,
    decoder_layers,
    layer_linears,
    merge_needs,
)
from export.memory import PeakRSS, max_rss_mb
from export.pruners import PRUNERS, Pruner
from export.recipe import Recipe

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class PruneConfig:
    """One pruning recipe. Validated on construction; bad values raise `RecipeError`.

    The defaults are the settings measured best on SmolLM2-135M (see docs in the module
    and the branch's report): one pass over 128 x 512 calibration tokens, row-wise
    SparseGPT, and MLP-only structured pruning with least-squares compensation.
    """

    method: str = "sparsegpt"  # a key of PRUNERS
    level: float = 0.5  # share of decoder Linear weights zeroed / removed, in (0, 1)
    pattern: str | None = None  # "N:M": keep N of every M consecutive inputs; level must be (M-N)/M
    # Calibration. Sequential (each layer sees the pruned layers' outputs) costs 2 forwards
    # per layer instead of 1 and measured no better on SmolLM2-135M (SparseGPT-50 31.19 vs
    # 31.21, structured-25 27.24 vs 27.27); one pass also lets variants share `DenseStats`.
    sequential: bool = False
    samples: int = 128  # calibration windows; cost is linear (32 -> 128: SparseGPT-50 31.2 -> 30.7)
    seq_len: int = 512  # tokens per calibration window
    batch_size: int = 8  # windows per forward through one layer (memory of one layer's intermediates)
    # OWL: outlier-weighted layerwise sparsity (unstructured only; hurt at 50% on SmolLM2)
    owl: bool = False  # per-layer levels from the share of outlier Wanda scores
    owl_m: float = 5.0  # an outlier scores above owl_m x its layer's mean score
    owl_lambda: float = 0.08  # layer levels stay within level +- owl_lambda
    plan_samples: int = 16  # windows of the dense pre-pass that plans OWL / global allocation
    bias_correction: bool = False  # unstructured: add the pruned weights' mean contribution (W - W')μ as a bias
    # SparseGPT
    block: int = 128  # columns per lazy-update block (64 and 512 measured worse)
    damp: float = 0.01  # Hessian dampening, share of its mean diagonal (also used by lstsq and obs)
    row_wise: bool = True  # choose each block's mask within output rows (31.2 vs 32.7 across the matrix)
    # structured
    attn_share: float | None = 0.0  # share of removed weights taken from heads; None: the scores decide
    allocation: str = "uniform"  # "uniform" | "global" (least error relative to the residual) | "standardized" (FLAP)
    head_mode: str = "query"  # "query": queries leave evenly per group; "group": a KV head leaves with its queries
    score: str = "flap"  # "flap" | "wanda-sp" | "magnitude" | "obs" (greedy least-squares error)
    compensation: str = "lstsq"  # "lstsq" (refit the output projection) | "bias" (FLAP) | "none"
    min_keep: float = 0.1  # share of MLP neurons every layer keeps

    def __post_init__(self) -> None:
        if self.method not in PRUNERS:
            raise RecipeError(f"unknown pruning method {self.method!r}; known: {', '.join(PRUNERS)}")
        if isinstance(self.level, bool) or not isinstance(self.level, (int, float)) or not 0 < self.level < 1:
            raise RecipeError(f"pruning level must be in (0, 1), got {self.level!r}; write 0.5 for 50%")
        structured = PRUNERS[self.method].structured
        if self.pattern is not None:
            n, m = self.nm or (0, 0)
            if structured:
                raise RecipeError(f"pattern {self.pattern!r} applies to unstructured methods, not {self.method!r}")
            if self.owl:
                raise RecipeError(f"pattern {self.pattern!r} fixes every layer's level: drop owl=true")
            if abs(self.level - (m - n) / m) > 1e-9:
                raise RecipeError(
                    f"pattern {self.pattern!r} prunes {(m - n) / m:g} of the weights, but level is {self.level!r}; "
                    f"set level = {(m - n) / m:g}"
                )
        if self.bias_correction and structured:
            raise RecipeError("bias_correction applies to unstructured methods; structured uses compensation=")
        if self.owl and structured:
            raise RecipeError("owl applies to unstructured methods; use allocation='global' for structured")
        for name, lo in (("samples", 1), ("seq_len", 2), ("batch_size", 1), ("plan_samples", 1), ("block", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise RecipeError(f"{name} must be an integer >= {lo}, got {v!r}")
        for name, lo, hi in (("owl_lambda", 0.0, 0.5), ("damp", 0.0, 10.0), ("min_keep", 0.0, 1.0)):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not lo <= v <= hi:
                raise RecipeError(f"{name} must be in [{lo}, {hi}], got {v!r}")
        if self.owl_m <= 0:
            raise RecipeError(f"owl_m must be > 0, got {self.owl_m!r}")
        for name, allowed in (("head_mode", st.HEAD_MODES), ("score", st.SCORES),
                              ("compensation", st.COMPENSATIONS), ("allocation", st.ALLOCATIONS)):
            if getattr(self, name) not in allowed:
                raise RecipeError(f"unknown {name} {getattr(self, name)!r}; known: {', '.join(allowed)}")
        if self.attn_share is not None and not 0 <= self.attn_share <= 1:
            raise RecipeError(f"attn_share must be in [0, 1] or None, got {self.attn_share!r}")
        if structured and self.attn_share is None and self.allocation == "uniform":
            raise RecipeError("allocation='uniform' needs attn_share (e.g. 0.2); attn_share=None lets global scores decide")
        if structured and self.score == "magnitude" and self.compensation != "none":
            raise RecipeError(f"compensation {self.compensation!r} needs data; with score='magnitude' use compensation='none'")

    @property
    def nm(self) -> tuple[int, int] | None:
        """The pattern as (N, M), or None."""
        if self.pattern is None:
            return None
        try:
            n, m = (int(x) for x in self.pattern.split(":"))
        except ValueError as e:
            raise RecipeError(f"pattern must look like '2:4' (keep N of every M), got {self.pattern!r}") from e
        if not 0 < n < m:
            raise RecipeError(f"pattern {self.pattern!r} needs 0 < N < M, e.g. '2:4'")
        return n, m

    @property
    def structured(self) -> bool:
        return PRUNERS[self.method].structured

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PruneConfig:
        """Build from a recipe table; unknown keys raise `RecipeError` naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise RecipeError(f"unknown pruning keys {unknown}; known: {', '.join(sorted(known))}")
        return cls(**d)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LayerReport:
    """One decoder layer after pruning."""

    sparsity: float  # share of this layer's dense Linear weights zero or removed
    heads: int
    kv_heads: int
    intermediate: int
    shapes: dict[str, list[int]]  # Linear path -> [out, in]
    level: float | None = None  # planned level (OWL) or None


@dataclass
class PruneReport:
    """What `prune_model` did and what it cost."""

    method: str
    level: float  # requested
    sparsity: float  # achieved: share of dense decoder Linear weights now zero or removed
    structured: bool
    params: int  # all parameters (tied embedding once)
    nonzero_params: int
    decoder_weights: int  # decoder Linear weights now (the denominator of sparsity is the dense count)
    decoder_weights_dense: int
    seconds: float  # wall clock
    cpu_seconds: float  # process CPU time (user + system, all threads): comparable on a busy machine
    peak_rss_mb: float  # process RSS, sampled while pruning (model included)
    rss_before_mb: float  # process RSS when pruning began (the model, the loader's leftovers)
    calibration: dict[str, Any]  # samples, seq_len, layer forwards, seconds
    layers: list[LayerReport] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- recipe

# What a recipe (export/recipe.py; the default one is export/recipes/default.toml) asks
# of the pruners: one PruneConfig per pruned fp32 variant, and the statistics that one
# shared calibration pass must gather for them.


def prune_configs(recipe: Recipe) -> dict[str, PruneConfig]:
    """The pruning configuration of every pruned fp32 variant (raises RecipeError on bad options)."""
    configs = {}
    for v in recipe.variants:
        if v.pruned and v.parent is None:
            try:
                configs[v.name] = PruneConfig.from_dict(
                    {
                        "method": v.method,
                        "level": v.sparsity,
                        "pattern": v.pattern,
                        "samples": recipe.calibration_samples,
                        "seq_len": recipe.calibration_seq_len,
                        **v.options,
                    }
                )
            except RecipeError as e:
                raise RecipeError(f"variant {v.name!r}: {e}") from e
    return configs


def recipe_needs(cfgs: Iterable[PruneConfig]) -> dict[str, frozenset[str]]:
    """The statistics that one shared `collect_stats` pass must gather for `cfgs`.

    One-pass configs read their pruning and planning statistics from it, sequential ones
    only their planning statistics.
    """
    out: list[Needs] = []
    for cfg in cfgs:
        p = PRUNERS[cfg.method]
        out.append(p.plan_needs(cfg))
        if not cfg.sequential:
            out.append(p.needs(cfg))
    return merge_needs(*out)


# --------------------------------------------------------------------------- driver


def decoder_weight_count(model: nn.Module) -> int:
    """Weights of the decoder Linears (the denominator of sparsity)."""
    return sum(lin.weight.numel() for layer in decoder_layers(model) for lin in layer_linears(layer).values())


def _calib_ids(cfg: PruneConfig, calib_ids: Any, n: int) -> torch.Tensor:
    if calib_ids is None:
        raise RecipeError(f"method {cfg.method!r} needs calibration ids [samples, seq_len]; pass calib_ids")
    ids = torch.as_tensor(calib_ids)
    if ids.ndim != 2 or ids.shape[0] < n or ids.shape[1] < cfg.seq_len:
        raise RecipeError(
            f"calibration ids of shape {tuple(ids.shape)} are too small for samples={n}, seq_len={cfg.seq_len}; "
            "build them with export.corpus.calibration_windows(tokenizer, samples, seq_len)"
        )
    return ids[:n, : cfg.seq_len].long()


def _report_layers(model: nn.Module, dense: list[int], levels: list[float | None]) -> list[LayerReport]:
    out = []
    for i, layer in enumerate(decoder_layers(model)):
        lins = layer_linears(layer)
        nz = sum(int(torch.count_nonzero(lin.weight)) for lin in lins.values())
        s = st.attn_shape(layer)
        out.append(LayerReport(
            sparsity=1 - nz / dense[i], heads=s.heads, kv_heads=s.kv_heads,
            intermediate=layer.mlp.down_proj.in_features,
            shapes={p: list(lin.weight.shape) for p, lin in lins.items()}, level=levels[i],
        ))
    return out


@torch.no_grad()
def prune_model(
    model: nn.Module,
    cfg: PruneConfig,
    calib_ids: Any = None,
    stats: DenseStats | None = None,
    progress: bool | None = None,
) -> PruneReport:
    """Prune `model` in place following `cfg` and report what it became.

    Args:
        model: a LlamaForCausalLM / MistralForCausalLM / Qwen2ForCausalLM, fp32, eval mode.
        cfg: the recipe.
        calib_ids: calibration windows [n, L] int64 (n >= cfg.samples, L >= cfg.seq_len);
            not needed by plain magnitude pruning.
        stats: dense statistics from `collect_stats`, reused for the plan and, when
            `cfg.sequential` is False, for pruning itself (no calibration pass at all).
        progress: tqdm bars (None: only on a terminal).

    Returns:
        a `PruneReport`; the model's structured layers have smaller Linears.
    """
    pruner = PRUNERS[cfg.method]
    layers = list(decoder_layers(model))
    dense = [sum(lin.weight.numel() for lin in layer_linears(layer).values()) for layer in layers]
    needs = pruner.needs(cfg)
    t0, c0 = time.perf_counter(), time.process_time()
    calib: dict[str, Any] = {"samples": 0, "seq_len": 0, "layer_forwards": 0, "seconds": 0.0, "shared_stats": False}
    if stats is not None:
        _check_shared(stats, cfg, pruner, len(layers))
        calib.update(samples=stats.samples, seq_len=stats.seq_len, shared_stats=True)

    with PeakRSS() as rss:
        # 1. plan
        infos, one_pass_stats = _plan_infos(model, layers, pruner, cfg, calib_ids, stats, progress, calib)
        budgets = pruner.plan(layers, infos, cfg)
        levels = [None] * len(layers)
        if cfg.owl:
            levels = [sum(b.values()) / dense[i] for i, b in enumerate(budgets)]

        # 2. prune
        if not needs or one_pass_stats is not None:
            for i in tqdm(range(len(layers)), desc=f"prune {cfg.method}", unit="layer",
                          disable=None if progress is None else not progress, leave=False):
                layer_stats = one_pass_stats.layers[i] if one_pass_stats is not None and needs else None
                pruner.prune_layer(layers[i], layer_stats, budgets[i], cfg)
        else:
            cal = Calibrator(model, _calib_ids(cfg, calib_ids, cfg.samples), cfg.batch_size)

            def prune(i: int, layer: nn.Module, s: LayerStats) -> None:
                pruner.prune_layer(layer, s, budgets[i], cfg)

            run = cal.run(needs, prune, sequential=cfg.sequential, desc=f"prune {cfg.method}", progress=progress)
            calib.update(samples=cfg.samples, seq_len=cfg.seq_len, layer_forwards=run.layer_forwards,
                         seconds=run.seconds)

    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    dense_total = sum(dense)
    layer_reports = _report_layers(model, dense, levels)
    nonzero_dec = sum(int(torch.count_nonzero(lin.weight)) for layer in layers for lin in layer_linears(layer).values())
    params = sum(p.numel() for p in model.parameters())
    nonzero = sum(int(torch.count_nonzero(p)) for p in model.parameters())
    report = PruneReport(
        method=cfg.method, level=cfg.level, sparsity=1 - nonzero_dec / dense_total, structured=cfg.structured,
        params=params, nonzero_params=nonzero, decoder_weights=decoder_weight_count(model),
        decoder_weights_dense=dense_total, seconds=seconds, cpu_seconds=cpu_seconds, peak_rss_mb=rss.peak_mb, rss_before_mb=rss.start_mb,
        calibration=calib, layers=layer_reports,
    )
    log.info("%s level %.2f: sparsity %.4f, %d params, %.1f s, peak RSS %.0f MB (process max %.0f MB)",
             cfg.method, cfg.level, report.sparsity, params, seconds, report.peak_rss_mb, max_rss_mb())
    return report


def _check_shared(stats: DenseStats, cfg: PruneConfig, pruner: Pruner, n_layers: int) -> None:
    """Shared statistics must hold what `cfg` reads from them, for every layer."""
    have = LayerStats(stats.layers[0].inputs) if stats.layers else LayerStats()
    want = merge_needs(pruner.plan_needs(cfg), {} if cfg.sequential else pruner.needs(cfg))
    if not have.covers(want):
        raise RecipeError(
            f"the shared statistics hold {dict(stats.needs)} but {cfg.method!r} needs {want}; "
            "collect them with export.calibrate.collect_stats(model, ids, needs) including these"
        )
    if len(stats.layers) != n_layers:
        raise RecipeError(f"the shared statistics cover {len(stats.layers)} layers, the model has {n_layers}")


def _plan_infos(model: nn.Module, layers: list[nn.Module], pruner: Pruner, cfg: PruneConfig, calib_ids: Any,
                stats: DenseStats | None, progress: bool | None,
                calib: dict[str, Any]) -> tuple[list[Any], DenseStats | None]:
    """Each layer's summary for the plan, and the statistics a one-pass prune reads (if any).

    Updates `calib` with the calibration it ran.
    """
    needs, plan_needs = pruner.needs(cfg), pruner.plan_needs(cfg)
    one_pass_stats: DenseStats | None = stats if stats is not None and not cfg.sequential else None
    if not plan_needs:
        return [pruner.plan_info(layer, None, cfg) for layer in layers], one_pass_stats
    if stats is not None:
        return [pruner.plan_info(layer, stats.layers[i], cfg) for i, layer in enumerate(layers)], one_pass_stats
    if not cfg.sequential and needs:
        # one pass that serves both the plan and the pruning
        ids = _calib_ids(cfg, calib_ids, cfg.samples)
        one_pass_stats = collect_stats(model, ids, merge_needs(needs, plan_needs), cfg.batch_size, progress)
        calib.update(samples=cfg.samples, seq_len=cfg.seq_len, layer_forwards=len(layers),
                     seconds=one_pass_stats.seconds)
        return [pruner.plan_info(layer, one_pass_stats.layers[i], cfg) for i, layer in enumerate(layers)], one_pass_stats
    n = min(cfg.plan_samples, cfg.samples)
    cal = Calibrator(model, _calib_ids(cfg, calib_ids, n), cfg.batch_size)
    infos_d: dict[int, Any] = {}

    def summarize(i: int, layer: nn.Module, s: LayerStats) -> None:
        infos_d[i] = pruner.plan_info(layer, s, cfg)

    run = cal.run(plan_needs, summarize, sequential=False, desc=f"plan {cfg.method}", progress=progress)
    calib["plan"] = {"samples": n, "seq_len": cfg.seq_len, "seconds": run.seconds}
    return [infos_d[i] for i in range(len(layers))], one_pass_stats
