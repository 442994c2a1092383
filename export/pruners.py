"""The pruning methods (`PRUNERS`): for each, which statistics it reads, how it plans the
per-layer budgets, and how it prunes one layer. `export.prune.prune_model` drives them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from edge_runtime.errors import RecipeError
from export import structured as st
from export import unstructured as us
from export.calibrate import HOOKED, LINEAR_INPUTS, LayerStats, Needs, layer_linears, needs_for_all

if TYPE_CHECKING:
    from export.prune import PruneConfig


@dataclass(frozen=True)
class Pruner:
    """One method: which statistics it reads, how it plans, how it prunes a layer."""

    structured: bool
    needs: Callable[[PruneConfig], Needs]  # statistics the per-layer pruning reads
    plan_needs: Callable[[PruneConfig], Needs]  # statistics the plan reads (empty: no data)
    plan_info: Callable[[nn.Module, LayerStats | None, PruneConfig], Any]  # per-layer summary
    plan: Callable[[list[nn.Module], list[Any], PruneConfig], list[Any]]  # -> per-layer budget
    prune_layer: Callable[[nn.Module, LayerStats | None, Any, PruneConfig], None]


def _owl_needs(cfg: PruneConfig) -> Needs:
    return needs_for_all(frozenset({"sq"})) if cfg.owl else {}


def _wanda_layer_scores(layer: nn.Module, stats: LayerStats | None) -> list[torch.Tensor]:
    if stats is None:
        return [lin.weight.detach().abs() for lin in layer_linears(layer).values()]
    return [us.wanda_scores(lin.weight.detach(), stats.of(p).norm) for p, lin in layer_linears(layer).items()]


def _unstructured_info(layer: nn.Module, stats: LayerStats | None, cfg: PruneConfig) -> Any:
    sizes = {p: lin.weight.numel() for p, lin in layer_linears(layer).items()}
    ratio = us.outlier_ratio(_wanda_layer_scores(layer, stats), cfg.owl_m) if cfg.owl else None
    return sizes, ratio


def _unstructured_plan(layers: list[nn.Module], infos: list[Any], cfg: PruneConfig) -> list[Any]:
    """Exact zero counts per Linear: {path: count} per layer."""
    sizes = [s for s, _ in infos]
    total = sum(sum(s.values()) for s in sizes)
    if cfg.nm is not None:
        n, m = cfg.nm
        for i, s in enumerate(sizes):
            for p, numel in s.items():
                cols = numel // layer_linears(layers[i])[p].out_features
                if cols % m:
                    raise RecipeError(f"pattern {cfg.pattern!r} needs input widths divisible by {m}; layer {i} {p} has {cols}")
        return [{p: v * (m - n) // m for p, v in s.items()} for s in sizes]
    levels = us.owl_sparsities([r for _, r in infos], cfg.level, cfg.owl_lambda) if cfg.owl else [cfg.level] * len(infos)
    targets = {(i, p): levels[i] * v for i, s in enumerate(sizes) for p, v in s.items()}
    want = round(cfg.level * total)
    scale = want / max(sum(targets.values()), 1e-12)  # clipping may have moved the mean
    counts = us.exact_counts({k: min(v * scale, sizes[k[0]][k[1]]) for k, v in targets.items()}, want)
    return [{p: counts[(i, p)] for p in s} for i, s in enumerate(sizes)]


def _set_weight(lin: nn.Linear, w: torch.Tensor, stats: LayerStats | None, path: str, cfg: PruneConfig) -> None:
    """Store the pruned weight; with `bias_correction` absorb the mean error in the bias."""
    if cfg.bias_correction:
        assert stats is not None
        mu = stats.of(path).mean.double()  # [in]
        delta = ((lin.weight.detach().double() - w.double()) @ mu).to(lin.weight.dtype)  # [out]
        if lin.bias is None:
            lin.bias = nn.Parameter(delta, requires_grad=lin.weight.requires_grad)
        else:
            lin.bias.data += delta
    lin.weight.data.copy_(w)


def _mask_pruner(scores: Callable[[torch.Tensor, LayerStats | None, str], torch.Tensor]) -> Callable[..., None]:
    def prune_layer(layer: nn.Module, stats: LayerStats | None, counts: dict[str, int], cfg: PruneConfig) -> None:
        for path, lin in layer_linears(layer).items():
            w = lin.weight.detach()  # [out, in]
            s = scores(w, stats, path)
            mask = us.nm_mask(s, *cfg.nm) if cfg.nm is not None else us.row_mask(s, counts[path])
            _set_weight(lin, w.masked_fill(mask, 0.0), stats, path, cfg)
    return prune_layer


def _sparsegpt_layer(layer: nn.Module, stats: LayerStats | None, counts: dict[str, int], cfg: PruneConfig) -> None:
    assert stats is not None
    lins = layer_linears(layer)
    for name in HOOKED:  # the Linears reading one input share its Hessian: one solve
        paths = [p for p, i in LINEAR_INPUTS.items() if i == name]
        st_in = stats[name]
        # with bias correction the bias absorbs the mean error, so fit the covariance
        h = st_in.cov if cfg.bias_correction else st_in.hessian
        ws = us.sparsegpt([lins[p].weight for p in paths], h, [counts[p] for p in paths],
                          cfg.nm, cfg.block, cfg.damp, cfg.row_wise)
        for p, w in zip(paths, ws, strict=True):
            _set_weight(lins[p], w, stats, p, cfg)


def _structured_needs(cfg: PruneConfig) -> Needs:
    return st.needs(cfg.score, cfg.compensation)


def _structured_plan_needs(cfg: PruneConfig) -> Needs:
    return st.needs(cfg.score, "none") if cfg.allocation != "uniform" else {}


def _structured_info(layer: nn.Module, stats: LayerStats | None, cfg: PruneConfig) -> Any:
    inter = layer.mlp.down_proj.in_features
    return st.candidates(layer, stats, cfg.score, cfg.head_mode, st.check_min_neurons(inter, cfg.min_keep), cfg.damp)


def _structured_plan(layers: list[nn.Module], infos: list[Any], cfg: PruneConfig) -> list[Any]:
    total = sum(lin.weight.numel() for layer in layers for lin in layer_linears(layer).values())
    return st.allocate(infos, round(cfg.level * total), cfg.attn_share, cfg.allocation)


def _structured_layer(layer: nn.Module, stats: LayerStats | None, cut: st.LayerCut, cfg: PruneConfig) -> None:
    st.cut_layer(layer, cut, stats, cfg.score, cfg.head_mode, cfg.compensation, cfg.damp)


def _with_bias(kinds: set[str]) -> Callable[[PruneConfig], Needs]:
    def needs(cfg: PruneConfig) -> Needs:
        return needs_for_all(frozenset(kinds | ({"sum"} if cfg.bias_correction else set()))) if kinds or cfg.bias_correction else {}
    return needs


PRUNERS: dict[str, Pruner] = {
    "magnitude": Pruner(False, _with_bias(set()), _owl_needs, _unstructured_info, _unstructured_plan,
                        _mask_pruner(lambda w, s, p: us.magnitude_scores(w))),
    "wanda": Pruner(False, _with_bias({"sq"}), _owl_needs, _unstructured_info,
                    _unstructured_plan, _mask_pruner(lambda w, s, p: us.wanda_scores(w, s.of(p).norm))),
    "sparsegpt": Pruner(False, _with_bias({"xtx"}), _owl_needs, _unstructured_info,
                        _unstructured_plan, _sparsegpt_layer),
    "structured": Pruner(True, _structured_needs, _structured_plan_needs, _structured_info,
                         _structured_plan, _structured_layer),
}
