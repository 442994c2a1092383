"""The variants the runtime may run, loaded lazily and kept under a memory budget.

`VariantPool` owns one `VariantSession` + `Decoder` per loaded variant. A variant is
loaded the first time it is chosen (the load time is returned, so the request that paid
for it can report it); a switch to a loaded variant costs nothing. When a load would
take the estimated total over `memory_budget_mb`, the least recently used variants are
unloaded first.

What a variant is estimated to need (`estimate_mb`), decided from the manifest:
`cost.peak_rss_mb` when the exporter measured it, else the weights as they sit in
memory (4 bytes per stored parameter for unquantized variants, whose masked storage is
expanded at load; the file size for quantized ones), plus its KV cache at full context.

A variant may not run (`allowed` is False) when its evaluation gate failed (unless the
pool was opened with `allow_ungated`), when its estimate alone exceeds the budget, or
when it was fenced after failing at load or run time.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_runtime.bundle import Manifest, Variant
from edge_runtime.engine.session import Decoder, VariantSession
from edge_runtime.errors import BundleError, VariantError
from edge_runtime.metrics import Metrics

log = logging.getLogger(__name__)

MIB = 1 << 20


@dataclass
class Loaded:
    """A loaded variant."""

    index: int
    session: VariantSession
    decoder: Decoder
    load_s: float
    estimate_mb: float


class VariantPool:
    """Lazy, LRU, budgeted loading of a bundle's variants.

    Args:
        bundle_dir: the bundle.
        manifest: its manifest (files already checked).
        threads: intra-op threads per session (None: all cores).
        providers: onnxruntime execution providers in order of preference (None: auto).
        memory_budget_mb: estimated MiB of loaded variants at most (None: no limit).
        allow_ungated: also run variants whose evaluation gate failed.
        tiered: the bundle's gate recorded tiers (edge_runtime.control.tiers): a variant that failed
            the normal gate but clears a lower tier may load; the runtime offers it only in that tier.
        prefill_chunk: prompt tokens per forward pass.
        spin: let onnxruntime's idle threads spin (None: its default).
        metrics: where loads, failures and fencing are counted (None: a private registry).
    """

    def __init__(self, bundle_dir: str | os.PathLike[str], manifest: Manifest, threads: int | None = None,
                 providers: list[str] | None = None, memory_budget_mb: float | None = None,
                 allow_ungated: bool = False, prefill_chunk: int = 256, spin: bool | None = None,
                 metrics: Metrics | None = None, tiered: bool = False) -> None:
        self.root = Path(bundle_dir)
        self.manifest = manifest
        self.threads = threads
        self.providers = providers
        self.budget_mb = memory_budget_mb
        self.prefill_chunk = prefill_chunk
        self.spin = spin
        self.metrics = metrics or Metrics()
        self.context = manifest.model.context_length
        self.loaded: OrderedDict[int, Loaded] = OrderedDict()  # least recently used first
        self.fenced: dict[int, str] = {}  # index -> why
        self.excluded: dict[int, str] = {}  # index -> why it may never run in this pool
        self.loads = 0
        self._lock = threading.RLock()
        for i, v in enumerate(manifest.variants):
            if v.gate.status == "fail" and not (tiered and v.gate.extra.get("tiers")):
                failed = ", ".join(v.gate.failed) or "unspecified"
                if allow_ungated:
                    log.warning("RUNNING UNGATED: variant %r failed its evaluation gate (%s) and may be served "
                                "because allow_ungated is set", v.name, failed)
                else:
                    self.excluded[i] = f"failed its evaluation gate ({failed})"
            est = self.estimate_mb(v)
            if memory_budget_mb is not None and est > memory_budget_mb and i not in self.excluded:
                self.excluded[i] = f"needs about {est:.0f} MiB, over the memory budget of {memory_budget_mb:.0f} MiB"
        for i, why in self.excluded.items():
            log.warning("variant %r will not be served: %s", manifest.variants[i].name, why)
        if len(self.excluded) == len(manifest.variants):
            raise BundleError(
                f"no variant of {str(self.root)!r} may be served: "
                + "; ".join(f"{manifest.variants[i].name}: {w}" for i, w in self.excluded.items())
                + " (run edge-eval again, raise the memory budget, or pass allow_ungated / --allow-ungated)"
            )

    # -- what may run

    def estimate_mb(self, v: Variant) -> float:
        """Estimated resident MiB of variant `v` when loaded (see the module docstring)."""
        if v.cost.peak_rss_mb is not None:
            return float(v.cost.peak_rss_mb)
        weights = v.params * 4 if v.quantization == "none" else v.file_bytes
        layers = v.extra.get("layers") or []
        head_dim = int(self.manifest.model.extra.get("head_dim", 64) or 64)
        kv = sum(2 * int(layer[1]) * head_dim * 4 * self.context for layer in layers)
        return (max(weights, v.file_bytes) + kv) / MIB

    def allowed(self) -> np.ndarray:
        """bool [n_variants]: may run now."""
        with self._lock:
            ok = np.ones(len(self.manifest.variants), dtype=bool)
            for i in (*self.excluded, *self.fenced):
                ok[i] = False
            return ok

    def why_not(self, index: int) -> str | None:
        """Why variant `index` may not run (None: it may)."""
        with self._lock:
            return self.excluded.get(index) or (f"fenced after a failure: {self.fenced[index]}"
                                                if index in self.fenced else None)

    def next_allowed(self, after: int) -> int | None:
        """The next variant that may run after `after` in manifest order (sparser first), wrapping around."""
        ok = self.allowed()
        n = len(ok)
        for k in range(1, n):
            j = (after + k) % n
            if ok[j]:
                return j
        return None

    def fence(self, index: int, why: str) -> None:
        """Never run variant `index` again in this process; unload it, and count it once in the metrics."""
        name = self.manifest.variants[index].name
        with self._lock:
            if index in self.fenced:
                return
            self.fenced[index] = why
            self.unload(index)
        self.metrics.failures.labels(name).inc()
        self.metrics.fenced.labels(name).set(1)
        log.error("variant %r fenced: %s", name, why)

    # -- loading

    def get(self, index: int, capacity: int) -> tuple[Loaded, float]:
        """The loaded variant `index` with room for `capacity` tokens, and the seconds spent loading it now.

        Raises:
            VariantError: it may not run, or it failed to load (then it is fenced).
        """
        why = self.why_not(index)
        if why is not None:
            raise VariantError(f"variant {self.manifest.variants[index].name!r} may not run: {why}")
        with self._lock:
            hit = self.loaded.get(index)
            if hit is not None:
                self.loaded.move_to_end(index)
                hit.decoder.reserve(min(max(capacity, hit.decoder.capacity), self.context))
                return hit, 0.0
            v = self.manifest.variants[index]
            est = self.estimate_mb(v)
            self._make_room(est)
            t0 = time.perf_counter()
            try:
                session = VariantSession(self.root / v.onnx, threads=self.threads, providers=self.providers,
                                         storage=v.extra.get("storage"), spin=self.spin)
                if session.vocab != self.manifest.model.vocab_size:
                    raise VariantError(f"variant {v.name!r}: the graph's vocabulary ({session.vocab}) is not the "
                                       f"manifest's ({self.manifest.model.vocab_size}); re-export the bundle")
                decoder = session.decoder(min(max(capacity, 256), self.context), self.prefill_chunk)
            except VariantError as e:
                self.fence(index, str(e))
                raise
            load_s = time.perf_counter() - t0
            loaded = Loaded(index, session, decoder, load_s, est)
            self.loaded[index] = loaded
            self.metrics.loaded.labels(v.name).set(1)
            self.loads += 1
            self.metrics.loads.labels(v.name).inc()
            self.metrics.load_seconds.labels(v.name).observe(load_s)
            log.info("loaded variant %r in %.2f s (about %.0f MiB; %s)", v.name, load_s, est,
                     ", ".join(session.providers))
            return loaded, load_s

    def _make_room(self, need_mb: float) -> None:
        if self.budget_mb is None:
            return
        while self.loaded and self.used_mb + need_mb > self.budget_mb:
            index = next(iter(self.loaded))
            log.info("unloading variant %r to stay under the memory budget (%.0f MiB)",
                     self.manifest.variants[index].name, self.budget_mb)
            self.unload(index)

    @property
    def used_mb(self) -> float:
        with self._lock:
            return sum(x.estimate_mb for x in self.loaded.values())

    def unload(self, index: int) -> None:
        with self._lock:
            # the session holds no reference cycles: dropping the last reference frees its memory now
            self.loaded.pop(index, None)
        self.metrics.loaded.labels(self.manifest.variants[index].name).set(0)

    def close(self) -> None:
        with self._lock:
            self.loaded.clear()
