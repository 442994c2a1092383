"""Every controller on every bundled profile: `benchmarks/results/controller.{json,md}`.

    python benchmarks/controller_report.py                       # default bundle, or a synthetic one
    python benchmarks/controller_report.py --bundle DIR --train  # (re)train the policy first

Controllers: every static variant that passed its gate, the rule controller, the trained
policy (`rl`, the exported ONNX file behind the runtime's fallback, as the device runs it)
and the lookahead oracle. Without `--bundle`, the default bundle (`bundles/smollm2-135m`) is
used if it exists with measured costs; otherwise a synthetic one (edge_runtime.sim.synthetic,
"smollm2" preset) is written to `bundles/synthetic-smollm2` and the report says so. A
bundle without a policy is trained first (`edge-train` with its defaults).

The acceptance criteria (controller.evaluation) are checked on the held-out profiles the
manifest records, and reported for the training profiles too.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from controller.evaluation import compare, controller_specs, criteria, markdown  # noqa: E402
from edge_runtime.bundle import read_manifest  # noqa: E402
from edge_runtime.control import difficulty  # noqa: E402
from edge_runtime.control.catalog import VariantCatalog  # noqa: E402
from edge_runtime.control.difficulty import DifficultyEstimator, load_estimator  # noqa: E402
from edge_runtime.control.policy import load_policy  # noqa: E402
from edge_runtime.errors import BundleError  # noqa: E402
from edge_runtime.sim.profile import list_profiles, load_profile  # noqa: E402
from edge_runtime.sim.simulator import Simulator  # noqa: E402
from edge_runtime.sim.synthetic import write_synthetic_bundle  # noqa: E402

DEFAULT_BUNDLE = ROOT / "bundles" / "smollm2-135m"
SYNTHETIC_BUNDLE = ROOT / "bundles" / "synthetic-smollm2"
OUT = ROOT / "benchmarks" / "results" / "controller.json"


def pick_bundle(arg: str | None) -> tuple[Path, bool]:
    if arg:
        return Path(arg), bool(read_manifest(arg).extra.get("synthetic"))
    try:
        VariantCatalog.from_manifest(read_manifest(DEFAULT_BUNDLE))
        return DEFAULT_BUNDLE, False
    except BundleError as e:
        print(f"default bundle unusable ({e}); using a synthetic bundle at {SYNTHETIC_BUNDLE}")
    if not (SYNTHETIC_BUNDLE / "manifest.json").exists():
        write_synthetic_bundle(SYNTHETIC_BUNDLE, "smollm2")
    return SYNTHETIC_BUNDLE, True


def _estimator(bundle: Path, manifest: Any) -> tuple[DifficultyEstimator, str]:
    """The bundle's difficulty model, else an untrained one of the same shape (same arithmetic, for timing)."""
    est = load_estimator(bundle, manifest)
    if est.usable:
        return est, "the bundle's difficulty model"
    n = len(difficulty.FEATURES)
    return DifficultyEstimator(difficulty.DifficultyModel(np.zeros(n), np.ones(n), np.zeros(n), 0.0)), \
        "an untrained model of the same shape, since the bundle has none"


