"""The variant catalog: what each variant costs and what quality it delivers, from the manifest.

The controller's world model needs two numbers per variant, both taken from what the
bundle *measured* (never from a variant's name):

* **cost**: `cost.prefill_ms_per_token` and `cost.decode_ms_per_token`, measured on the
  machine that built the bundle, or, where `cost.device` is present, the medians that
  `python -m edge_runtime.engine.probe --bundle DIR` measured interleaved on the device
  itself (one noisy export-time run can rank a variant wrongly). A request with `p` prompt tokens and `n` new tokens needs

      work_s(v) = (p * prefill_ms(v) + n * decode_ms(v)) / 1000                      (C1)

  seconds of compute at that machine's speed; `edge_runtime.sim.device` scales it by the
  profile's `speed` and by thermal throttling.

* **quality**: relative to the dense variant, so that dense = 1.0. From the evaluation
  harness's slice scores (`quality.scores`, 0-1) when present:

      r_easy(v) = mean_s score_s(v) / mean_s score_s(dense),  s in EASY_SLICES     (Q1)
      r_hard(v) = mean_s score_s(v) / mean_s score_s(dense),  s in HARD_SLICES     (Q2)

  using only the slices both variants report; a side with no common slice uses all common
  slices. Without any common slice (the harness has not run yet), the perplexity
  retention is used for both sides and a log line says so:

      r_easy(v) = r_hard(v) = ppl(dense) / ppl(v)                                   (Q3)

  Hard requests (those that "need the dense model's quality") lose more from pruning than
  easy ones: pruning removes the rare knowledge and long-range skills first, which average
  text scores understate. The quality a request of difficulty `h` in [0, 1] receives is

      q(v, h) = (1 - h) * r_easy(v) + h * r_hard(v) ** HARD_EXPONENT                (Q4)

  Retentions are clipped to [0, 1] (a pruned variant that scores above dense on a noisy
  slice is treated as equal to dense).

Speculative pairs (`manifest.pairs`) follow the variants as further actions: the quality of
their verifier (the output is the verifier's), the decode cost the pair measured (its
verifier's until it is measured), allowed when the verifier is. A pair's prefill is its
verifier's plus, for a model drafter, the drafter's: both read the prompt, one after the other,
on the same cores (`edge_runtime.engine.speculative`). Where int8 kernels prefill slower than
float32 (a CPU without AVX-512: 3.95 against 1.64 ms per token for SmolLM2-135M), that doubles
the pair's cost of a long prompt.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_runtime.bundle import Manifest
from edge_runtime.control import tiers as _tiers
from edge_runtime.errors import BundleError

log = logging.getLogger(__name__)

EASY_SLICES: tuple[str, ...] = ("common", "edge")  # harness slices easy requests resemble
HARD_SLICES: tuple[str, ...] = ("adversarial", "multilingual")  # ... and hard ones
HARD_EXPONENT = 2.0  # (Q4): a hard request on a variant keeping 80% gets 0.8**2 = 64%


def _dense_index(manifest: Manifest) -> int:
    """The reference variant: the first `dense`, unquantized one, else the first listed."""
    for i, v in enumerate(manifest.variants):
        if v.method == "dense" and v.quantization == "none":
            return i
    return 0


def _slice_retention(scores: dict[str, float], ref: dict[str, float], wanted: Sequence[str]) -> float | None:
    # only the named slices: other score keys (latency, size, ppl_retention) are not quality
    common = [s for s in wanted if s in scores and s in ref]
    if not common:
        return None
    ref_mean = float(np.mean([ref[s] for s in common]))
    if ref_mean <= 0:
        return None
    return float(np.mean([scores[s] for s in common])) / ref_mean


def _cost(v: Any, key: str) -> float:
    """The device's own median (`cost.device`, edge_runtime.engine.probe --bundle) when present, else the
    build machine's figure."""
    dev = v.cost.extra.get("device")
    if isinstance(dev, dict) and isinstance(dev.get(key), (int, float)) and dev[key] > 0:
        return float(dev[key])
    return float(getattr(v.cost, key))


def _tier_masks(manifest: Manifest, passed: np.ndarray) -> dict[str, np.ndarray]:
    """tier -> variants that clear it (a tier nothing clears falls back to those that passed);
    empty for an untiered bundle."""
    if not _tiers.tiered(manifest):
        return {}
    out = {}
    for t in _tiers.TIERS:
        m = _tiers.tier_mask(manifest, t)
        out[t] = m if m.any() else passed.copy()
    return out


