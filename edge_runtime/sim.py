"""`edge-sim`: replay a resource profile through a controller on a virtual clock.

    edge-sim --bundle DIR --profile laptop-battery --controller rl
    edge-sim --bundle DIR --profile my.toml --controller static:dense-int4 --json
    edge-sim --bundle DIR --profile scripted-day --controller rule --plot day.png

Controllers: `rl` (the bundle's ONNX policy behind the rule fallback, as the runtime runs
it), `rule`, `static:NAME` (one variant throughout), `oracle` (the lookahead planner that
knows the profile's future; lives in `controller/` and needs the `[train]` extra).

A device-side tool: numpy, onnxruntime and matplotlib only. Costs come from the bundle's
manifest through `SimulatedBackend`; replaying through the real runtime is a different
`GenerationBackend` (`edge_runtime.simulator`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from edge_runtime.bundle import Manifest, read_manifest
from edge_runtime.catalog import VariantCatalog
from edge_runtime.errors import EdgeError, PolicyError, VariantError
from edge_runtime.policy import Policy, RulePolicy, StaticPolicy, load_policy
from edge_runtime.profile import load_profile
from edge_runtime.simulator import Planner, RewardConfig, SimReport, Simulator
from edge_runtime.workload import generate_requests

CONTROLLERS = ("rl", "rule", "static:NAME", "oracle")


def make_controller(spec: str, bundle_dir: str | os.PathLike[str], manifest: Manifest,
                    catalog: VariantCatalog) -> Policy | Planner:
    """The controller named by `spec` (one of `CONTROLLERS`)."""
    if spec == "rl":
        if not manifest.controller.policy:
            raise PolicyError(f"bundle {str(bundle_dir)!r} has no trained policy; run edge-train on it, "
                              "or pass --controller rule")
        return load_policy(bundle_dir, manifest, strict=True)
    if spec == "rule":
        return RulePolicy(catalog)
    if spec.startswith("static:"):
        name = spec.split(":", 1)[1]
        i = manifest.index(name)
        if not catalog.allowed[i]:
            raise VariantError(f"variant {name!r} failed its gate ({list(manifest.variants[i].gate.failed)}) "
                               "and is never run; pick another static variant")
        return StaticPolicy(i)
    if spec == "oracle":
        try:
            from controller.baselines import LookaheadOracle
        except ImportError as e:
            raise EdgeError(f"--controller oracle needs the training extra ({e}); install it with "
                            "pip install 'edge-sparsity-runtime[train]'") from e
        return LookaheadOracle(catalog)
    raise EdgeError(f"unknown controller {spec!r}; choose one of {', '.join(CONTROLLERS)}")


def simulate(bundle_dir: str | os.PathLike[str], profile: str, controller: str, seed: int | None = None,
             reward: RewardConfig | None = None, record: bool = True) -> SimReport:
    """Replay `profile` (name or path) with `controller` (a `CONTROLLERS` spec); the report."""
    manifest = read_manifest(bundle_dir)
    catalog = VariantCatalog.from_manifest(manifest)
    prof = load_profile(profile)
    ctl = make_controller(controller, bundle_dir, manifest, catalog)
    requests = generate_requests(prof, seed)
    sim = Simulator(prof, catalog, reward, requests=requests, record=record)
    return sim.run(ctl, controller)


def format_report(r: SimReport) -> str:
    """The human-readable report `edge-sim` prints without `--json`."""
    lines = [
        f"profile {r.profile}  controller {r.controller}  requests {r.requests}",
        f"  reward             {r.reward:10.2f}",
        f"  mean quality       {r.mean_quality:10.3f}   hard requests {r.hard_quality:.3f}",
        f"  deadline misses    {r.deadline_miss_rate:10.2%}   failed {r.failed}",
        f"  latency p50 / p95  {r.p50_latency_s:7.2f} s / {r.p95_latency_s:.2f} s",
        f"  energy             {r.energy_wh:10.3f} Wh  battery at end {r.battery_end:.1%}",
        f"  throttled          {r.throttled_s:10.1f} s",
        "  variant share      " + ", ".join(f"{k} {v:.0%}" for k, v in r.variant_share.items()),
    ]
    if r.decision_reasons:
        lines.append("  decisions          " + ", ".join(f"{k} {v}" for k, v in sorted(r.decision_reasons.items())))
    return "\n".join(lines)


def plot_report(r: SimReport, names: tuple[str, ...], path: str | os.PathLike[str]) -> None:
    """Battery, temperature, queue depth and the chosen variant over time, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tr = r.trace
    if tr is None or not tr.t:
        raise EdgeError("nothing to plot: the replay recorded no trace")
    t = [x / 60.0 for x in tr.t]
    fig, ax = plt.subplots(4, 1, figsize=(10, 9), sharex=True)
    ax[0].plot(t, [100 * b for b in tr.battery], color="tab:green")
    ax[0].set_ylabel("battery %")
    ax[0].set_ylim(-2, 102)
    ax[1].plot(t, tr.temperature_c, color="tab:red")
    thr = [x for x, on in zip(t, tr.throttled, strict=True) if on]
    if thr:
        ax[1].scatter(thr, [max(tr.temperature_c)] * len(thr), s=4, color="black", label="throttled")
        ax[1].legend(loc="upper right")
    ax[1].set_ylabel("temperature C")
    ax[2].step(t, tr.queue, where="post", color="tab:blue")
    ax[2].set_ylabel("queue depth")
    chosen = [(x, v) for x, v in zip(t, tr.variant, strict=True) if v >= 0]
    if chosen:
        ax[3].scatter([c[0] for c in chosen], [c[1] for c in chosen], s=6, color="tab:purple")
    ax[3].set_yticks(range(len(names)))
    ax[3].set_yticklabels(names, fontsize=7)
    ax[3].set_ylabel("variant")
    ax[3].set_xlabel("time (min)")
    fig.suptitle(f"{r.profile} / {r.controller}: reward {r.reward:.1f}, quality {r.mean_quality:.3f}, "
                 f"misses {r.deadline_miss_rate:.1%}")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edge-sim", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", required=True, help="bundle directory (only manifest.json is read, plus the policy for rl)")
    p.add_argument("--profile", required=True,
                   help="bundled profile name (profiles/, or $EDGE_PROFILES) or a path to a .toml")
    p.add_argument("--controller", default="rl", metavar="{rl,rule,static:NAME,oracle}",
                   help="who picks the variant (default: rl)")
    p.add_argument("--seed", type=int, default=None, help="arrival seed (default: the profile's)")
    p.add_argument("--reward", default=None, metavar="TOML", help="reward weights (default: RewardConfig defaults)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--plot", default=None, metavar="PNG", help="draw battery, temperature, queue and variant over time")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        reward = RewardConfig.from_toml(args.reward) if args.reward else None
        report = simulate(args.bundle, args.profile, args.controller, seed=args.seed, reward=reward)
        if args.plot:
            plot_report(report, read_manifest(args.bundle).names, args.plot)
    except EdgeError as e:
        print(f"edge-sim: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        out: dict[str, Any] = report.summary()
        print(json.dumps(out))
    else:
        print(format_report(report))
        if args.plot:
            print(f"  plot               {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
