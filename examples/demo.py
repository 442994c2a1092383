"""The main job, end to end on the embedded default model (`make demo`).

1. export the default bundle (SmolLM2-135M-Instruct, every method) into bundles/smollm2-135m
   with `edge-export`, or reuse it when it is already there;
2. generate a short completion from each variant through onnxruntime.

Each stage runs the same command a user would, and is skipped when its output exists
(`--fresh` redoes everything).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge_runtime import bundle as B  # noqa: E402
from edge_runtime.errors import EdgeError  # noqa: E402

PROMPT = "The capital of France is"


def stage(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


def run(*cmd: str) -> None:
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run([sys.executable, "-m", *cmd], check=True, cwd=ROOT)


def bundle_ready(path: Path) -> bool:
    try:
        B.check_files(path, B.read_manifest(path))
        return True
    except EdgeError:
        return False


def greedy(session, tokenizer, prompt: str, max_new_tokens: int, eos: set[int]) -> str:
    import numpy as np

    ids = np.array([tokenizer.encode(prompt).ids], np.int64)
    logits, past = session.forward(ids)
    out: list[int] = []
    for _ in range(max_new_tokens):
        tok = int(logits[0, -1].argmax())
        if tok in eos:
            break
        out.append(tok)
        logits, past = session.forward(np.array([[tok]], np.int64), past)
    return tokenizer.decode(out)


def completions(bundle: Path) -> None:
    from tokenizers import Tokenizer

    from edge_runtime.session import VariantSession

    manifest = B.read_manifest(bundle)
    tok = Tokenizer.from_file(str(bundle / manifest.tokenizer))
    eos = set(manifest.model.eos_token_ids)
    for v in manifest.variants:
        t = time.perf_counter()
        text = greedy(VariantSession(bundle / v.onnx), tok, PROMPT, 20, eos)
        print(f"[{v.name:>20}] {PROMPT}{text!r}  ({time.perf_counter() - t:.1f} s)", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=ROOT / "bundles" / "smollm2-135m")
    ap.add_argument("--recipe", default="default", help="export recipe (default: %(default)s)")
    ap.add_argument("--fresh", action="store_true", help="rebuild the bundle even if it exists")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()

    stage("1. export the default bundle")
    if bundle_ready(args.bundle) and not args.fresh:
        print(f"{args.bundle} exists: reusing it (pass --fresh to rebuild)")
    else:
        run("export.cli", "--model", "smollm2-135m", "--out", str(args.bundle), "--recipe", args.recipe, "--force")

    stage("2. a short completion from each variant (onnxruntime, greedy)")
    completions(args.bundle)

    print(f"\ndone in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
