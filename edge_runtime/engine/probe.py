"""Measure variants' costs on this machine: prefill and decode ms per token, peak RSS.

`python -m edge_runtime.engine.probe MODEL.onnx` measures one variant in a fresh process
(so that the peak resident memory is the variant's alone and timings are not disturbed by
the caller's heap); the exporter records it as the variant's `cost`.

`python -m edge_runtime.engine.probe --bundle DIR --rounds 5` re-measures every variant of a
bundle on the device it runs on: `rounds` rounds, each variant once per round in a rotated
order, so that a busy spell of another process falls on every variant alike instead of on
whichever ran then. The median and the spread (max - min over rounds) go into the manifest
as `cost.device`, which the runtime's catalog prefers to the build machine's figures.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.bundle import Cost, read_manifest, write_manifest
from edge_runtime.engine.residency import peak_rss_mb
from edge_runtime.engine.session import VariantSession
from edge_runtime.errors import BundleError, EdgeError, VariantError

PROMPT_TOKENS = 128
DECODE_TOKENS = 32


def measure(path: str | Path, threads: int | None = None, prompt_tokens: int = PROMPT_TOKENS,
            decode_tokens: int = DECODE_TOKENS, repeats: int = 3, spin: bool = False) -> dict[str, float]:
    """Cost of the variant at `path` through the runtime's own decoder, best of `repeats`.

    The minimum is the least noisy estimate on a shared machine. `spin` matches the
    runtime's setting (RuntimeConfig.spin, off by default).
    """
    t0 = time.perf_counter()
    s = VariantSession(path, threads=threads, spin=spin)
    load_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, s.vocab, size=prompt_tokens, dtype=np.int64)
    dec = s.decoder(capacity=prompt_tokens + decode_tokens + 1, prefill_chunk=max(prompt_tokens, 1))
    prefill, decode = [], []
    for _ in range(repeats):
        dec.reset()
        t = time.perf_counter()
        logits = dec.prefill(prompt)
        prefill.append(time.perf_counter() - t)
        t = time.perf_counter()
        for _ in range(decode_tokens):
            logits = dec.step(int(logits.argmax()))
        decode.append(time.perf_counter() - t)
    return {
        "prefill_ms_per_token": 1000 * min(prefill) / prompt_tokens,
        "decode_ms_per_token": 1000 * min(decode) / decode_tokens,
        "peak_rss_mb": peak_rss_mb(),
        "load_s": load_s,
        "threads": s.session.get_session_options().intra_op_num_threads,
        "prompt_tokens": prompt_tokens,
        "spin": spin,
    }


def measure_in_subprocess(path: str | Path, threads: int | None = None, timeout_s: float = 600) -> dict[str, float]:
    """`measure` in a fresh Python process; raises VariantError with its stderr on failure."""
    cmd = [sys.executable, "-m", "edge_runtime.engine.probe", str(path)]
    if threads:
        cmd += ["--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        raise VariantError(f"measuring {str(path)!r} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


KEYS = ("prefill_ms_per_token", "decode_ms_per_token")


def measure_bundle(bundle_dir: str | Path, rounds: int = 5, threads: int | None = None,
                   measure_one: Any = None) -> dict[str, dict[str, Any]]:
    """Every gated variant of a bundle, `rounds` times, interleaved; per variant the median and
    spread of each cost (`measure_one(path, threads)` defaults to `measure_in_subprocess`)."""
    if rounds < 1:
        raise BundleError(f"rounds must be >= 1, got {rounds}; use 3 or more for a median worth trusting")
    measure_one = measure_one or measure_in_subprocess
    manifest = read_manifest(bundle_dir)
    names = [v.name for v in manifest.variants if v.passed]
    samples: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]  # rotate: no variant always first
        for name in order:
            samples[name].append(measure_one(Path(bundle_dir) / manifest.variant(name).onnx, threads))
    out = {}
    for name, rows in samples.items():
        fig: dict[str, Any] = {"rounds": rounds, "host": platform.node(),
                               "measured": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
        for key in KEYS:
            xs = np.array([row[key] for row in rows], dtype=np.float64)
            fig[key] = round(float(np.median(xs)), 4)
            fig[key.replace("_ms_per_token", "_spread_ms")] = round(float(xs.max() - xs.min()), 4)
        out[name] = fig
    return out


def record_device_costs(bundle_dir: str | Path, figures: dict[str, dict[str, Any]]) -> None:
    """Write `figures` (from `measure_bundle`) as each variant's `cost.device`, atomically."""
    manifest = read_manifest(bundle_dir)
    for name, fig in figures.items():
        v = manifest.variant(name)
        manifest = manifest.replace_variant(replace(v, cost=Cost(v.cost.prefill_ms_per_token, v.cost.decode_ms_per_token,
                                                                  v.cost.peak_rss_mb, {**v.cost.extra, "device": fig})))
    write_manifest(bundle_dir, manifest)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", help="a variant's model.onnx (or --bundle DIR, or --pairs BUNDLE)")
    ap.add_argument("--bundle", help="re-measure every gated variant of this bundle and record cost.device")
    ap.add_argument("--rounds", type=int, default=5, help="with --bundle: interleaved rounds (median over them)")
    ap.add_argument("--pairs", metavar="BUNDLE", help="instead: re-measure every speculative pair of BUNDLE and "
                    "write the results into its manifest")
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads (default: all cores)")
    ap.add_argument("--prompt-tokens", type=int, default=PROMPT_TOKENS)
    ap.add_argument("--decode-tokens", type=int, default=DECODE_TOKENS)
    args = ap.parse_args(argv)
    if sum(x is not None for x in (args.model, args.bundle, args.pairs)) != 1:
        ap.error("give exactly one of MODEL.onnx, --bundle DIR or --pairs BUNDLE")
    try:
        if args.pairs:
            from edge_runtime.engine.pairs import measure_pairs

            m = measure_pairs(args.pairs, threads=args.threads)
            print(json.dumps([p.to_dict() for p in m.pairs], indent=1))
        elif args.bundle:
            figures = measure_bundle(args.bundle, args.rounds, args.threads)
            record_device_costs(args.bundle, figures)
            for name, f in figures.items():
                print(f"{name:>24}: prefill {f['prefill_ms_per_token']:.3f} ms/token (spread {f['prefill_spread_ms']:.3f}), "
                      f"decode {f['decode_ms_per_token']:.3f} ms/token (spread {f['decode_spread_ms']:.3f})")
        else:
            print(json.dumps(measure(args.model, args.threads, args.prompt_tokens, args.decode_tokens)))
    except EdgeError as e:
        print(f"edge-probe: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
