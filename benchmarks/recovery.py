"""Quality against recovery tokens: how much of what pruning lost a brief distillation buys.

    python benchmarks/recovery.py                       # structured-25 at 0, 10k, 20k, 40k, 80k tokens
    python benchmarks/recovery.py --level 0.35 --tokens 0,20000,40000 --windows 30

One `edge-export` run builds a bundle holding the dense model and one copy of the pruned
variant per token budget (`structured-25-r20000` recovers on 20,000 loss tokens; `-r0` is
the one-shot pruned model): the teacher data is written once and shared, each copy is
distilled from scratch with the same schedule. Then the evaluation harness sets floors from
the dense variant (never lowered) and scores every copy: the four slices, format,
instruction, perplexity and the gate. Writes benchmarks/results/recovery.{json,md,png}.
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

from export.pipeline import ExportOptions, export_bundle  # noqa: E402
from export.recipe import Recipe  # noqa: E402
from harness.evaluate import EvalConfig, evaluate_bundle, floors_from_dense  # noqa: E402
from harness.suite import SLICES, load_suite  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
COLUMNS = [*SLICES, "format", "instruction", "ppl_retention"]


def recipe(level: float, budgets: list[int], recovery: dict) -> Recipe:
    """Dense, then one structured copy per token budget (0: not recovered)."""
    tag = f"structured-{round(level * 100)}"
    variants: list[dict] = [{"name": "dense", "method": "dense"}]
    for b in budgets:
        v = {"name": f"{tag}-r{b}", "method": "structured", "sparsity": level}
        if b:
            v["recovery"] = {"tokens": b}
        variants.append(v)
    return Recipe.from_dict({"name": f"recovery-curve-{tag}", "evaluation": {"ppl_windows": 0},
                             "recovery": recovery, "variant": variants})


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [f"# Recovery: quality against distillation tokens ({meta['variant']})", "",
             f"- model `{meta['model']}`, floors from the dense variant (suite {meta['suite']}), "
             f"{meta['windows']} held-out windows of 512 tokens; machine: {meta['machine']}",
             f"- recovery: {json.dumps(meta['recovery'])}", "",
             "| tokens | minutes | " + " | ".join(COLUMNS) + " | perplexity | gate |",
             "|---|---|" + "---|" * len(COLUMNS) + "---|---|"]
    for r in rows:
        lines.append(f"| {r['tokens']:,} | {r['minutes']:.1f} | " + " | ".join(f"{r['scores'][c]:.3f}" for c in COLUMNS)
                     + f" | {r['perplexity']:.2f} | {r['gate']} |")
    f = meta["floors"]
    lines.append("| *floor* | | " + " | ".join(f"≥ {f[c]:.2f}" if c in f else "" for c in COLUMNS) + " | | |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], meta: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = [r["tokens"] / 1000 for r in rows]
    for c in COLUMNS:
        line = ax.plot(xs, [r["scores"][c] for r in rows], marker="o", label=c)[0]
        if c in meta["floors"]:
            ax.axhline(meta["floors"][c], color=line.get_color(), linestyle=":", linewidth=0.8)
    ax.set_xlabel("recovery tokens (thousands)")
    ax.set_ylabel("score (dotted: floor)")
    ax.set_title(f"{meta['variant']}: quality against recovery tokens")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--level", type=float, default=0.25, help="structured level (default: %(default)s)")
    ap.add_argument("--tokens", default="0,10000,20000,40000,80000", help="comma-separated budgets")
    ap.add_argument("--windows", type=int, default=60, help="held-out windows for perplexity")
    ap.add_argument("--work", type=Path, default=ROOT / "bundles" / "recovery-curve")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    budgets = [int(x) for x in args.tokens.split(",") if x.strip()]
    r = recipe(args.level, budgets, {})
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
        rows.append({"variant": v.name, "tokens": rec.tokens if rec else 0, "steps": rec.steps if rec else 0,
                     "minutes": (rec.seconds / 60) if rec else 0.0, "peak_rss_mb": rec.extra["peak_rss_mb"] if rec else None,
                     "scores": e.scores, "perplexity": e.perplexity, "gate": e.gate.status,
                     "failed": list(e.gate.failed)})
    rows.sort(key=lambda x: x["tokens"])
    meta = {"variant": f"structured-{round(args.level * 100)}", "model": args.model, "suite": suite.version,
            "windows": args.windows, "machine": f"{platform.machine()} {len(__import__('os').sched_getaffinity(0))} cores",
            "recovery": r.recovery.to_json(), "floors": dict(floors.floors),
            "dense": ev.variant("dense").scores, "wall_s": round(time.perf_counter() - t0)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "recovery.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n", encoding="utf-8")
    (args.out / "recovery.md").write_text(markdown(rows, meta), encoding="utf-8")
    plot(rows, meta, args.out / "recovery.png")
    print(markdown(rows, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
