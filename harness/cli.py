"""`edge-eval`: score every variant of a bundle, gate it, and write the report and the manifest.

    edge-eval --bundle DIR --set-floors            # once, before pruning: floors from the dense variant
    edge-eval --bundle DIR                         # score + gate every variant, write report and manifest
    edge-eval --bundle DIR --set-floors --and-gate # both in one run: dense is scored once, not twice
    edge-eval --bundle DIR --profiles laptop-battery,phone-low-battery   # gate the whole system per profile

Floors default to DIR/floors.toml, the report to DIR/eval/. Errors print one line and exit 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from edge_runtime.bundle import read_manifest
from edge_runtime.errors import EdgeError, EvalError
from edge_runtime.extras import add_version, require
from harness.evaluate import (
    FLOORS_FILE,
    REPORT_DIR,
    BundleEval,
    EvalConfig,
    apply_to_manifest,
    evaluate_bundle,
    floors_from_dense,
    gate_system,
    profile_mixes,
)
from harness.floors import Floors
from harness.report import cheapest_passing, write_report
from harness.scoring import CHOICE_METRICS
from harness.suite import DEFAULT_SUITE, SLICES, load_suite

MIN_FLOOR_TOKENS = 30_000  # held-out tokens below which --set-floors warns


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edge-eval",
        description="Score every variant of a bundle through onnxruntime, gate it on floors, and write the "
        "scores and gate into the manifest and a report (Markdown, JSON, PNG).",
    )
    p.add_argument("--bundle", required=True, type=Path, help="bundle directory (has manifest.json)")
    p.add_argument("--suite", type=Path, default=DEFAULT_SUITE, help="suite file, JSON Lines (default: the built-in suite)")
    p.add_argument("--floors", type=Path, default=None,
                   help=f"floors TOML to gate on, or to write with --set-floors (default: BUNDLE/{FLOORS_FILE})")
    p.add_argument("--set-floors", action="store_true",
                   help="evaluate the dense variant only and write floors from it (margins: harness/floors.py)")
    p.add_argument("--and-gate", action="store_true",
                   help="with --set-floors: then score and gate every other variant in the same run, taking the "
                   "dense evaluation that set the floors instead of scoring dense again")
    p.add_argument("--profiles", default=None,
                   help="comma-separated resource profiles (names or TOML paths): replay each with edge-sim and "
                   "gate the quality the controller delivers per slice on the per-profile floors; scores nothing")
    p.add_argument("--controller", default="rule", help="controller for --profiles, as edge-sim names it (default: rule)")
    p.add_argument("--mix", type=Path, default=None,
                   help="instead of --profiles: JSON {profile: {variant: share}} of requests each variant served")
    p.add_argument("--report", type=Path, default=None, help=f"report directory (default: BUNDLE/{REPORT_DIR})")
    p.add_argument("--windows", type=int, default=EvalConfig.windows,
                   help="held-out windows of 512 tokens for perplexity (default: %(default)s = 30,720 tokens)")
    p.add_argument("--choice-metric", choices=CHOICE_METRICS, default=EvalConfig.choice_metric,
                   help="sum: total option log-prob (lm-eval acc); norm: per character (acc_norm) (default: %(default)s)")
    p.add_argument("--limit", type=int, default=None,
                   help="first N cases per slice: a smoke run that writes the report but not the manifest "
                   "(not with --set-floors)")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_version(p)
    return p


def _print_table(result: BundleEval) -> None:
    cols = [*SLICES, "format", "instruction", "ppl_retention", "latency", "size"]
    print("variant".ljust(18) + "".join(c[:11].rjust(12) for c in cols) + "  gate")
    for v in result.variants:
        row = "".join((f"{v.scores[c]:.3f}" if c in v.scores else "-").rjust(12) for c in cols)
        gate = v.gate.status + (f" {list(v.gate.failed)}" if v.gate.failed else "")
        print(v.name[:17].ljust(18) + row + "  " + gate)


def _mix_tiers(mixes: dict[str, Any]) -> dict[str, str]:
    """Mix name -> tier: `<profile>@<tier>` mixes, and profiles that declare a fixed tier."""
    from edge_runtime.control.tiers import AUTO, TIERS
    from edge_runtime.errors import ProfileError
    from edge_runtime.sim.profile import load_profile

    out = {}
    for name in mixes:
        prof, _, tier = name.rpartition("@")
        if prof and tier in TIERS:
            out[name] = tier
            continue
        try:
            fixed = load_profile(name).tier
        except ProfileError:
            continue  # a hand-written --mix entry that names no profile: its own floors table
        if fixed != AUTO:
            out[name] = fixed
    return out


def _system(args: argparse.Namespace, floors_path: Path) -> int:
    manifest = read_manifest(args.bundle)
    floors = Floors.from_toml(floors_path)
    if args.mix is not None:
        try:
            mixes = json.loads(args.mix.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise EvalError(f"--mix {str(args.mix)!r}: cannot read it as JSON ({e}); give {{profile: {{variant: share}}}}") from e
        if not isinstance(mixes, dict) or not all(isinstance(v, dict) for v in mixes.values()):
            raise EvalError(f"--mix {str(args.mix)!r}: expected {{profile: {{variant: share}}}}, got {str(mixes)[:80]}")
    else:
        mixes = profile_mixes(args.bundle, [p for p in args.profiles.split(",") if p], args.controller,
                              tiered=bool(floors.tiers))
    out = gate_system(manifest, mixes, floors, _mix_tiers(mixes) if floors.tiers else None)
    print(json.dumps(out, indent=2))
    return 0 if all(x["gate"]["status"] == "pass" for x in out.values()) else 1


def run(args: argparse.Namespace) -> int:
    manifest = read_manifest(args.bundle)  # a missing or malformed bundle is the first thing to report
    floors_path = args.floors or args.bundle / FLOORS_FILE
    if args.mix is not None or args.profiles is not None:
        return _system(args, floors_path)
    if args.windows < 1:
        raise EvalError(f"--windows must be >= 1, got {args.windows}")
    config = EvalConfig(windows=args.windows, choice_metric=args.choice_metric, limit=args.limit,
                        threads=args.threads, progress=not args.quiet)
    suite = load_suite(args.suite)  # a malformed suite file is named (file:line) before any model work
    if manifest.model.context_length < config.window:
        raise EvalError(f"the bundle's context ({manifest.model.context_length} tokens) is shorter than the "
                        f"{config.window}-token perplexity window; edge-eval needs a model whose context holds it")
    if args.set_floors:
        if args.windows * config.window < MIN_FLOOR_TOKENS:
            logging.warning("perplexity over %d tokens only; the real floors need >= %d (--windows 60)",
                            args.windows * config.window, MIN_FLOOR_TOKENS)
        previous = Floors.from_toml(floors_path) if floors_path.is_file() else None
        floors, dense = floors_from_dense(args.bundle, suite, config, previous=previous)
        floors.write(floors_path)
        print(f"wrote floors version {floors.version} to {floors_path}")
        if not args.and_gate:
            _print_table(dense)
            return 0
        result = evaluate_bundle(args.bundle, suite, floors, config, reuse=dense)
    else:
        if args.and_gate:
            raise EvalError("--and-gate goes with --set-floors (without it, edge-eval gates every variant anyway)")
        floors = Floors.from_toml(floors_path) if (args.floors or floors_path.is_file()) else None
        if floors is None:
            logging.warning("no floors file at %s: scoring without a gate (write one with --set-floors)", floors_path)
        result = evaluate_bundle(args.bundle, suite, floors, config)
    report = write_report(result, args.report or args.bundle / REPORT_DIR)
    if args.limit is None:
        apply_to_manifest(args.bundle, result)
    _print_table(result)
    if floors is not None:
        print(f"cheapest variant passing every floor: {cheapest_passing(result) or 'none'}")
    if args.limit is None:
        print(f"wrote {report}/report.md and the manifest's quality and gate")
    else:  # scores over part of the suite must not become what the controller and the runtime read
        print(f"wrote {report}/report.md; --limit run: the manifest was left as it was")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="edge-eval: %(levelname)s: %(message)s")
    try:
        require("eval", "edge-eval")
        return run(args)
    except EdgeError as e:
        print(f"edge-eval: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
