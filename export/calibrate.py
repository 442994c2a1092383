"""Layer-by-layer calibration of Llama-family decoders (Llama, Mistral, Qwen2).

The engine captures the inputs of decoder layer 0 once, then walks the layers. For each
layer it runs the calibration batches through that layer alone (in mini-batches), with
forward hooks on its Linear modules that accumulate input statistics, hands the layer and
its statistics to a callback (the pruner), and produces the next layer's inputs:

* sequential (the default for pruning): the possibly modified layer is run again, so layer
  `i + 1` is calibrated on the activations of the already-pruned layers `0..i`;
* one-pass: the outputs of the statistics pass (the dense layer) are used, which costs one
  forward per layer instead of two.

Only one layer's activations are alive at a time (one [samples, seq, hidden] fp32 buffer:
mini-batches are independent, so each one's outputs overwrite its inputs), so memory grows
with one layer, not with the depth.

Statistics are per Linear *input*: q/k/v share `attn_in`, gate/up share `mlp_in`, and
o_proj and down_proj have their own (`o_in`, `down_in`). Each is collected at most once
per layer, and only the kinds a caller asks for:

* `sq`   Σ x²  per input column          [in]      (Wanda's ‖X_j‖₂, FLAP's fluctuation)
* `sum`  Σ x   per input column          [in]      (means, for bias compensation)
* `xtx`  Σ x xᵀ                           [in, in]  (SparseGPT's Hessian, least squares)
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from edge_runtime.errors import ExportError
from export.memory import PeakRSS

log = logging.getLogger(__name__)

# Linear (path inside a decoder layer) -> the input it reads. Linears that share an input
# share its statistics.
LINEAR_INPUTS: dict[str, str] = {
    "self_attn.q_proj": "attn_in",
    "self_attn.k_proj": "attn_in",
    "self_attn.v_proj": "attn_in",
    "self_attn.o_proj": "o_in",
    "mlp.gate_proj": "mlp_in",
    "mlp.up_proj": "mlp_in",
    "mlp.down_proj": "down_in",
}
# input -> the one Linear whose forward hook records it
HOOKED: dict[str, str] = {"attn_in": "self_attn.q_proj", "o_in": "self_attn.o_proj",
                          "mlp_in": "mlp.gate_proj", "down_in": "mlp.down_proj"}
STAT_KINDS = ("sq", "sum", "xtx")

Needs = Mapping[str, frozenset[str]]  # input name -> statistic kinds


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layers of a *ForCausalLM (`model.model.layers`)."""
    try:
        layers = model.model.layers
    except AttributeError as e:
        raise ExportError(
            f"{type(model).__name__} has no model.layers: only Llama-family decoders "
            "(LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM) can be calibrated"
        ) from e
    return layers


def layer_linears(layer: nn.Module) -> dict[str, nn.Linear]:
    """The seven decoder Linears of one layer, by path (`self_attn.q_proj`, ...)."""
    out = {}
    for path in LINEAR_INPUTS:
        mod = layer.get_submodule(path)
        if not isinstance(mod, nn.Linear):
            raise ExportError(f"{path} is a {type(mod).__name__}, not nn.Linear: unsupported layer layout")
        out[path] = mod
    return out


def needs_for_all(kinds: frozenset[str]) -> dict[str, frozenset[str]]:
    """The same statistic kinds on every input."""
    return {name: kinds for name in HOOKED}


def merge_needs(*needs: Needs) -> dict[str, frozenset[str]]:
    """The union of several needs."""
    out: dict[str, frozenset[str]] = {}
    for n in needs:
        for k, v in n.items():
            out[k] = out.get(k, frozenset()) | v
    return {k: v for k, v in out.items() if v}


# --------------------------------------------------------------------------- statistics


