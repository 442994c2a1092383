"""Every controller on every profile, and the acceptance criteria of the controller issue.

`compare` replays each profile (its own seed: the canonical replay, which training never
drew) with each controller and returns the `SimReport`s. `criteria` checks, per profile:

* `beats_static`: RL reward >= the best static variant's;
* `beats_rule`: RL reward >= the rule controller's;
* `quality_gain`: RL mean quality >= 1.10 x that of the *matched static*: the static variant
  with the least energy among those using at least RL's energy (the same or higher energy);
* `deadline`: where dense alone misses > 10% of deadlines, RL misses <= 2%;
* `oracle`: RL reward >= 0.90 x the oracle's;
* `battery_energy`: on battery profiles, RL's energy per request <= 0.80 x static dense's
  while its mean quality stays >= 0.98 x static dense's (None on mains-only profiles).

Energy in these checks is `SimReport.serving_wh`, what serving drew above the device's idle
draw, as the reward prices it: the idle draw between requests is the same whatever serves
them, and on a sparse profile it outweighs serving (overnight-idle, static dense: 2.91 Wh
drawn, 0.51 of it serving), which no controller can change. `total_energy_ratio` keeps the
ratio of everything drawn (idle included) beside it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

from edge_runtime.bundle import Manifest, read_manifest
from edge_runtime.control.catalog import VariantCatalog
from edge_runtime.sim.cli import make_controller
from edge_runtime.sim.profile import Profile, load_profile
from edge_runtime.sim.simulator import RewardConfig, SimReport, Simulator

QUALITY_GAIN = 1.10
DENSE_MISS = 0.10
RL_MISS = 0.02
ORACLE_SHARE = 0.90
BATTERY_ENERGY = 0.80  # RL energy per request / static dense's, on battery profiles
BATTERY_QUALITY = 0.98  # ... at RL mean quality / static dense's at least this


def controller_specs(catalog: VariantCatalog, rl: bool = True, oracle: bool = True) -> list[str]:
    """`static:<name>` for every allowed variant, `rule`, and optionally `rl` and `oracle`."""
    specs = [f"static:{catalog.names[i]}" for i in catalog.offered] + ["rule"]
    return specs + (["rl"] if rl else []) + (["oracle"] if oracle else [])


def compare(
    bundle_dir: str | os.PathLike[str],
    profiles: Sequence[str | Profile],
    specs: Iterable[str] | None = None,
    reward: RewardConfig | None = None,
    progress: bool = False,
) -> dict[str, dict[str, SimReport]]:
    """{profile name: {controller spec: report}} for every profile and controller."""
    from tqdm.auto import tqdm

    manifest: Manifest = read_manifest(bundle_dir)
    catalog = VariantCatalog.from_manifest(manifest)
    specs = list(specs) if specs is not None else controller_specs(catalog, rl=bool(manifest.controller.policy))
    profs = [p if isinstance(p, Profile) else load_profile(p) for p in profiles]
    out: dict[str, dict[str, SimReport]] = {}
    with tqdm(total=len(profs) * len(specs), desc="evaluate", unit="run", disable=not progress) as bar:
        for prof in profs:
            out[prof.name] = {}
            for spec in specs:
                ctl = make_controller(spec, bundle_dir, manifest, catalog)
                out[prof.name][spec] = Simulator(prof, catalog, reward).run(ctl, spec)
                bar.update()
    return out


def criteria(results: dict[str, SimReport], dense: str, battery: bool = False) -> dict[str, Any]:
    """The acceptance checks for one profile's reports (needs `rl`; `oracle` if present);
    `battery`: the profile runs on a battery (`Profile.device.has_battery`)."""
    rl = results["rl"]
    statics = {k: r for k, r in results.items() if k.startswith("static:")}
    best = max(statics.values(), key=lambda r: r.reward)
    heavier = [r for r in statics.values() if r.serving_wh >= rl.serving_wh]
    matched = min(heavier, key=lambda r: r.serving_wh) if heavier else max(statics.values(), key=lambda r: r.serving_wh)
    out: dict[str, Any] = {
        "best_static": best.controller,
        "beats_static": bool(rl.reward >= best.reward),
        "beats_rule": bool(rl.reward >= results["rule"].reward),
        "matched_static": matched.controller,
        "quality_ratio": float(rl.mean_quality / matched.mean_quality) if matched.mean_quality > 0 else None,
    }
    out["quality_gain"] = out["quality_ratio"] is not None and bool(out["quality_ratio"] >= QUALITY_GAIN)
    dense_r = statics.get(f"static:{dense}")
    if dense_r is not None and dense_r.deadline_miss_rate > DENSE_MISS:
        out["deadline"] = bool(rl.deadline_miss_rate <= RL_MISS)
    else:
        out["deadline"] = None  # not applicable: dense alone meets its deadlines
    out["battery_energy"] = None
    if battery and dense_r is not None and dense_r.requests and dense_r.serving_wh > 0 and dense_r.mean_quality > 0:
        n_rl, n_dense = max(rl.requests, 1), dense_r.requests  # per request
        out["energy_ratio"] = float((rl.serving_wh / n_rl) / (dense_r.serving_wh / n_dense))
        out["total_energy_ratio"] = float((rl.energy_wh / n_rl) / (dense_r.energy_wh / n_dense))
        out["dense_quality_ratio"] = float(rl.mean_quality / dense_r.mean_quality)
        out["battery_energy"] = bool(out["energy_ratio"] <= BATTERY_ENERGY
                                     and out["dense_quality_ratio"] >= BATTERY_QUALITY)
    if "oracle" in results:
        o = results["oracle"].reward
        out["oracle_ratio"] = float(rl.reward / o) if o > 0 else None
        out["oracle"] = bool(rl.reward >= ORACLE_SHARE * o)
    return out


def markdown(results: dict[str, dict[str, SimReport]], held_out: Sequence[str] = ()) -> str:
    """One Markdown table per profile: every controller's headline numbers."""
    lines = []
    for prof, reports in results.items():
        tag = " (held out)" if prof in held_out else ""
        lines += [f"### {prof}{tag}", "",
                  "| controller | reward | quality | hard q | miss | p50 s | p95 s | energy Wh | battery end | throttled s | failed |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for spec, r in sorted(reports.items(), key=lambda kv: -kv[1].reward):
            lines.append(f"| {spec} | {r.reward:.1f} | {r.mean_quality:.3f} | {r.hard_quality:.3f} | "
                         f"{r.deadline_miss_rate:.1%} | {r.p50_latency_s:.2f} | {r.p95_latency_s:.2f} | "
                         f"{r.energy_wh:.2f} | {r.battery_end:.0%} | {r.throttled_s:.0f} | {r.failed} |")
        lines.append("")
    return "\n".join(lines)
