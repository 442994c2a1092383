"""`edge-export`: turn a causal LM into a bundle of pruned, quantized ONNX variants."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path

from edge_runtime.errors import EdgeError
from edge_runtime.extras import add_version, require

DEFAULT_MODEL = "smollm2-135m"  # export.load's name for the embedded model (import-free here: the extra may be missing)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="edge-export",
        description="Prune a causal LM into variants, export each to ONNX with a KV cache, "
        "check, evaluate and measure them, and write a bundle.",
    )
    ap.add_argument("--model", default=DEFAULT_MODEL,
                    help=f"{DEFAULT_MODEL!r} (the embedded SmolLM2-135M-Instruct), a .gguf file, or a "
                    "Hugging Face model directory (Llama, Mistral, Qwen2) (default: %(default)s)")
    ap.add_argument("--out", required=True, type=Path, help="bundle directory to create")
    ap.add_argument("--recipe", default=None,
                    help="recipe TOML file or bundled recipe name: default, recovered (default + distillation), full (every method), quick (default: default)")
    ap.add_argument("--force", action="store_true", help="replace --out if it exists (only once the new bundle is complete)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for torch and onnxruntime (default: all cores)")
    ap.add_argument("--recovery", default=None, metavar="off|KEY=VALUE,...",
                    help="'off' skips the recipe's recovery; KEY=VALUE pairs (e.g. tokens=20000,lr=2e-4) override "
                    "it for every variant that recovers (default: as the recipe says)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default=None,
                    help="where recovery trains; cuda needs a GPU that torch sees (default: the recipe's, cpu)")
    ap.add_argument("--resume", action="store_true",
                    help="continue an interrupted export's recovery from its checkpoints (beside --out)")
    ap.add_argument("--no-cost", action="store_true", help="skip the per-variant cost probe (costs stay null)")
    ap.add_argument("--dtype", choices=["float32", "float16"], default=None,
                    help="graph float type of every variant, overriding the recipe's: float16 for GPUs "
                    "(default: each variant's recipe dtype, float32 unless set)")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    add_version(ap)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    for noisy in ("transformers", "accelerate", "onnxruntime", "httpx"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    if args.threads is not None and args.threads < 1:
        print(f"edge-export: error: --threads must be >= 1, got {args.threads} (leave it out to use every core)",
              file=sys.stderr)
        return 2
    try:
        require("export", "edge-export")
        from export import recipe as R
        from export.pipeline import ExportOptions, check_output_dir, export_bundle
        from export.prune import prune_configs

        recipe = apply_recovery_flags(R.load(args.recipe), args.recovery, args.device)
        if args.dtype:
            recipe = replace(recipe, variants=tuple(replace(v, dtype=args.dtype) for v in recipe.variants))
        prune_configs(recipe)  # validate everything before loading the model
        check_output_dir(args.out, args.force)
        result = export_bundle(
            args.model,
            args.out,
            recipe,
            force=args.force,
            options=ExportOptions(threads=args.threads, measure_cost=not args.no_cost, progress=not args.quiet,
                                  resume=args.resume),
        )
    except EdgeError as e:
        print(f"edge-export: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edge-export: interrupted; nothing was written", file=sys.stderr)
        return 130
    print(summary(result.manifest))
    print(f"wrote {args.out} ({len(result.manifest.variants)} variants) in {result.seconds:.0f} s")
    return 0


def apply_recovery_flags(recipe, spec: str | None, device: str | None):
    """The recipe with `--recovery` and `--device` applied (RecoveryError/RecipeError on bad values)."""
    import tomllib

    from edge_runtime.errors import RecoveryError
    from export.recover import check_device

    if spec is not None and spec.strip().lower() == "off":
        return recipe.without_recovery()
    overrides = {}
    for part in (spec or "").split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep:
            raise RecoveryError(f"--recovery {spec!r}: expected 'off' or KEY=VALUE pairs, got {part!r}")
        try:
            overrides[key.strip()] = tomllib.loads(f"v = {value.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            overrides[key.strip()] = value.strip()
    if device is not None:
        overrides["device"] = device
    recipe.recovery.updated(overrides, where="--recovery")  # bad keys and values first
    if overrides and not recipe.recovers and set(overrides) != {"device"}:
        raise RecoveryError(f"--recovery {spec!r}: recipe {recipe.name!r} has no variant that recovers")
    if device is not None:
        check_device(device)
    return recipe.with_recovery(overrides) if overrides else recipe


def summary(manifest) -> str:
    """A Markdown table of the variants in `manifest`."""
    rows = ["| variant | method | sparsity | quant | params | nonzero | file MB | ppl | prefill ms/tok | decode ms/tok | "
            "parity | recovery |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for v in manifest.variants:
        c, q = v.cost, v.quality
        par = max(x for x in (v.parity.prefill_max_abs or 0.0, v.parity.decode_max_abs or 0.0))
        rows.append(
            f"| {v.name} | {v.method} | {v.sparsity:.2f} | {v.quantization} | {v.params / 1e6:.1f}M | "
            f"{v.nonzero_params / 1e6:.1f}M | {v.file_bytes / 2**20:.0f} | "
            f"{'-' if q.perplexity is None else f'{q.perplexity:.2f}'} | "
            f"{'-' if c.prefill_ms_per_token is None else f'{c.prefill_ms_per_token:.2f}'} | "
            f"{'-' if c.decode_ms_per_token is None else f'{c.decode_ms_per_token:.1f}'} | {par:.1e} | "
            f"{'-' if v.recovery is None else f'{v.recovery.tokens / 1000:.0f}k tok, {v.recovery.seconds / 60:.1f} min'} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