def decision_latency(bundle: Path, profiles: list[str]) -> dict[str, Any]:
    """p50/p99 time of the difficulty estimate (features of a difficulty-set prompt + model) together
    with the runtime controller's decision (ONNX policy behind the fallback)."""
    from harness.difficulty import CASES
    from harness.suite import load_suite

    manifest = read_manifest(bundle)
    catalog = VariantCatalog.from_manifest(manifest)
    pol = load_policy(bundle, manifest, strict=True)
    est, which = _estimator(bundle, manifest)
    prompts = [c.prompt for c in load_suite(CASES).cases]
    lat, both = [], []
    for name in profiles:
        sim = Simulator(load_profile(name), catalog, record=False)
        while not sim.done and len(lat) < 20000:
            text = prompts[len(lat) % len(prompts)]
            t0 = time.perf_counter()
            est.estimate(text, len(text) // 4)
            d = pol.decide(sim.observation(), sim.allowed)
            both.append(time.perf_counter() - t0)
            lat.append(d.latency_s)
            sim.step(d.variant)
    ms, ms_both = np.asarray(lat) * 1000, np.asarray(both) * 1000
    return {"decisions": len(lat), "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "max_ms": float(ms.max()), "fallbacks": pol.fallbacks, "difficulty_model": which,
            "with_difficulty_p50_ms": float(np.percentile(ms_both, 50)),
            "with_difficulty_p99_ms": float(np.percentile(ms_both, 99))}


def _difficulty_line(manifest: Any) -> str:
    d = manifest.difficulty
    if d is None:
        return "none in this bundle (train one with python -m harness.difficulty --bundle DIR)."
    return (f"AUC {d.get('auc')} ({d.get('auc_method', '')}) on {d.get('cases')} cases never gated on, "
            f"{d.get('hard_cases')} hard; variants {d.get('variants')}.")


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def criteria_markdown(checks: dict[str, dict[str, Any]], held_out: list[str]) -> str:
    yes = {True: "yes", False: "**no**", None: "n/a"}
    lines = ["| profile | split | RL >= best static | RL >= rule | quality vs matched static | "
             "miss <= 2% (dense > 10%) | battery: serving energy / dense <= 0.8 (all energy) at quality >= 0.98 | "
             "RL / oracle |",
             "|---|---|---|---|---|---|---|---|"]
    for prof, c in checks.items():
        lines.append(
            f"| {prof} | {'held out' if prof in held_out else 'train'} | {yes[c['beats_static']]} "
            f"({c['best_static'][7:]}) | {yes[c['beats_rule']]} | {_num(c['quality_ratio'])} x "
            f"{c['matched_static'][7:]} ({yes[c['quality_gain']]}) | {yes[c['deadline']]} | "
            f"{_num(c.get('energy_ratio'))} ({_num(c.get('total_energy_ratio'))}) / "
            f"{_num(c.get('dense_quality_ratio'))} ({yes[c['battery_energy']]}) | "
            f"{_num(c.get('oracle_ratio'))} ({yes[c.get('oracle')]}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", default=None, help="bundle directory (default: the default bundle, else synthetic)")
    p.add_argument("--train", action="store_true", help="train a policy even if the bundle has one")
    p.add_argument("--timesteps", default=None, help="edge-train --timesteps (default: its own)")
    p.add_argument("--seed", default=None, help="edge-train --seed")
    p.add_argument("--no-oracle", action="store_true", help="skip the (slow) oracle")
    p.add_argument("--out", default=str(OUT), help=f"JSON path (default {OUT.relative_to(ROOT)}); .md beside it")
    args = p.parse_args(argv)

    bundle, synthetic = pick_bundle(args.bundle)
    train_s = None
    if args.train or not read_manifest(bundle).controller.policy:
        from controller.cli import main as edge_train

        extra = (["--timesteps", args.timesteps] if args.timesteps else []) + (["--seed", args.seed] if args.seed else [])
        t0 = time.perf_counter()
        if edge_train(["--bundle", str(bundle), *extra]) != 0:
            return 1
        train_s = time.perf_counter() - t0
    manifest = read_manifest(bundle)
    catalog = VariantCatalog.from_manifest(manifest)
    held_out = list(manifest.controller.extra.get("held_out", []))
    trained_on = list(manifest.controller.extra.get("trained_on", []))
    profiles = list(list_profiles())
    specs = controller_specs(catalog, rl=True, oracle=not args.no_oracle)
    t0 = time.perf_counter()
    results = compare(bundle, profiles, specs, progress=True)
    eval_s = time.perf_counter() - t0
    dense = catalog.names[catalog.dense]
    checks = {prof: criteria(reports, dense, load_profile(prof).device.has_battery) for prof, reports in results.items()}
    latency = decision_latency(bundle, profiles)

    report = {
        "bundle": str(bundle),
        "synthetic_bundle": synthetic,
        "quality_source": catalog.quality_source,
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "controller": manifest.controller.to_dict(),
        "variants": [v.to_dict() for v in manifest.variants],
        "trained_on": trained_on,
        "held_out": held_out,
        "train_seconds": train_s,
        "eval_seconds": round(eval_s, 1),
        "decision_latency": latency,
        "profiles": {prof: {"split": "held_out" if prof in held_out else ("train" if prof in trained_on else "other"),
                            "controllers": {k: r.summary() for k, r in reports.items()},
                            "criteria": checks[prof]} for prof, reports in results.items()},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    md = [
        "# Controller report", "",
        f"Bundle `{bundle.relative_to(ROOT) if bundle.is_relative_to(ROOT) else bundle}`"
        + (" (synthetic: costs and quality from edge_runtime.sim.synthetic, not measured)" if synthetic else "")
        + f"; quality from {catalog.quality_source}; policy trained on {', '.join(trained_on)}; "
        f"held out: {', '.join(held_out)}.", "",
        f"Decision latency (ONNX policy behind the fallback, {latency['decisions']} decisions): "
        f"p50 {latency['p50_ms']:.3f} ms, p99 {latency['p99_ms']:.3f} ms, fallbacks {latency['fallbacks']}. "
        f"With the difficulty estimate ({latency['difficulty_model']}) computed together: "
        f"p50 {latency['with_difficulty_p50_ms']:.3f} ms, p99 {latency['with_difficulty_p99_ms']:.3f} ms.", "",
        f"Difficulty model: {_difficulty_line(manifest)}", "",
        "## Acceptance criteria", "", criteria_markdown(checks, held_out), "",
        "## Every controller on every profile", "", markdown(results, held_out),
    ]
    out.with_suffix(".md").write_text("\n".join(md))
    print(criteria_markdown(checks, held_out))
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
