"""Measure one variant's cost on this machine: prefill and decode ms per token, peak RSS.

Runs in a fresh process (`python -m edge_runtime.engine.probe MODEL.onnx`) so that the peak
resident memory is the variant's alone and timings are not disturbed by the caller's
heap. The exporter records the result as the variant's `cost` in the manifest; on a
device, the same command tells how much slower or faster it is than the build machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from edge_runtime.engine.session import VariantSession
from edge_runtime.errors import EdgeError, VariantError

PROMPT_TOKENS = 128
DECODE_TOKENS = 32


def peak_rss_mb() -> float:
    """Peak resident memory of this process image, in MiB.

    Linux's VmHWM resets at exec; ru_maxrss does not (a child forked from a big parent
    would report the parent's size), so it is only the fallback.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", help="a variant's model.onnx")
    ap.add_argument("--pairs", metavar="BUNDLE", help="instead: re-measure every speculative pair of BUNDLE and "
                    "write the results into its manifest")
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads (default: all cores)")
    ap.add_argument("--prompt-tokens", type=int, default=PROMPT_TOKENS)
    ap.add_argument("--decode-tokens", type=int, default=DECODE_TOKENS)
    args = ap.parse_args(argv)
    if (args.model is None) == (args.pairs is None):
        ap.error("give a model.onnx, or --pairs BUNDLE")
    try:
        if args.pairs:
            from edge_runtime.engine.pairs import measure_pairs

            m = measure_pairs(args.pairs, threads=args.threads)
            print(json.dumps([p.to_dict() for p in m.pairs], indent=1))
            return 0
        print(json.dumps(measure(args.model, args.threads, args.prompt_tokens, args.decode_tokens)))
    except EdgeError as e:
        print(f"edge-probe: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
