"""Export report: every variant of a bundle, its size, quality and speed, in one run.

    python benchmarks/export_report.py --bundle bundles/smollm2-135m

Reads what the exporter recorded (method, level, params, file size, held-out
perplexity, parity, export time) and re-measures speed for all variants in this run,
round-robin over `--rounds` rounds in fresh processes (best of each), so that ratios
between variants are fair on a noisy shared machine. Also measures transformers' eager
`generate` on the same prompt (the baseline ORT must beat) and, with
`--calibration-memory`, the peak RSS of pruning with 128x512-token calibration.

Writes benchmarks/results/export.json (a `variants` list with the manifest's keys plus
the measurements) and benchmarks/results/export.md (the table the README quotes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge_runtime import bundle as B  # noqa: E402
from edge_runtime.engine.probe import measure_in_subprocess  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def transformers_decode_tok_s(threads: int, new_tokens: int = 64) -> dict[str, float]:
    """Greedy `generate` with transformers' eager fp32 model (fresh process)."""
    code = f"""
import json, time, torch, warnings
warnings.simplefilter("ignore")
torch.set_num_threads({threads})
from export.load import load_model
lm = load_model()
ids = torch.tensor([lm.tokenizer.encode("Once upon a time, there was a little").ids])
m = lm.model
m.generation_config.pad_token_id = m.config.eos_token_id
with torch.no_grad():
    m.generate(ids, max_new_tokens=8, do_sample=False)
    best = 1e9
    for _ in range(2):
        t = time.perf_counter()
        out = m.generate(ids, max_new_tokens={new_tokens}, min_new_tokens={new_tokens}, do_sample=False)
        best = min(best, time.perf_counter() - t)
print(json.dumps({{"decode_tok_s": (out.shape[1] - ids.shape[1]) / best}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def calibration_memory(samples: int, seq_len: int, method: str) -> dict[str, float]:
    """Peak RSS of pruning the default model with `samples` x `seq_len` calibration (fresh process)."""
    code = f"""