@dataclass(frozen=True)
class VariantCatalog:
    """Per-action cost and quality arrays: the manifest's variants (densest first), then its pairs.

    Build it with `from_manifest`; every array has one entry per action (`Manifest.actions`).
    """

    names: tuple[str, ...]
    prefill_ms: np.ndarray  # [V] ms per prompt token on the bundle's machine
    decode_ms: np.ndarray  # [V] ms per generated token on the bundle's machine
    quality_easy: np.ndarray  # [V] r_easy, 0-1, dense = 1 (Q1/Q3)
    quality_hard: np.ndarray  # [V] r_hard ** HARD_EXPONENT, 0-1 (Q2/Q3/Q4)
    allowed: np.ndarray  # [A] bool (variants, then pairs), False where the gate failed (in a tiered bundle: no tier cleared)
    dense: int  # index of the reference variant
    quality_source: str  # "scores" or "perplexity"
    tier_masks: dict[str, np.ndarray] = field(default_factory=dict)  # tier -> [A] bool; empty: untiered

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> VariantCatalog:
        """Read costs and quality; `BundleError` if a variant lacks measured costs or quality."""
        variants = manifest.variants
        for v in variants:
            if not v.cost.measured:
                raise BundleError(
                    f"variant {v.name!r} has no measured cost (cost.prefill_ms_per_token="
                    f"{v.cost.prefill_ms_per_token!r}, cost.decode_ms_per_token="
                    f"{v.cost.decode_ms_per_token!r}); the controller needs both: re-export the "
                    "bundle with edge-export so that it benchmarks every variant"
                )
            if v.cost.prefill_ms_per_token <= 0 or v.cost.decode_ms_per_token <= 0:  # type: ignore[operator]
                raise BundleError(
                    f"variant {v.name!r}: measured costs must be > 0 ms per token, got prefill "
                    f"{v.cost.prefill_ms_per_token} and decode {v.cost.decode_ms_per_token}; "
                    "re-export the bundle"
                )
        d = _dense_index(manifest)
        ref = variants[d]
        easy, hard, sources = [], [], set()
        for v in variants:
            re_ = _slice_retention(v.quality.scores, ref.quality.scores, EASY_SLICES)
            rh = _slice_retention(v.quality.scores, ref.quality.scores, HARD_SLICES)
            if re_ is None or rh is None:
                ppl, ref_ppl = v.quality.perplexity, ref.quality.perplexity
                if ppl is None or ref_ppl is None or ppl <= 0:
                    raise BundleError(
                        f"variant {v.name!r} has neither harness scores in common with "
                        f"{ref.name!r} nor a perplexity (got scores {v.quality.scores!r}, "
                        f"perplexity {ppl!r}; reference perplexity {ref_ppl!r}): run edge-eval "
                        "on the bundle"
                    )
                re_ = rh = ref_ppl / ppl
                sources.add("perplexity")
            else:
                sources.add("scores")
            easy.append(min(max(re_, 0.0), 1.0))
            hard.append(min(max(rh, 0.0), 1.0) ** HARD_EXPONENT)
        source = "scores" if sources == {"scores"} else "perplexity"
        if "perplexity" in sources:
            log.info(
                "quality model: harness slice scores missing for some variants; using perplexity "
                "retention ppl(dense)/ppl(variant) for them (catalog.py, Q3)"
            )
        # speculative pairs: one action each, with its verifier's quality, gate and tiers, the
        # prefill of the verifier and of a model drafter, and its own measured decode cost
        ver = [manifest.index(p.verifier) for p in manifest.pairs]
        passed = np.array([v.passed for v in variants], dtype=bool)
        allowed = np.append(passed, passed[ver]).astype(bool)
        masks = _tier_masks(manifest, allowed)
        if masks:  # tiered: a variant that fails the normal gate may serve in a lower tier
            allowed = allowed | np.logical_or.reduce(list(masks.values()))
        easy += [easy[j] for j in ver]
        hard += [hard[j] for j in ver]
        prefill = [_cost(v, "prefill_ms_per_token") for v in variants] + [
            _cost(variants[j], "prefill_ms_per_token")
            + (_cost(manifest.variant(p.drafter), "prefill_ms_per_token") if p.drafter in manifest.names else 0.0)
            for p, j in zip(manifest.pairs, ver, strict=True)]
        decode = [_cost(v, "decode_ms_per_token") for v in variants] + [
            p.cost.decode_ms_per_token or _cost(variants[j], "decode_ms_per_token")
            for p, j in zip(manifest.pairs, ver, strict=True)]
        if not allowed.any():
            raise BundleError(
                f"every variant in the bundle failed its gate ({[v.name for v in variants]}); "
                "re-export with a recipe that keeps a dense variant"
            )
        return cls(
            names=manifest.actions,
            prefill_ms=np.array(prefill, dtype=np.float64),
            decode_ms=np.array(decode, dtype=np.float64),
            quality_easy=np.array(easy, dtype=np.float64),
            quality_hard=np.array(hard, dtype=np.float64),
            allowed=allowed,
            dense=d,
            quality_source=source,
            tier_masks=masks,
        )

    def in_tier(self, tier: str) -> np.ndarray:
        """[V] bool: variants that may run in `tier` (all allowed ones for an untiered bundle)."""
        return self.tier_masks.get(tier, self.allowed)

    def __len__(self) -> int:
        return len(self.names)

    def work_s(self, variant: int, prompt_tokens: int, new_tokens: int) -> float:
        """Compute seconds at the bundle machine's speed (C1)."""
        return float(prompt_tokens * self.prefill_ms[variant] + new_tokens * self.decode_ms[variant]) / 1000.0

    def quality(self, variant: int, hard: float) -> float:
        """Quality a request of difficulty `hard` (0-1) receives from `variant` (Q4)."""
        return float((1.0 - hard) * self.quality_easy[variant] + hard * self.quality_hard[variant])

    @property
    def offered(self) -> tuple[int, ...]:
        """Indices of the variants a controller may choose (gate not failed), manifest order."""
        return tuple(int(i) for i in np.flatnonzero(self.allowed))

    def undominated(self) -> tuple[int, ...]:
        """Allowed variants that no other allowed variant matches or beats on prefill and
        decode cost and on easy and hard quality at once (ties keep the earlier variant).

        Under the device model a dominated variant is never worth choosing: it takes at least
        as long and as much energy and delivers no more quality.
        """
        idx = self.offered
        cost = np.stack([self.prefill_ms, self.decode_ms, -self.quality_easy, -self.quality_hard], axis=1)  # [V, 4]
        keep = []
        for i in idx:
            beaten = any(
                np.all(cost[j] <= cost[i]) and (np.any(cost[j] < cost[i]) or j < i) for j in idx if j != i
            )
            if not beaten:
                keep.append(i)
        return tuple(keep)

