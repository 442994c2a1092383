"""onnxruntime-genai against edge_runtime: the same greedy tokens on the suite's generation prompts.

    python benchmarks/genai_parity.py --bundle bundles/smollm2-135m            # dense, every generation case
    python benchmarks/genai_parity.py --bundle B --variants dense dense-int8 --limit 10

For each generation case of the evaluation suite (harness/data/suite.jsonl; prompts rendered
as edge-eval renders them, chat template included), both decode greedily from the same
prompt tokens for the case's `max_new_tokens`: genai opens the variant folder by itself
(its genai_config.json and tokenizer files), edge_runtime through its own KV decoder.
Prints a table and writes `benchmarks/results/genai_parity.{json,md}`. Correctness only:
the speed comparison with genai belongs to the peers benchmark.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_runtime.bundle import read_manifest  # noqa: E402
from export import genai  # noqa: E402
from harness.scoring import PromptFormat  # noqa: E402
from harness.suite import DEFAULT_SUITE, load_suite  # noqa: E402


def _genai_folder(bundle: Path, manifest, v) -> Path:
    """The variant's folder, or, for a bundle exported before it carried genai files, a scratch
    folder linking to the graph beside freshly written ones (the bundle is left untouched)."""
    here = (bundle / v.onnx).parent
    if (here / genai.CONFIG).is_file():
        return here
    scratch = Path(tempfile.mkdtemp(prefix=f"genai-{v.name}-"))
    for f in here.iterdir():
        (scratch / f.name).symlink_to(f.resolve())
    genai.write(bundle, manifest.model, v, folder=scratch)
    return scratch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path, default=ROOT / "bundles/smollm2-135m")
    ap.add_argument("--variants", nargs="+", default=["dense"])
    ap.add_argument("--limit", type=int, default=None, help="first N generation cases (default: all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results")
    args = ap.parse_args(argv)
    from tokenizers import Tokenizer

    manifest = read_manifest(args.bundle)
    tok = Tokenizer.from_file(str(args.bundle / "tokenizer.json"))
    fmt = PromptFormat(manifest.model.chat_template)
    cases = [c for c in load_suite(DEFAULT_SUITE).cases if c.type != "choice"][: args.limit]
    rows = []
    for name in args.variants:
        v = manifest.variant(name)
        folder = _genai_folder(args.bundle, manifest, v)
        same, t0, worst = 0, time.perf_counter(), 0.0
        diverged: list[str] = []
        for c in cases:
            ids = tok.encode(fmt.render(c)).ids
            r = genai.compare_greedy(args.bundle, v, ids, c.max_new_tokens, threads=args.threads, folder=folder)
            same += r["same"]
            worst = max(worst, r["max_logit_diff"])
            if not r["same"]:
                diverged.append(c.id)
        rows.append({"variant": name, "cases": len(cases), "same_tokens": same, "diverged": diverged,
                     "max_logit_diff": worst, "seconds": round(time.perf_counter() - t0, 1),
                     "genai": v.extra.get("genai")})
    lines = ["| variant | generation cases | same greedy tokens | max logit diff | diverged |", "|---|---|---|---|---|"]
    lines += [f"| {r['variant']} | {r['cases']} | {r['same_tokens']} | {r['max_logit_diff']:.2e} | "
              f"{', '.join(r['diverged']) or '-'} |" for r in rows]
    print("\n".join(lines))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "genai_parity.json").write_text(json.dumps({"bundle": str(args.bundle), "variants": rows}, indent=2))
    (args.out / "genai_parity.md").write_text("\n".join(lines) + "\n")
    return 0 if all(r["same_tokens"] == r["cases"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