import json, time, torch
from export.load import load_model
from export.corpus import calibration_windows
from export.prune import PruneConfig, prune_model
from edge_runtime.engine.probe import peak_rss_mb
lm = load_model()
before = peak_rss_mb()
calib = calibration_windows(lm.tokenizer, {samples}, {seq_len})
cfg = PruneConfig.from_dict({{"method": "{method}", "level": 0.5, "samples": {samples}, "seq_len": {seq_len}}})
t = time.perf_counter()
prune_model(lm.model, cfg, calib, progress=False)
print(json.dumps({{"method": "{method}", "samples": {samples}, "seq_len": {seq_len},
                  "seconds": time.perf_counter() - t, "peak_rss_mb": peak_rss_mb(),
                  "rss_after_load_mb": before}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_speeds(root: Path, manifest: B.Manifest, rounds: int, threads: int) -> dict[str, dict[str, float]]:
    best: dict[str, dict[str, float]] = {}
    for r in range(rounds):
        for v in manifest.variants:
            c = measure_in_subprocess(root / v.onnx, threads=threads)
            print(f"  round {r + 1}/{rounds} {v.name}: prefill {1000 / c['prefill_ms_per_token']:.0f} tok/s, "
                  f"decode {1000 / c['decode_ms_per_token']:.1f} tok/s", flush=True)
            b = best.setdefault(v.name, dict(c))
            for k in ("prefill_ms_per_token", "decode_ms_per_token", "load_s"):
                b[k] = min(b[k], c[k])
            b["peak_rss_mb"] = max(b["peak_rss_mb"], c["peak_rss_mb"])
    return best


def targets(rows: list[dict], hf: dict | None, calib: dict | None) -> list[tuple[str, str, bool | None]]:
    by = {r["name"]: r for r in rows}
    dense = by.get("dense")
    out: list[tuple[str, str, bool | None]] = []
    if dense is None:
        return out

    def ppl(name: str) -> float | None:
        return by[name]["ppl_vs_dense"] if name in by else None

    unstr50 = [r for r in rows if not r["structured"] and r["quantization"] == "none" and r["method"] in
               ("magnitude", "wanda", "sparsegpt") and abs(r["level"] - 0.5) < 1e-6]
    if unstr50:
        best = min(unstr50, key=lambda r: r["ppl_vs_dense"])
        out.append(("50% unstructured, best method ≤ 1.5× dense perplexity",
                    f"{best['name']}: {best['ppl_vs_dense']:.2f}×", best["ppl_vs_dense"] <= 1.5))
        order = {r["method"]: r["ppl_vs_dense"] for r in unstr50}
        if {"magnitude", "wanda", "sparsegpt"} <= set(order):
            ok = max(order["wanda"], order["sparsegpt"]) < order["magnitude"]
            out.append(("order SparseGPT ≈ Wanda ≪ magnitude",
                        ", ".join(f"{k} {v:.2f}×" for k, v in sorted(order.items(), key=lambda kv: kv[1])), ok))
    for r in rows:
        if not r["structured"] and r["quantization"] == "none" and abs(r["level"] - 0.3) < 1e-6:
            out.append((f"30% unstructured ≤ 1.1× dense ({r['name']})", f"{r['ppl_vs_dense']:.2f}×",
                        r["ppl_vs_dense"] <= 1.1))
    structured = sorted((r for r in rows if r["structured"] and r["quantization"] == "none"), key=lambda r: r["level"])
    for r in structured:
        if abs(r["level"] - 0.25) < 1e-6:
            out.append(("structured 25%: ≤ 1.6× dense perplexity", f"{r['ppl_vs_dense']:.2f}×", r["ppl_vs_dense"] <= 1.6))
            out.append(("structured 25%: decode ≥ 1.2× dense", f"{r['decode_speedup']:.2f}×", r["decode_speedup"] >= 1.2))
    if structured:
        top = structured[-1]
        out.append((f"largest structured level ({top['name']}): decode ≥ 1.5× dense",
                    f"{top['decode_speedup']:.2f}×", top["decode_speedup"] >= 1.5))
        quant = [r for r in rows if r["parent"] == top["name"]]
        for q in quant:
            parent_ppl = top["perplexity"]
            ratio = q["perplexity"] / parent_ppl if q["perplexity"] and parent_ppl else None
            out.append((f"{q['name']}: decode ≥ 2× dense fp32", f"{q['decode_speedup']:.2f}×", q["decode_speedup"] >= 2.0))
            out.append((f"{q['name']}: perplexity ≤ 1.1× its fp32 parent",
                        "n/a" if ratio is None else f"{ratio:.3f}×", None if ratio is None else ratio <= 1.1))
    if hf:
        ratio = dense["decode_tok_s"] / hf["decode_tok_s"]
        out.append(("ORT dense decode ≥ 1.6× transformers eager generate",
                    f"{dense['decode_tok_s']:.1f} vs {hf['decode_tok_s']:.1f} tok/s = {ratio:.2f}×", ratio >= 1.6))
    for r in rows:
        if not r["structured"] and r["quantization"] == "none" and abs(r["level"] - 0.5) < 1e-6 and r["method"] == "wanda":
            out.append(("unstructured 50% stored: file ≤ 60% of dense", f"{r['file_vs_dense']:.1%}",
                        r["file_vs_dense"] <= 0.60))
    export_s = sum(r["export_s"] or 0 for r in rows)
    out.append(("default recipe exports in ≤ 30 min", f"{export_s / 60:.1f} min (sum of per-variant times)",
                export_s <= 1800))
    if calib:
        out.append((f"peak RSS pruning with {calib['samples']}×{calib['seq_len']} calibration ({calib['method']}) ≤ 2 GB",
                    f"{calib['peak_rss_mb']:.0f} MB", calib["peak_rss_mb"] <= 2048))
    return out


def markdown(rows: list[dict], checks: list[tuple[str, str, bool | None]], meta: dict) -> str:
    lines = [
        f"Measured {meta['date']} on {meta['machine']}, onnxruntime CPU, {meta['threads']} threads; "
        f"speeds best of {meta['rounds']} round-robin rounds in fresh processes; perplexity on "
        f"{meta['ppl_tokens']} held-out tokens ({meta['ppl_windows']} windows of 512).",
        "",
        "| variant | method | level | quant | params | non-zero | file MB | perplexity | ppl × dense | "
        "prefill tok/s | decode tok/s | decode × dense | parity (max abs) | export s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['method']} | {r['level']:.2f} | {r['quantization']} | {r['params'] / 1e6:.1f}M | "
            f"{r['nonzero_params'] / 1e6:.1f}M | {r['file_bytes'] / 2**20:.0f} | {r['perplexity']:.2f} | "
            f"{r['ppl_vs_dense']:.2f} | {r['prefill_tok_s']:.0f} | {r['decode_tok_s']:.1f} | "
            f"{r['decode_speedup']:.2f} | {r['parity_max_abs']:.1e} | {r['export_s']:.0f} |"
        )
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    for name, value, ok in checks:
        lines.append(f"| {name} | {value} | {'yes' if ok else 'n/a' if ok is None else '**no**'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=ROOT / "bundles" / "smollm2-135m")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-transformers", action="store_true", help="skip the transformers generate baseline")
    ap.add_argument("--calibration-memory", action="store_true",
                    help="also measure peak RSS of SparseGPT pruning with 128x512 calibration (minutes)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    manifest = B.read_manifest(args.bundle)
    B.check_files(args.bundle, manifest)
    print(f"measuring {len(manifest.variants)} variants x {args.rounds} rounds ...", flush=True)
    speeds = measure_speeds(args.bundle, manifest, args.rounds, args.threads)
    hf = None if args.no_transformers else transformers_decode_tok_s(args.threads)
    calib = calibration_memory(128, 512, "sparsegpt") if args.calibration_memory else None

    dense = next((v for v in manifest.variants if v.name == "dense"), manifest.variants[0])
    d_speed, rows = speeds[dense.name], []
    for v in manifest.variants:
        s = speeds[v.name]
        row = v.to_dict()
        row.update(
            level=float(v.extra.get("level", v.sparsity)),
            perplexity=v.quality.perplexity,
            ppl_vs_dense=(v.quality.perplexity or float("nan")) / (dense.quality.perplexity or float("nan")),
            file_vs_dense=v.file_bytes / dense.file_bytes,
            prefill_tok_s=1000 / s["prefill_ms_per_token"],
            decode_tok_s=1000 / s["decode_ms_per_token"],
            decode_speedup=d_speed["decode_ms_per_token"] / s["decode_ms_per_token"],
            prefill_speedup=d_speed["prefill_ms_per_token"] / s["prefill_ms_per_token"],
            peak_rss_mb_measured=s["peak_rss_mb"],
            load_s=s["load_s"],
            parity_max_abs=max(v.parity.prefill_max_abs or 0.0, v.parity.decode_max_abs or 0.0),
            export_s=v.extra.get("export_s"),
        )
        rows.append(row)
    checks = targets(rows, hf, calib)
    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "threads": args.threads,
        "rounds": args.rounds,
        "ppl_windows": manifest.extra.get("heldout", {}).get("windows"),
        "ppl_tokens": (manifest.extra.get("heldout", {}).get("windows") or 0) * 512,
    }
    result = {"meta": meta, "bundle": str(args.bundle), "transformers": hf, "calibration_memory": calib,
              "variants": rows, "targets": [{"target": n, "measured": m, "met": ok} for n, m, ok in checks]}
    args.out.mkdir(parents=True, exist_ok=True)
    B.atomic_write_text(args.out / "export.json", json.dumps(result, indent=2, default=float) + "\n")
    md = markdown(rows, checks, meta)
    B.atomic_write_text(args.out / "export.md", md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