@dataclass
class InputStats:
    """Running statistics of one Linear input over the calibration tokens."""

    kinds: frozenset[str]
    n: int = 0  # tokens seen
    sq: torch.Tensor | None = None  # [in]      Σ x²
    sum: torch.Tensor | None = None  # [in]     Σ x
    xtx: torch.Tensor | None = None  # [in, in] Σ x xᵀ
    packed: torch.Tensor | None = None  # [in (in + 1) / 2] its upper triangle, once `pack`ed

    def add(self, x: torch.Tensor) -> None:
        """Accumulate a [tokens, in] batch."""
        x = x.detach().float()
        d = x.shape[-1]
        if self.n == 0:
            self.sum = torch.zeros(d) if "sum" in self.kinds else None
            self.xtx = torch.zeros(d, d) if "xtx" in self.kinds else None
            self.sq = torch.zeros(d) if "sq" in self.kinds and self.xtx is None else None
        self.n += x.shape[0]
        if self.xtx is not None:
            self.xtx.addmm_(x.T, x)  # the diagonal is Σ x²: no separate pass
        elif self.sq is not None:
            self.sq.add_((x * x).sum(0))
        if self.sum is not None:
            self.sum.add_(x.sum(0))

    def pack(self) -> None:
        """Keep Σ x xᵀ as its upper triangle: half the memory while it waits to be used."""
        if self.xtx is not None:
            d = self.xtx.shape[0]
            i, j = torch.triu_indices(d, d)
            self.packed, self.xtx = self.xtx[i, j], None

    def _full_xtx(self) -> torch.Tensor | None:
        if self.xtx is not None or self.packed is None:
            return self.xtx
        d = int((math.isqrt(8 * self.packed.numel() + 1) - 1) // 2)
        i, j = torch.triu_indices(d, d)
        full = torch.zeros(d, d)
        full[i, j] = self.packed
        full[j, i] = self.packed
        return full

    def _need(self, what: str, kind: str) -> torch.Tensor:
        t = self._full_xtx() if kind == "xtx" else self.sum if kind == "sum" else None
        if kind == "sq":
            if self.packed is not None:  # the diagonal sits at the start of every packed row
                d = int((math.isqrt(8 * self.packed.numel() + 1) - 1) // 2)
                starts = torch.arange(d) * d - torch.arange(d) * (torch.arange(d) - 1) // 2
                t = self.packed[starts].clone()
            else:
                t = torch.diagonal(self.xtx).clone() if self.xtx is not None else self.sq
        if t is None or self.n == 0:
            raise ExportError(f"statistic {what!r} needs {kind!r}, which this calibration did not collect")
        return t

    @property
    def norm(self) -> torch.Tensor:
        """‖X_j‖₂ per input column [in] (Wanda)."""
        return self._need("norm", "sq").sqrt()

    @property
    def mean(self) -> torch.Tensor:
        """Mean per input column [in]."""
        return self._need("mean", "sum") / self.n

    @property
    def var(self) -> torch.Tensor:
        """Variance per input column across tokens [in] (FLAP's fluctuation)."""
        m = self.mean
        return (self._need("var", "sq") / self.n - m * m).clamp_min(0)

    @property
    def hessian(self) -> torch.Tensor:
        """E[x xᵀ] [in, in] (SparseGPT's layer Hessian up to a factor 2)."""
        return self._need("hessian", "xtx") / self.n

    @property
    def cov(self) -> torch.Tensor:
        """Covariance E[(x - μ)(x - μ)ᵀ] [in, in] (least-squares reconstruction with a bias)."""
        m = self.mean
        return self._need("cov", "xtx") / self.n - torch.outer(m, m)


@dataclass
class LayerStats:
    """Statistics of one decoder layer's Linear inputs."""

    inputs: dict[str, InputStats] = field(default_factory=dict)
    residual: float = 0.0  # E‖h‖² of the layer's input (the residual stream), per token

    def of(self, linear_path: str) -> InputStats:
        """The statistics of the input that `linear_path` (e.g. `mlp.up_proj`) reads."""
        return self.inputs[LINEAR_INPUTS[linear_path]]

    def __getitem__(self, input_name: str) -> InputStats:
        return self.inputs[input_name]

    def covers(self, needs: Needs) -> bool:
        """Whether every kind in `needs` was collected."""
        for name, kinds in needs.items():
            st = self.inputs.get(name)
            if st is None or st.n == 0:
                return False
            have = set(st.kinds) | ({"sq"} if "xtx" in st.kinds else set())
            if not set(kinds) <= have:
                return False
        return True


@dataclass
class DenseStats:
    """Per-layer statistics of the dense model (one pass), shareable between variants.

    Collect once with `collect_stats` and hand to several `prune_model` calls: one-pass
    variants then prune without touching the calibration data again.
    """

    layers: list[LayerStats]
    samples: int
    seq_len: int
    needs: dict[str, frozenset[str]]
    seconds: float
    peak_rss_mb: float


# --------------------------------------------------------------------------- engine


class _Stop(Exception):
    """Raised by the layer-0 hook: the rest of the model need not run."""


@contextmanager
def _hooks(layer: nn.Module, needs: Needs, stats: LayerStats) -> Iterator[None]:
    handles = []
    for name, kinds in needs.items():
        if not kinds:
            continue
        st = stats.inputs.setdefault(name, InputStats(frozenset(kinds)))

        def hook(_mod: nn.Module, args: tuple[Any, ...], _out: Any, st: InputStats = st) -> None:
            x = args[0]
            st.add(x.reshape(-1, x.shape[-1]))  # [B*L, in]

        handles.append(layer.get_submodule(HOOKED[name]).register_forward_hook(hook))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


# callback(index, layer, stats): may modify the layer in place
LayerCallback = Callable[[int, nn.Module, LayerStats], None]


@dataclass
class CalibrationRun:
    """What one walk through the layers cost."""

    seconds: float
    peak_rss_mb: float
    samples: int
    seq_len: int
    layer_forwards: int  # layer x batch-of-all-samples forwards (2 per layer when sequential)


class Calibrator:
    """Walks a decoder's layers with calibration batches (see the module docstring).

    Args:
        model: a LlamaForCausalLM, MistralForCausalLM or Qwen2ForCausalLM in eval mode.
        calib_ids: calibration token windows [n, L] int64.
        batch_size: sequences per mini-batch through one layer; memory of one layer's
            intermediates grows with it, speed barely does beyond 4-8.
    """

    def __init__(self, model: nn.Module, calib_ids: Any, batch_size: int = 8) -> None:
        ids = torch.as_tensor(calib_ids)
        if ids.ndim != 2 or ids.dtype not in (torch.int64, torch.int32) or ids.shape[1] < 2:
            raise ExportError(
                f"calibration ids must be [n, L] integers with L >= 2, got {tuple(ids.shape)} {ids.dtype}"
            )
        if batch_size < 1:
            raise ExportError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.ids = ids.long()  # [n, L]
        self.batch_size = batch_size
        self.layers = decoder_layers(model)

    @property
    def samples(self) -> int:
        return self.ids.shape[0]

    @property
    def seq_len(self) -> int:
        return self.ids.shape[1]

    def _batches(self) -> Iterator[slice]:
        for i in range(0, self.samples, self.batch_size):
            yield slice(i, min(i + self.batch_size, self.samples))

    @torch.no_grad()
    def _capture(self) -> tuple[torch.Tensor, list[dict[str, Any]]]:
        """Layer 0's inputs [n, L, H] and each layer's keyword arguments (mask, rotary...)."""
        kwargs: list[dict[str, Any] | None] = [None] * len(self.layers)
        handles = []

        def record(i: int) -> Callable[..., None]:
            def pre(_mod: nn.Module, args: tuple[Any, ...], kw: dict[str, Any]) -> None:
                if kwargs[i] is None:
                    kwargs[i] = {k: v for k, v in kw.items() if k != "hidden_states"}
            return pre

        # One short forward records what every layer is called with (the attention mask of a
        # sliding-window layer differs from a full one); batch 1 broadcasts over mini-batches.
        for i, layer in enumerate(self.layers):
            handles.append(layer.register_forward_pre_hook(record(i), with_kwargs=True))
        try:
            self.model.model(input_ids=self.ids[:1], use_cache=False)
        finally:
            for h in handles:
                h.remove()
        for kw in kwargs:
            assert kw is not None
            kw["use_cache"] = False
            for key in ("cache", "past_key_values", "past_key_value"):
                kw.pop(key, None)

        hidden = self.model.config.hidden_size
        x = torch.empty(self.samples, self.seq_len, hidden)  # [n, L, H]

        def grab(_mod: nn.Module, args: tuple[Any, ...], kw: dict[str, Any]) -> None:
            h = args[0] if args else kw["hidden_states"]
            x[grab.sl] = h.float()  # type: ignore[attr-defined]
            raise _Stop

        handle = self.layers[0].register_forward_pre_hook(grab, with_kwargs=True)
        try:
            for sl in self._batches():
                grab.sl = sl  # type: ignore[attr-defined]
                try:
                    self.model.model(input_ids=self.ids[sl], use_cache=False)
                except _Stop:
                    pass
        finally:
            handle.remove()
        return x, kwargs  # type: ignore[return-value]

    def _forward(self, layer: nn.Module, kw: dict[str, Any], x: torch.Tensor, write: bool) -> None:
        """Run every mini-batch through `layer`; with `write`, outputs replace inputs in `x`.

        Mini-batches are independent, so one buffer serves as input and output.
        """
        for sl in self._batches():
            out = layer(x[sl], **kw)
            if isinstance(out, tuple):
                out = out[0]
            if write:
                x[sl] = out

    def _energy(self, x: torch.Tensor) -> float:
        """Mean squared norm per token of `x` [n, L, H], batch by batch (no full-size temporary)."""
        total = sum(float(x[sl].double().pow(2).sum()) for sl in self._batches())
        return total / (x.shape[0] * x.shape[1])

    def run(
        self,
        needs: Needs,
        on_layer: LayerCallback,
        sequential: bool = True,
        desc: str = "calibrate",
        progress: bool | None = None,
    ) -> CalibrationRun:
        """Walk every layer: collect `needs`, call `on_layer`, propagate.

        Args:
            needs: statistic kinds per input (`{"down_in": {"sum", "xtx"}}`).
            on_layer: called as `on_layer(index, layer, stats)` after the statistics pass;
                it may change the layer (prune it).
            sequential: re-run the layer after `on_layer`, so the next one sees pruned
                activations (two forwards per layer); False propagates the statistics
                pass's outputs, those of the layer as it was (one forward).
            desc: progress-bar label.
            progress: show a tqdm bar (None: only on a terminal).
        """
        for name, kinds in needs.items():
            if name not in HOOKED or not set(kinds) <= set(STAT_KINDS):
                raise ExportError(f"unknown statistic {name}: {sorted(kinds)}; inputs {list(HOOKED)}, kinds {STAT_KINDS}")
        t0 = time.perf_counter()
        forwards = 0
        # no_grad, not inference_mode: weights a pruner creates here must stay ordinary tensors
        # (the ONNX exporter and in-place edits refuse inference tensors)
        with PeakRSS() as rss, torch.no_grad():
            x, kwargs = self._capture()  # [n, L, H]: the one activation buffer
            bar = tqdm(range(len(self.layers)), desc=desc, unit="layer", disable=None if progress is None else not progress, leave=False)
            for i in bar:
                layer = self.layers[i]
                stats = LayerStats(residual=self._energy(x))
                # sequential: keep the inputs for the re-run; one pass: the dense outputs
                # are the next inputs whatever the callback does
                with _hooks(layer, needs, stats):
                    self._forward(layer, kwargs[i], x, write=not sequential)
                forwards += 1
                on_layer(i, layer, stats)
                del stats
                if sequential:
                    self._forward(layer, kwargs[i], x, write=True)
                    forwards += 1
                rss.sample()
            bar.close()
            del x
        seconds = time.perf_counter() - t0
        log.info("%s: %d layers, %d x %d tokens, %.1f s, peak RSS %.0f MB",
                 desc, len(self.layers), self.samples, self.seq_len, seconds, rss.peak_mb)
        return CalibrationRun(seconds, rss.peak_mb, self.samples, self.seq_len, forwards)


def collect_stats(
    model: nn.Module,
    calib_ids: Any,
    needs: Needs,
    batch_size: int = 8,
    progress: bool | None = None,
) -> DenseStats:
    """One pass over the dense model keeping every layer's statistics (see `DenseStats`).

    Memory: `xtx` is kept as an upper triangle, (3·H² + I²)·2 bytes per layer, about
    7 MB for SmolLM2-135M (200 MB for its 30 layers).
    """
    cal = Calibrator(model, calib_ids, batch_size)
    kept: list[LayerStats] = []

    def keep(_i: int, _layer: nn.Module, stats: LayerStats) -> None:
        for st in stats.inputs.values():
            st.pack()
        kept.append(stats)

    run = cal.run(needs, keep, sequential=False, desc="dense statistics", progress=progress)
    return DenseStats(kept, cal.samples, cal.seq_len, merge_needs(needs), run.seconds, run.peak_rss_mb)
