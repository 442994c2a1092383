"""Synthetic bundles: a manifest with plausible measured costs and quality, no ONNX files.

The controller, its environment and `edge-sim` read only the manifest (costs, quality,
gate), so tests and benchmarks can run before a real bundle exists. The numbers follow
docs/FACTS.md for SmolLM2-135M on a 2-core AVX2 CPU: dense fp32 decode ~30 ms per token,
50% structured ~20 ms, int8 ~22 ms, int4 ~12 ms; unstructured sparsity is stored dense and
runs at dense speed on CPU; perplexity from the measured tables where docs/FACTS.md has one
(dense 20.1, int8 34.0, Wanda-50 37.4, structured-50 59.2), interpolated otherwise. Harness slice
scores (`common`, `edge`, `adversarial`, `multilingual`) are invented but shaped like
measured ones: pruning costs little on common text and much on the hard slices.

    write_synthetic_bundle(tmp_path / "bundle")                 # 5 variants, harness scores
    write_synthetic_bundle(dir, preset="smollm2", scores=False)  # perplexity-only quality
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from edge_runtime.bundle import Manifest, ModelInfo, Variant, write_manifest
from edge_runtime.control.tiers import TIERS
from edge_runtime.errors import BundleError

# name, method, sparsity, structured, quantization, parent, prefill ms/token, decode ms/token,
# peak MB, perplexity, (common, edge, adversarial, multilingual), gate
_ROWS: dict[str, list[tuple[Any, ...]]] = {
    "smollm2": [
        ("dense", "dense", 0.0, False, "none", None, 2.6, 30.0, 700, 20.1, (0.72, 0.55, 0.42, 0.30), "pass"),
        ("dense-int8", "dense", 0.0, False, "int8", "dense", 1.8, 23.0, 420, 34.0, (0.69, 0.51, 0.33, 0.21), "pass"),
        ("wanda-50", "wanda", 0.5, False, "none", None, 2.6, 30.5, 700, 37.4, (0.66, 0.47, 0.28, 0.18), "pass"),
        ("structured-25", "structured", 0.25, True, "none", None, 2.1, 24.0, 560, 32.0, (0.69, 0.51, 0.32, 0.21), "pass"),
        ("structured-50", "structured", 0.5, True, "none", None, 1.6, 20.0, 450, 59.2, (0.64, 0.45, 0.24, 0.14), "pass"),
        ("structured-50-int8", "structured", 0.5, True, "int8", "structured-50", 1.2, 15.0, 300, 75.0,
         (0.62, 0.43, 0.21, 0.12), "pass"),
        ("dense-int4", "dense", 0.0, False, "int4", "dense", 1.3, 12.0, 260, 45.0, (0.65, 0.47, 0.25, 0.15), "pass"),
        ("magnitude-50", "magnitude", 0.5, False, "none", None, 2.6, 30.0, 700, 263.0, (0.45, 0.30, 0.15, 0.08), "fail"),
    ],
}
_ROWS["small"] = [r for r in _ROWS["smollm2"] if r[0] in
                  ("dense", "dense-int8", "structured-50", "dense-int4", "magnitude-50")]
PRESETS = tuple(_ROWS)


def _synthetic_tiers(rows: list[tuple[Any, ...]]) -> dict[str, list[str]]:
    """Tiers each row clears under the default floor rule's tier margins, judged on its slice scores
    against dense's: normal within 0.10 on every slice, saver within 0.15, critical within 0.25
    (about `harness.floors.FloorRule`'s two standard errors on slices of ~60 cases, plus its
    `tier_widen` of 0, 0.05 and 0.15)."""
    dense = rows[0][10]
    out = {}
    for row in rows:
        drop = max(d - s for d, s in zip(dense, row[10], strict=True))
        out[row[0]] = [] if row[11] == "fail" else [t for t, m in zip(TIERS, (0.10, 0.15, 0.25), strict=True)
                                                     if drop <= m + 1e-9]
    return out


def _gate(status: str, cleared: list[str] | None) -> dict[str, Any]:
    """The row's gate; with tiers, as edge-eval writes it: pass means the normal tier is cleared."""
    if cleared is None:
        return {"status": status, "failed": ["perplexity"] if status == "fail" else []}
    ok = status == "pass" and "normal" in cleared
    return {"status": "pass" if ok else "fail", "failed": [] if ok else ["adversarial", "multilingual"],
            "tiers": cleared}


def synthetic_manifest(preset: str = "small", scores: bool = True, costs: bool = True,
                       tiers: bool = False) -> Manifest:
    """A manifest for `preset` ("small": 5 variants, one failing its gate; "smollm2": 8).

    Args:
        preset: which variant list.
        scores: include harness slice scores (else quality is perplexity only).
        costs: include measured costs (False makes a bundle the controller must reject).
        tiers: record per-tier gate results (`edge_runtime.control.tiers`), as edge-eval does
            with a floors file that declares tiers.
    """
    if preset not in _ROWS:
        raise BundleError(f"unknown synthetic preset {preset!r}; choose one of {PRESETS}")
    params = 134_515_008
    cleared = _synthetic_tiers(_ROWS[preset])
    variants = []
    for (name, method, sp, structured, quant, parent, pre, dec, mb, ppl, sc, gate) in _ROWS[preset]:
        kept = params if not structured else int(params * (1 - 0.7 * sp))
        variants.append(Variant.from_dict({
            "name": name, "method": method, "sparsity": sp, "structured": structured,
            "quantization": quant, "parent": parent, "onnx": f"variants/{name}/model.onnx",
            "params": kept, "nonzero_params": int(kept * (1 - (0 if structured else sp))),
            "file_bytes": kept * {"none": 4, "int8": 1, "int4": 1}[quant] // (2 if quant == "int4" else 1),
            "quality": {"perplexity": ppl,
                        "scores": dict(zip(("common", "edge", "adversarial", "multilingual"), sc, strict=True)) if scores else {}},
            "cost": {"prefill_ms_per_token": pre if costs else None,
                     "decode_ms_per_token": dec if costs else None, "peak_rss_mb": mb},
            "gate": _gate(gate, cleared[name] if tiers else None),
            "synthetic": True,
        }, f"synthetic {name}"))
    model = ModelInfo(source="synthetic", architecture="LlamaForCausalLM", params=params,
                      context_length=2048, num_layers=30, vocab_size=49152)
    extra: dict[str, Any] = {"synthetic": True, **({"tiers": list(TIERS)} if tiers else {})}
    return Manifest(model=model, variants=tuple(variants), extra=extra)


def write_synthetic_bundle(bundle_dir: str | os.PathLike[str], preset: str = "small", scores: bool = True,
                           costs: bool = True, tiers: bool = False) -> Path:
    """Write `synthetic_manifest(...)` as `bundle_dir/manifest.json`; returns the directory."""
    root = Path(bundle_dir)
    root.mkdir(parents=True, exist_ok=True)
    write_manifest(root, synthetic_manifest(preset, scores, costs, tiers))
    return root
