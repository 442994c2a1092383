"""Quality against recovery tokens: how much of what pruning lost a brief distillation buys.

    python benchmarks/recovery.py                       # structured-25 at 0, 10k, 20k, 40k, 80k tokens
    python benchmarks/recovery.py --level 0.15,0.35 --tokens 0,20000,40000 --windows 30

One `edge-export` run builds a bundle holding the dense model and one copy of each pruned
level per token budget (`structured-25-r20000` recovers on 20,000 loss tokens; `-r0` is
the one-shot pruned model): the teacher data is written once and shared, each copy is
distilled from scratch with the same schedule. Then the evaluation harness sets floors from
the dense variant (never lowered) and scores every copy: the four slices, format,
instruction, perplexity, the gate and the tiers of floors each copy clears (the tiers the
runtime may offer it in). Writes benchmarks/results/recovery.{json,md,png}
(`--name` changes the stem). `--recovery KEY=VALUE,...` sets the distillation as
`edge-export --recovery` does (e.g. `lr=3e-4`), except the budgets, which `--tokens` gives.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge_runtime.errors import EdgeError  # noqa: E402
from export.cli import apply_recovery_flags  # noqa: E402
from export.pipeline import ExportOptions, export_bundle  # noqa: E402
from export.recipe import Recipe  # noqa: E402
from harness.evaluate import EvalConfig, evaluate_bundle, floors_from_dense  # noqa: E402
from harness.suite import SLICES, load_suite  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
COLUMNS = [*SLICES, "format", "instruction", "ppl_retention"]


def tag(level: float) -> str:
    return f"structured-{round(level * 100)}"


def recipe(levels: list[float], budgets: list[int]) -> Recipe:
    """Dense, then one structured copy per level and token budget (0: not recovered)."""
    variants: list[dict] = [{"name": "dense", "method": "dense"}]
    for level in levels:
        for b in budgets:
            v = {"name": f"{tag(level)}-r{b}", "method": "structured", "sparsity": level}
            if b:
                v["recovery"] = {"tokens": b}
            variants.append(v)
    default = Recipe.from_toml(ROOT / "export" / "recipes" / "default.toml")  # prune as `make demo` does
    return Recipe.from_dict({"name": "recovery-curve-" + "-".join(tag(x) for x in levels),
                             "calibration": {"samples": default.calibration_samples, "seq_len": default.calibration_seq_len},
                             "evaluation": {"ppl_windows": 0}, "variant": variants})


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [f"# Recovery: quality against distillation tokens ({', '.join(meta['variants'])})", "",
             f"- model `{meta['model']}`, floors from the dense variant (suite {meta['suite']}), "
             f"{meta['windows']} held-out windows of 512 tokens; machine: {meta['machine']}",
             f"- recovery: {json.dumps(meta['recovery'])}", "",
             "| variant | tokens | minutes | " + " | ".join(COLUMNS) + " | perplexity | gate | tiers cleared |",
             "|---|---|---|" + "---|" * len(COLUMNS) + "---|---|---|"]
    for r in rows:
        lines.append(f"| {r['level']} | {r['tokens']:,} | {r['minutes']:.1f} | "
                     + " | ".join(f"{r['scores'][c]:.3f}" for c in COLUMNS)
                     + f" | {r['perplexity']:.2f} | {r['gate']} | {', '.join(r['tiers']) or 'none'} |")
    for name, fl in [("floor", meta["floors"]), *((f"{t} tier", f) for t, f in meta["tiers"].items() if t != "normal")]:
        lines.append(f"| *{name}* | | | " + " | ".join(f"≥ {fl[c]:.2f}" if c in fl else "" for c in COLUMNS) + " | | | |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], meta: dict, path: Path) -> None:
    """One panel per pruned level: each score against recovery tokens, its floor dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = meta["variants"]
    fig, axes = plt.subplots(1, len(levels), figsize=(6.5 * len(levels), 4.5), squeeze=False, sharey=True)
    for ax, level in zip(axes[0], levels, strict=True):
        mine = [r for r in rows if r["level"] == level]
        xs = [r["tokens"] / 1000 for r in mine]
        for c in COLUMNS:
            line = ax.plot(xs, [r["scores"][c] for r in mine], marker="o", label=c)[0]
            if c in meta["floors"]:
                ax.axhline(meta["floors"][c], color=line.get_color(), linestyle=":", linewidth=0.8)
        ax.set_xlabel("recovery tokens (thousands)")
        ax.set_title(f"{level}: quality against recovery tokens")
    axes[0][0].set_ylabel("score (dotted: floor)")
    axes[0][-1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--level", default="0.25", help="comma-separated structured levels (default: %(default)s)")
    ap.add_argument("--tokens", default="0,10000,20000,40000,80000", help="comma-separated budgets")
    ap.add_argument("--windows", type=int, default=60, help="held-out windows for perplexity")
    ap.add_argument("--work", type=Path, default=ROOT / "bundles" / "recovery-curve")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--name", default="recovery", help="stem of the result files (default: %(default)s)")
    ap.add_argument("--recovery", default=None, metavar="KEY=VALUE,...",
                    help="recovery settings for every copy, as edge-export --recovery takes them (e.g. lr=3e-4)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    budgets = [int(x) for x in args.tokens.split(",") if x.strip()]
    levels = [float(x) for x in args.level.split(",") if x.strip()]
    base = recipe(levels, budgets)
    try:
        r = apply_recovery_flags(base, args.recovery, None)
    except EdgeError as e:
        ap.error(str(e))
    if [v.recovery and v.recovery.tokens for v in r.variants] != [v.recovery and v.recovery.tokens for v in base.variants]:
        ap.error(f"--recovery {args.recovery!r} would replace every copy's budget; give the budgets with --tokens")
    t0 = time.perf_counter()
    result = export_bundle(args.model, args.work, r, force=True,
                           options=ExportOptions(threads=args.threads, measure_cost=False))
    suite, cfg = load_suite(), EvalConfig(windows=args.windows, threads=args.threads, progress=True)
    floors, dense = floors_from_dense(args.work, suite, cfg)
    ev = evaluate_bundle(args.work, suite, floors, cfg, reuse=dense)
    rows = []
    for v in result.manifest.variants:
        if v.name == "dense":
            continue
        e = ev.variant(v.name)
        rec = v.recovery
        rows.append({"variant": v.name, "level": v.name.rsplit("-r", 1)[0], "tiers": list(e.gate.extra.get("tiers", [])),
                     "tokens": rec.tokens if rec else 0, "steps": rec.steps if rec else 0,
                     "minutes": (rec.seconds / 60) if rec else 0.0, "peak_rss_mb": rec.extra["peak_rss_mb"] if rec else None,
                     "scores": e.scores, "perplexity": e.perplexity, "gate": e.gate.status,
                     "failed": list(e.gate.failed)})
    rows.sort(key=lambda x: (x["level"], x["tokens"]))
    meta = {"variants": [tag(x) for x in levels], "model": args.model, "suite": suite.version,
            "windows": args.windows, "machine": f"{platform.machine()} {len(os.sched_getaffinity(0))} cores",
            "recovery": r.recovery.to_json(), "floors": dict(floors.floors),
            "tiers": {t: dict(f) for t, f in floors.tiers.items()},
            "dense": ev.variant("dense").scores, "wall_s": round(time.perf_counter() - t0)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n", encoding="utf-8")
    (args.out / f"{args.name}.md").write_text(markdown(rows, meta), encoding="utf-8")
    plot(rows, meta, args.out / f"{args.name}.png")
    print(markdown(rows, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
