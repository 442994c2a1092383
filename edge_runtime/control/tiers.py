"""Resource tiers: which quality floor the device can afford right now.

One floor for a desk on mains and a phone at 5% is wrong for both. The floors file
(`harness.floors`, `edge-floors/1`) declares a floor per dimension for each tier in
`TIERS`, each derived from the dense model before pruning with a wider margin than the
one above it. The gate records, per variant, the tiers it clears (`gate.tiers` in the
manifest). On the device the tier is chosen by the operator (`RuntimeConfig.tier`,
`edge-serve --tier`, `EDGE_TIER`) or, with `auto`, from the live signals (`select_tier`),
and the runtime offers only the variants that clear it (`tier_mask`).

Tiers are ordered: `normal` holds the strictest floors, `critical` the loosest, so a
variant that clears a tier clears every tier after it. `normal` is the pass/fail gate
itself; a variant that fails it but clears `saver` or `critical` is still servable in a
tiered bundle, in those tiers only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from edge_runtime.bundle import Manifest
from edge_runtime.control.observation import DeviceState
from edge_runtime.errors import EvalError

log = logging.getLogger(__name__)

TIERS: tuple[str, ...] = ("normal", "saver", "critical")  # strictest floors first
AUTO = "auto"  # choose from the live signals


@dataclass(frozen=True)
class TierRule:
    """When `auto` leaves `normal` (docs/controller.md, tiers)."""

    saver_battery: float = 0.5  # on battery below this state of charge: saver
    critical_battery: float = 0.15  # on battery below this: critical
    saver_headroom_c: float = 5.0  # this close to the throttle point (or throttled): saver


def select_tier(device: DeviceState, setting: str = AUTO, rule: TierRule = TierRule()) -> str:
    """The tier in force: the operator's `setting`, or with `auto` the one the signals call for."""
    if setting != AUTO:
        return setting
    on_battery = not device.plugged_in
    if on_battery and device.battery_level < rule.critical_battery:
        return "critical"
    if (on_battery and device.battery_level < rule.saver_battery) or device.throttled \
            or device.throttle_c - device.temperature_c < rule.saver_headroom_c:
        return "saver"
    return "normal"


def check_tier(name: str, where: str, error: type[Exception] = EvalError, allow_auto: bool = True) -> str:
    """`name` if it is a tier (or `auto`), else one error naming the known ones."""
    known = TIERS + ((AUTO,) if allow_auto else ())
    if name not in known:
        raise error(f"{where}: unknown tier {name!r}; choose one of {list(known)}")
    return name


def variant_tiers(manifest: Manifest) -> list[tuple[str, ...] | None]:
    """Per variant, the tiers its gate cleared; None where the gate recorded none."""
    out: list[tuple[str, ...] | None] = []
    for v in manifest.variants:
        raw = v.gate.extra.get("tiers")
        out.append(tuple(raw) if isinstance(raw, list) else None)
    return out


def tiered(manifest: Manifest) -> bool:
    """True when the bundle declares tiers and every variant's gate recorded the ones it clears."""
    return bool(manifest.extra.get("tiers")) and all(t is not None for t in variant_tiers(manifest))


def tier_mask(manifest: Manifest, tier: str) -> np.ndarray:
    """[A] bool over `manifest.actions` (variants, then pairs): what is offered in `tier`. A pair
    is offered where its verifier is, since its output is the verifier's.

    A bundle whose floors declared tiers (`manifest.extra["tiers"]`) but whose variants lack
    per-tier gate results cannot be tiered: every action is offered (the pass/fail gate still
    applies) and `tier_warning` says so once.
    """
    per = variant_tiers(manifest)
    if not tiered(manifest):
        return np.ones(len(manifest.actions), dtype=bool)
    mask = np.array([tier in (t or ()) for t in per], dtype=bool)
    return np.append(mask, mask[[manifest.index(p.verifier) for p in manifest.pairs]]).astype(bool)


def tier_warning(manifest: Manifest) -> str | None:
    """The one warning for a bundle that declares tiers but has no per-tier gate results."""
    if not manifest.extra.get("tiers"):
        return None
    missing = [v.name for v, t in zip(manifest.variants, variant_tiers(manifest), strict=True) if t is None]
    if not missing:
        return None
    return (f"the bundle declares tiers {manifest.extra['tiers']} but variants {missing} have no per-tier gate "
            "results: every gated variant is offered in every tier; run edge-eval --bundle DIR to record them")


def delivered_quality(
    slice_scores: Mapping[str, Mapping[str, float]],
    mix: Mapping[str, float],
    slices: Sequence[str],
    per_slice_mix: Mapping[str, Mapping[str, float]] | None = None,
) -> dict[str, float]:
    """Per-slice quality a controller delivers when it runs variants in these shares.

    Args:
        slice_scores: variant -> slice -> accuracy (the manifest's `quality.scores`).
        mix: variant -> share of requests it served; shares are normalized, so counts work too.
        slices: the slices to report.
        per_slice_mix: optional slice -> variant -> share, for controllers that route by
            difficulty (a slice missing here uses `mix`).

    Returns:
        slice -> expected accuracy, the share-weighted mean of the variants' scores; a slice some
        variant in the mix was not scored on is left out.
    """
    out: dict[str, float] = {}
    for s in slices:
        shares = (per_slice_mix or {}).get(s, mix)
        total = sum(shares.values())
        if total <= 0 or any(v < 0 for v in shares.values()):
            raise EvalError(f"variant shares must be non-negative and not all zero, got {dict(shares)}")
        unknown = sorted(set(shares) - set(slice_scores))
        if unknown:
            raise EvalError(f"the mix names variants with no scores {unknown}; scored: {sorted(slice_scores)}")
        if not all(s in slice_scores[v] for v, w in shares.items() if w > 0):
            continue
        out[s] = sum(w / total * slice_scores[v][s] for v, w in shares.items() if w > 0)
    return out
