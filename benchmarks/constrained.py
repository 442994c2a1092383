"""Constrained-decoding overhead: decode tokens/s with and without a JSON schema, on one variant.

    python benchmarks/constrained.py --bundle /work/bundles/smollm2-135m [--variant NAME] [--runs 7]

Each run generates `--tokens` greedy tokens twice through `Runtime.generate`, interleaved
(plain, then under the schema) so machine noise hits both alike: plain with `ignore_eos`,
constrained under a schema that needs a long answer (an object holding at least 64 short
strings), so both runs decode about the same number of tokens. The ratio is the median over
runs of constrained / plain decode tokens/s (target: >= 0.90, i.e. at most 10% slower).
Also reported: compiling the schema into a per-request constraint, and the mask alone per
token (`Constraint.apply` on a row of logits). Writes benchmarks/results/constrained.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from edge_runtime.control.signals import StaticSource  # noqa: E402
from edge_runtime.runtime import Runtime  # noqa: E402

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"notes": {"type": "array", "minItems": 64,
                             "items": {"type": "string", "minLength": 4, "maxLength": 24}}},
    "required": ["notes"], "additionalProperties": False,
}
PROMPT = [{"role": "user", "content": "List short notes about the weather, as JSON."}]


def measure(rt: Runtime, variant: str, tokens: int, runs: int) -> dict[str, Any]:
    plain, constrained, ratios, compile_ms = [], [], [], []
    for _ in range(runs):
        a = rt.chat(PROMPT, variant=variant, max_tokens=tokens, ignore_eos=True)
        t0 = time.perf_counter()
        c = rt.grammars.compile_json_schema(SCHEMA, "schema")
        compile_ms.append(1e3 * (time.perf_counter() - t0))
        b = rt.chat(PROMPT, variant=variant, max_tokens=tokens, constraint=c)
        if b.finish_reason == "stop":
            json.loads(b.text)  # a complete answer must parse
        plain.append(a.timings.decode_tokens_per_s)
        constrained.append(b.timings.decode_tokens_per_s)
        ratios.append(constrained[-1] / plain[-1])
    return {"variant": variant, "tokens": tokens, "runs": runs,
            "plain_tok_s": statistics.median(plain), "constrained_tok_s": statistics.median(constrained),
            "ratio": statistics.median(ratios), "compile_ms": statistics.median(compile_ms),
            "constrained_tokens_last_run": b.completion_tokens, "mask_us_per_token": mask_cost(rt)}


def mask_cost(rt: Runtime, steps: int = 200) -> float:
    """Microseconds per token for the mask alone (compute, unpack, apply to a row of logits)."""
    c = rt.grammars.compile_json_schema(SCHEMA, "schema")
    logits = np.random.default_rng(0).standard_normal(rt.manifest.model.vocab_size).astype(np.float32)
    t0 = time.perf_counter()
    n = 0
    for _ in range(steps):
        if c.done:
            break
        token = int(np.argmax(c.apply(logits)))
        c.advance(token)
        n += 1
    return 1e6 * (time.perf_counter() - t0) / max(n, 1)


def table(r: dict[str, Any]) -> str:
    return "\n".join([
        "| variant | tokens | plain tok/s | JSON-schema tok/s | ratio | compile ms | mask us/token |",
        "|---|---|---|---|---|---|---|",
        f"| {r['variant']} | {r['tokens']} | {r['plain_tok_s']:.1f} | {r['constrained_tok_s']:.1f} | "
        f"{r['ratio']:.3f} | {r['compile_ms']:.1f} | {r['mask_us_per_token']:.0f} |",
    ])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--variant", default=None, help="default: the bundle's first variant")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="folder for constrained.{json,md}")
    args = ap.parse_args(argv)
    from edge_runtime.control.signals import DeviceState

    with Runtime.open(args.bundle, signals=StaticSource(DeviceState()), threads=args.threads) as rt:
        variant = args.variant or rt.manifest.names[0]
        rt.chat(PROMPT, variant=variant, max_tokens=8)  # warm-up (load, first run)
        r = measure(rt, variant, args.tokens, args.runs)
    md = table(r)
    print(md)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "constrained.json").write_text(json.dumps(r, indent=2) + "\n")
    (out / "constrained.md").write_text("# Constrained decoding overhead\n\n" + md + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
