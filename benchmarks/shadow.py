"""Shadow-scoring benchmark: live latency with shadow scoring on vs off at half the sustainable rate.

    python benchmarks/shadow.py --bundle bundles/smollm2-135m [--threads 2] [--quick]

1. The sustainable rate: requests served back to back (closed loop) on the served variant;
   rate = 1 / mean service time.
2. Open-loop Poisson arrivals at `--load` (0.5) of that rate, in blocks that alternate shadow
   scoring off and on (the same runtime; the same seeded arrival times and prompts per block
   pair), so machine noise hits both alike. Shadow scoring samples every request a non-dense
   variant served (`all_non_dense`), so the dense re-runs compete for every idle gap.
3. Per condition: live latency p50/p95 (submitted -> done), requests, and for "on" the shadow
   jobs scored and preempted and the worker seconds spent on them.

Target (issue 17): live p95 with shadow on within 5% of off. Writes
`benchmarks/results/shadow.json` and `.md`.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from edge_runtime.control.signals import StaticSource  # noqa: E402
from edge_runtime.runtime import Runtime  # noqa: E402
from edge_runtime.shadow.config import ShadowConfig  # noqa: E402

PROMPTS = ["Is the sun hot? Answer only yes or no.", "List three fruits, one per line.",
           "Write a short story about a lighthouse keeper.", "Give a JSON object for a person named Ana, age 30.",
           "Explain why the sky is blue.", "What is 12 plus 15? Give only the number."]


def sustainable_rate(rt: Runtime, variant: str, max_tokens: int, n: int) -> float:
    """Requests per second the worker sustains back to back."""
    rt.generate(PROMPTS[0], variant=variant, max_tokens=max_tokens)  # warm-up
    t0 = time.perf_counter()
    for i in range(n):
        rt.generate(PROMPTS[i % len(PROMPTS)], variant=variant, max_tokens=max_tokens)
    return n / (time.perf_counter() - t0)


def block(rt: Runtime, variant: str, rate: float, n: int, max_tokens: int, seed: int) -> list[float]:
    """Poisson arrivals at `rate`; the live latency (s) of each request."""
    rng = random.Random(seed)
    gaps = [rng.expovariate(rate) for _ in range(n)]
    handles, lock = [], threading.Lock()
    start = time.perf_counter()
    due = start
    for i, gap in enumerate(gaps):
        due += gap
        time.sleep(max(0.0, due - time.perf_counter()))
        h = rt.submit(PROMPTS[(seed + i) % len(PROMPTS)], variant=variant, max_tokens=max_tokens, stream=False)
        with lock:
            handles.append(h)
    return [h.result().timings.total_s for h in handles]


def jobs(rt: Runtime) -> dict[str, float]:
    out = {}
    for fam in rt.metrics.registry.collect():
        if fam.name in ("edge_shadow_jobs", "edge_shadow_busy_seconds"):
            for s in fam.samples:
                if s.name.endswith("_total"):
                    out[s.labels.get("outcome", "busy_seconds")] = s.value
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    shadow = ShadowConfig(enabled=True, sample=0.0, all_non_dense=True, max_tokens=args.max_tokens,
                          max_preemptions=1000)
    rt = Runtime.open(args.bundle, threads=args.threads, preload="all", allow_ungated=True,
                      signals=StaticSource(), shadow=shadow)
    try:
        scorer = rt.shadow
        variant = args.variant or next(v.name for v in rt.manifest.variants if v.name != scorer.dense)
        rt.shadow = None
        rate = sustainable_rate(rt, variant, args.max_tokens, args.calibrate)
        lat: dict[str, list[float]] = {"off": [], "on": []}
        for b in range(args.blocks):
            for cond in (("off", "on") if b % 2 == 0 else ("on", "off")):
                rt.shadow = scorer if cond == "on" else None
                lat[cond] += block(rt, variant, args.load * rate, args.per_block, args.max_tokens, seed=b)
                print(f"block {b} {cond}: {len(lat[cond])} requests so far", file=sys.stderr)
        done = jobs(rt)
    finally:
        rt.close(grace_s=5)
    rows = {c: {"requests": len(v), "p50_s": float(np.percentile(v, 50)), "p95_s": float(np.percentile(v, 95))}
            for c, v in lat.items()}
    return {"bundle": str(args.bundle), "variant": variant, "dense": scorer.dense, "threads": args.threads,
            "max_tokens": args.max_tokens, "sustainable_rps": rate, "load": args.load, "conditions": rows,
            "p95_ratio_on_off": rows["on"]["p95_s"] / rows["off"]["p95_s"], "shadow_jobs": done,
            "machine": platform.platform(), "quick": args.quick}


def markdown(r: dict[str, Any]) -> str:
    lines = [f"# Shadow scoring: live latency at {r['load']:.0%} of the sustainable rate",
             "", f"bundle `{r['bundle']}`, served `{r['variant']}`, shadow re-runs on `{r['dense']}`, "
             f"{r['max_tokens']} tokens, sustainable {r['sustainable_rps']:.2f} req/s"
             + (" (quick smoke run: not a result)" if r["quick"] else ""), "",
             "| shadow | requests | p50 s | p95 s |", "|---|---:|---:|---:|"]
    for c, row in r["conditions"].items():
        lines.append(f"| {c} | {row['requests']} | {row['p50_s']:.3f} | {row['p95_s']:.3f} |")
    lines += ["", f"p95 on / off: **{r['p95_ratio_on_off']:.3f}** (target <= 1.05)",
              f"shadow jobs: {json.dumps({k: round(v, 2) for k, v in r['shadow_jobs'].items()})}", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--variant", default=None, help="served variant (default: the first non-dense one)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--load", type=float, default=0.5, help="share of the sustainable rate (default 0.5)")
    ap.add_argument("--blocks", type=int, default=6, help="block pairs (off, on), interleaved")
    ap.add_argument("--per-block", type=int, default=20, help="requests per block")
    ap.add_argument("--calibrate", type=int, default=10, help="back-to-back requests for the sustainable rate")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 2 block pairs of 5 requests")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "shadow")
    args = ap.parse_args()
    if args.quick:
        args.blocks, args.per_block, args.calibrate = 2, 5, 3
    r = run(args)
    md = markdown(r)
    print(md)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(r, indent=2))
    args.out.with_suffix(".md").write_text(md)


if __name__ == "__main__":
    main()
