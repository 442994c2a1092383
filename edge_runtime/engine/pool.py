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

from edge_runtime.bundle import PROMPT_LOOKUP, Manifest, Pair, Variant
from edge_runtime.engine.providers import resolve as resolve_providers
from edge_runtime.engine.residency import PREFILL_CHUNK
from edge_runtime.engine.session import Decoder, VariantSession
from edge_runtime.engine.speculative import (
    AdaptiveK,
    ModelDrafter,
    PromptLookupDrafter,
    Speculator,
    policy_for,
)
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
        spin: let onnxruntime's idle threads spin (None: its default). Off by default, as in
            RuntimeConfig: a pair's verifier and drafter take turns on the same cores, and the
            threads of the one that just ran, spinning, slowed the other's passes about 2x.
        metrics: where loads, failures and fencing are counted (None: a private registry).
    """

    def __init__(self, bundle_dir: str | os.PathLike[str], manifest: Manifest, threads: int | None = None,
                 providers: list[str] | None = None, memory_budget_mb: float | None = None,
                 allow_ungated: bool = False, prefill_chunk: int = PREFILL_CHUNK, spin: bool | None = False,
                 metrics: Metrics | None = None, tiered: bool = False) -> None:
        self.root = Path(bundle_dir)
        self.manifest = manifest
        self.threads = threads
        self.providers = providers
        resolve_providers(providers)  # an unknown provider fails the open, not the first request
        self.budget_mb = memory_budget_mb
        self.prefill_chunk = prefill_chunk
        self.spin = spin
        self.metrics = metrics or Metrics()
        self.context = manifest.model.context_length
        self.loaded: OrderedDict[int, Loaded] = OrderedDict()  # least recently used first
        self.fenced: dict[int, str] = {}  # index -> why
        self.excluded: dict[int, str] = {}  # index -> why it may never run in this pool
        self.loads = 0
        self.pairs: dict[str, Pair] = {p.name: p for p in manifest.pairs}
        self.pair_fenced: dict[str, str] = {}  # pair name -> why (its verifier keeps serving)
        self._k: dict[str, AdaptiveK] = {}  # what each pair learnt about its acceptance, across requests
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
        pending = [v.name for i, v in enumerate(manifest.variants) if v.gate.status == "pending" and i not in self.excluded]
        if pending:  # one line for them all: a bundle fresh from edge-export has no gate yet
            log.warning("serving variants that were never evaluated (no quality gate): %s; run "
                        "edge-eval --bundle %s to score and gate them", ", ".join(pending), self.root)
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
        """bool [n_actions]: may run now; the variants, then the pairs (`Manifest.actions`)."""
        with self._lock:
            ok = np.ones(len(self.manifest.variants), dtype=bool)
            for i in (*self.excluded, *self.fenced):
                ok[i] = False
            pairs = [self.why_not_pair(p.name) is None for p in self.manifest.pairs]
            return np.append(ok, np.array(pairs, dtype=bool))

    def why_not(self, index: int) -> str | None:
        """Why variant `index` may not run (None: it may)."""
        with self._lock:
            return self.excluded.get(index) or (f"fenced after a failure: {self.fenced[index]}"
                                                if index in self.fenced else None)

    def next_allowed(self, after: int) -> int | None:
        """The next variant (not pair) that may run after `after` in manifest order (sparser first), wrapping around."""
        ok = self.allowed()[: len(self.manifest.variants)]
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

    def get(self, index: int, capacity: int, drafting: bool = False, keep: tuple[int, ...] = ()) -> tuple[Loaded, float]:
        """The loaded variant `index` with room for `capacity` tokens, and the seconds spent loading it now.

        `drafting`: loaded as a pair's drafter, which a failed gate does not forbid (its tokens are
        all checked); only fencing does. `keep`: variants that must stay loaded (the pair's verifier).

        Raises:
            VariantError: it may not run, or it failed to load (then it is fenced).
        """
        why = self.why_not(index) if not drafting else (
            f"fenced after a failure: {self.fenced[index]}" if index in self.fenced else None)
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
            self._make_room(est, keep)
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

    def _make_room(self, need_mb: float, keep: tuple[int, ...] = ()) -> None:
        if self.budget_mb is None:
            return
        while self.used_mb + need_mb > self.budget_mb:
            index = next((i for i in self.loaded if i not in keep), None)
            if index is None:
                return
            log.info("unloading variant %r to stay under the memory budget (%.0f MiB)",
                     self.manifest.variants[index].name, self.budget_mb)
            self.unload(index)

    # -- speculative pairs

    def why_not_pair(self, name: str) -> str | None:
        """Why pair `name` may not run (None: it may). Its drafter may have failed its gate, not its verifier."""
        pair = self.pairs[name]
        verifier = self.manifest.index(pair.verifier)
        why = self.why_not(verifier)
        if why is not None:
            return f"its verifier {pair.verifier!r} may not run: {why}"
        if name in self.pair_fenced:
            return f"fenced after a failure: {self.pair_fenced[name]}"
        if pair.drafter != PROMPT_LOOKUP:
            drafter = self.manifest.index(pair.drafter)
            if drafter in self.fenced:
                return f"its drafter {pair.drafter!r} was fenced: {self.fenced[drafter]}"
            need = self.estimate_mb(self.manifest.variants[verifier]) + self.estimate_mb(self.manifest.variants[drafter])
            if self.budget_mb is not None and need > self.budget_mb:
                return (f"verifier and drafter together need about {need:.0f} MiB, over the memory budget of "
                        f"{self.budget_mb:.0f} MiB")
        return None

    def replace_pair(self, pair: Pair) -> None:
        """Serve `pair` (e.g. re-measured) in place of the pair of that name, forgetting what k had learnt."""
        with self._lock:
            self.pairs[pair.name] = pair
            self._k.pop(pair.name, None)

    def fence_pair(self, name: str, why: str) -> None:
        """Never run pair `name` again in this process; its verifier (and drafter) stay servable alone."""
        with self._lock:
            if name in self.pair_fenced:
                return
            self.pair_fenced[name] = why
        self.metrics.failures.labels(name).inc()
        self.metrics.fenced.labels(name).set(1)
        log.error("pair %r fenced (its verifier keeps serving): %s", name, why)

    def get_pair(self, name: str, capacity: int) -> tuple[Loaded, Speculator, float]:
        """Pair `name`'s loaded verifier, a speculator over its drafter, and the seconds spent loading.

        Raises:
            VariantError: the pair may not run, or its verifier failed (that variant is fenced), or its
                drafter failed to load or does not share the verifier's vocabulary (the pair is fenced).
        """
        pair = self.pairs[name]
        why = self.why_not_pair(name)
        if why is not None:
            raise VariantError(f"pair {name!r} may not run: {why}")
        verifier_index = self.manifest.index(pair.verifier)
        verifier, load_s = self.get(verifier_index, capacity)
        if pair.drafter == PROMPT_LOOKUP:
            drafter = PromptLookupDrafter()
        else:
            try:
                loaded, drafter_s = self.get(self.manifest.index(pair.drafter), capacity, drafting=True,
                                             keep=(verifier_index,))
            except VariantError as e:
                self.fence_pair(name, f"its drafter {pair.drafter!r} failed: {e}")
                raise VariantError(f"pair {name!r}: drafter {pair.drafter!r} failed ({e})") from e
            load_s += drafter_s
            if loaded.session.vocab != verifier.session.vocab:
                why = (f"drafter {pair.drafter!r} has a vocabulary of {loaded.session.vocab} tokens, verifier "
                       f"{pair.verifier!r} {verifier.session.vocab}: a drafter must share the verifier's tokenizer")
                self.fence_pair(name, why)
                raise VariantError(f"pair {name!r}: {why}")
            drafter = ModelDrafter(pair.drafter, loaded.decoder)
        k = self._k.setdefault(name, AdaptiveK(policy_for(pair, self.manifest)))
        return verifier, Speculator(drafter, k=k), load_s

    def prepare(self, pair: str | None, index: int, capacity: int) -> tuple[Loaded, Speculator | None, float]:
        """Variant `index` (or pair `pair`'s verifier, `index`, and its speculator) ready to generate.

        A pair whose drafter fails is fenced and the variant is returned alone, without a speculator;
        a failing verifier raises, as any variant does.
        """
        if pair is not None and pair not in self.pair_fenced:
            try:
                return self.get_pair(pair, capacity)
            except VariantError as e:
                if self.why_not(index) is not None:  # the verifier itself: the caller fences and retries
                    raise
                log.warning("pair %r failed (%s): serving its verifier alone", pair, e)
        loaded, load_s = self.get(index, capacity)
        return loaded, None, load_s

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
