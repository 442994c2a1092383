"""Evaluation report: every variant of a bundle x every slice and dimension, pass/fail.

    python benchmarks/eval_report.py --bundle bundles/smollm2-135m

Sets floors from the dense variant first if the bundle has none (`BUNDLE/floors.toml`,
exactly what `edge-eval --set-floors` writes; the dense run is reused, not repeated), then
scores every variant through onnxruntime with the built-in suite and 60 held-out windows
of 512 tokens (30,720 tokens), writes the gate and scores into the manifest and the full
report into BUNDLE/eval/, and copies the summary to benchmarks/results/eval.json and
benchmarks/results/eval.md (the table the README quotes). Per-case results stay in
BUNDLE/eval/report.json.

It answers, measured on the bundle's model: whether pruning costs the edge, adversarial and
multilingual slices more than the common slice (the drop per slice, with paired standard
errors), and which variant clears every floor at the lowest cost. Then it replays every
resource profile with edge-sim and gates the quality the whole system delivers per slice.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge_runtime.bundle import atomic_write_text, read_manifest  # noqa: E402
from harness.evaluate import (  # noqa: E402
    FLOORS_FILE,
    REPORT_DIR,
    EvalConfig,
    apply_to_manifest,
    evaluate_bundle,
    floors_from_dense,
    gate_system,
    profile_mixes,
)
from harness.floors import Floors  # noqa: E402
from harness.report import load_report, report_dict, report_markdown, write_report  # noqa: E402
from harness.suite import DEFAULT_SUITE, load_suite  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def _system_markdown(system: dict, controller: str) -> str:
    lines = ["", f"## The whole system per resource profile (edge-sim, controller `{controller}`)", "",
             "Per-slice quality the controller delivers = share-weighted slice scores of the variants it ran; "
             "requests lost (battery exhausted) count as 0. Gated on the floors file's per-profile floors.", "",
             "| profile | variant mix | common | edge | adversarial | multilingual | gate |", "|---|---|---|---|---|---|---|"]
    for prof, x in system.items():
        mix = ", ".join(f"{k} {v:.0%}" for k, v in x["mix"].items() if v > 0)
        cells = " | ".join(f"{x['delivered'].get(s, float('nan')):.2f}" for s in ("common", "edge", "adversarial", "multilingual"))
        gate = x["gate"]["status"] + (f" ({', '.join(x['gate']['failed'])})" if x["gate"]["failed"] else "")
        lines.append(f"| {prof} | {mix} | {cells} | {gate} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bundle", type=Path, default=ROOT / "bundles" / "smollm2-135m")
    p.add_argument("--suite", type=Path, default=DEFAULT_SUITE)
    p.add_argument("--windows", type=int, default=60, help="held-out windows of 512 tokens (default 60)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--set-floors", action="store_true", help="set floors from dense even if the bundle has some")
    p.add_argument("--out", type=Path, default=RESULTS, help="where eval.json and eval.md go")
    p.add_argument("--controller", default="rule", help="controller edge-sim replays the profiles with (default: rule)")
    p.add_argument("--profiles", default=None,
                   help="comma-separated profiles for whole-system gating (default: every profiles/*.toml)")
    p.add_argument("--from-report", action="store_true",
                   help="rewrite the reports from BUNDLE/eval/report.json without scoring again")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    t0 = time.perf_counter()
    if args.from_report:
        result = load_report(args.bundle / REPORT_DIR / "report.json", args.bundle)
        write_report(result, args.bundle / REPORT_DIR)
    else:
        suite = load_suite(args.suite)
        config = EvalConfig(windows=args.windows, threads=args.threads, progress=True)
        floors_path = args.bundle / FLOORS_FILE
        reuse = None
        if args.set_floors or not floors_path.is_file():
            previous = Floors.from_toml(floors_path) if floors_path.is_file() else None
            floors, reuse = floors_from_dense(args.bundle, suite, config, previous=previous)
            floors.write(floors_path)
            print(f"set floors version {floors.version} from the dense variant: {floors_path}")
        floors = Floors.from_toml(floors_path)
        result = evaluate_bundle(args.bundle, suite, floors, config, reuse=reuse)
        write_report(result, args.bundle / REPORT_DIR)
        apply_to_manifest(args.bundle, result)

    names = args.profiles.split(",") if args.profiles else sorted(p.stem for p in (ROOT / "profiles").glob("*.toml"))
    system = gate_system(read_manifest(args.bundle), profile_mixes(args.bundle, names, args.controller), result.floors)

    data = report_dict(result, cases=False)
    data["system"] = {"controller": args.controller, "profiles": system}
    data["machine"] = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                       "python": platform.python_version()}
    data["wall_s"] = round(time.perf_counter() - t0, 1) if not args.from_report else None
    data["scoring_s"] = round(sum(v.seconds for v in result.variants), 1)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "eval.json", json.dumps(data, indent=1, ensure_ascii=False, allow_nan=False) + "\n")
    md = report_markdown(result).replace("![quality vs cost](quality_vs_cost.png)",
                                         f"Plot and per-case results: `{args.bundle / REPORT_DIR}`.")
    md += _system_markdown(system, args.controller)
    atomic_write_text(args.out / "eval.md", md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
