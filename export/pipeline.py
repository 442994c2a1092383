"""The export pipeline: model -> pruned variants -> ONNX -> checked -> measured -> bundle.

Everything is validated first (recipe, model, output directory), then the bundle is
built in a temporary sibling directory and renamed into place only when every variant
has been written, loaded back (onnx.checker, an onnxruntime session, parity against
torch), evaluated (held-out perplexity) and measured (cost). A crash leaves no half
bundle and the previous bundle intact.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass, field, is_dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from tqdm.auto import tqdm

from edge_runtime import bundle as B
from edge_runtime.engine.pairs import measure_pairs
from edge_runtime.engine.probe import measure_in_subprocess
from edge_runtime.engine.session import VariantSession, perplexity
from edge_runtime.errors import EdgeError, ExportError
from export import genai
from export.calibrate import DenseStats, collect_stats
from export.corpus import calibration_windows
from export.load import LoadedModel, load_model
from export.memory import release_memory
from export.onnx_export import GraphInfo, SparseStorage, build, describe, save
from export.prune import PruneConfig, prune_configs, prune_model, recipe_needs
from export.quantize import quantize
from export.recipe import Recipe, VariantRecipe
from export.teacher import Teacher, check_recovery, inherited, work_dir
from harness.text import heldout_windows

log = logging.getLogger(__name__)

# fp32 graphs must match torch this closely (max abs logit difference); more means a bug.
PARITY_LIMIT = 5e-3
PARITY_PROMPT = 24  # tokens


@dataclass
class ExportOptions:
    """What the CLI passes besides the recipe."""

    threads: int | None = None  # torch and ORT threads (default: all cores)
    measure_cost: bool = True  # run the cost probe per variant (a subprocess each)
    progress: bool = True
    keep_going: bool = False  # reserved: a failing variant aborts the export
    resume: bool = False  # continue an interrupted recovery from its checkpoints (export.teacher)


@dataclass
class ExportResult:
    manifest: B.Manifest
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)


def check_output_dir(out: Path, force: bool) -> None:
    """Refuse an existing output directory unless `force` (before any work starts)."""
    if out.exists() and not force:
        raise ExportError(f"output directory {str(out)!r} exists; pass --force to replace it")
    if out.exists() and not out.is_dir():
        raise ExportError(f"output path {str(out)!r} is a file, not a directory")
    parent = out.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ExportError(f"output path {str(out)!r} is under {str(parent)!r}, which is a file; choose another --out")


def export_bundle(
    source: str | LoadedModel,
    out: str | Path,
    recipe: Recipe,
    force: bool = False,
    options: ExportOptions | None = None,
) -> ExportResult:
    """Build a bundle at `out` from `source` (a model name/path or an already loaded model)."""
    options = options or ExportOptions()
    out = Path(out)
    check_output_dir(out, force)
    configs = prune_configs(recipe)
    check_recovery(recipe)
    t_start = time.perf_counter()
    if options.threads:
        torch.set_num_threads(options.threads)
    lm = source if isinstance(source, LoadedModel) else load_model(source)
    model = lm.model
    calib, stats, shared = _shared_calibration(lm, recipe, configs, options)
    ppl_windows = (
        heldout_windows(lm.tokenizer, recipe.ppl_windows, recipe.ppl_seq_len) if recipe.ppl_windows else None
    )
    dense_info = describe(model)
    timings: dict[str, float] = {}
    variants: list[B.Variant] = []
    teacher = _teacher(lm, recipe, out, options)
    with B.atomic_directory(out, force=force) as tmp:
        lm.tokenizer.save(str(tmp / B.TOKENIZER))
        bar = tqdm(recipe.variants, desc="export", unit="variant", disable=not options.progress)
        # pruned torch models kept until their quantized copies are exported
        waiting = {v.name: len(recipe.children(v.name)) for v in recipe.variants}
        cache: dict[str, tuple[Any, dict[str, Any], B.Recovery | None]] = {}
        for v in bar:
            bar.set_postfix_str(v.name)
            t0 = time.perf_counter()
            if v.parent is not None:
                pruned, report, recovery = cache[v.parent]
                recovery = inherited(recovery) if recovery is not None else None
            else:
                bar.set_postfix_str(f"{v.name}: pruning" if v.name in configs else v.name)
                pruned, report = _pruned_model(model, configs.get(v.name), calib, stats)
                recovery = _recovered(pruned, v, teacher, recipe, tmp, bar)
            record = _export_variant(pruned, v, tmp, ppl_windows, dense_info.decoder_params, options, bar)
            record = replace(record, recovery=recovery)
            record.extra["prune"] = report
            record.extra["export_s"] = timings[v.name] = round(time.perf_counter() - t0, 2)
            variants.append(record)
            if v.parent is not None:
                waiting[v.parent] -= 1
                if not waiting[v.parent]:
                    del cache[v.parent]
            elif waiting[v.name]:
                cache[v.name] = (pruned, report, recovery)
            del pruned
            rest = recipe.variants[len(variants):]
            if stats is not None and not any(v2.name in configs and not configs[v2.name].sequential for v2 in rest):
                stats = None  # the remaining variants calibrate sequentially: free the shared statistics
            release_memory()
        manifest = _manifest(lm, dense_info, variants, recipe, calib is not None, shared)
        pairs = tuple(B.Pair(p.name, p.verifier, p.drafter, p.k_max, p.k_start) for p in recipe.pairs)
        manifest = replace(manifest, pairs=pairs)
        for record in manifest.variants:  # each variant opens in onnxruntime-genai as well
            record.extra["genai"] = genai.write(tmp, manifest.model, record)
        B.write_manifest(tmp, manifest)
        if pairs and options.measure_cost:
            bar.set_postfix_str("pairs: measuring")
            manifest = measure_pairs(tmp, manifest, options.threads)
    if teacher is not None:
        teacher.finish()
    seconds = time.perf_counter() - t_start
    log.info("exported %d variants to %s in %.0f s", len(variants), out, seconds)
    return ExportResult(manifest, seconds, timings)


def _teacher(lm: LoadedModel, recipe: Recipe, out: Path, options: ExportOptions) -> Teacher | None:
    """The recovery stage when some variant recovers (it builds its data on first use)."""
    if not recipe.recovers:
        return None
    return Teacher(recipe, lm.tokenizer, lm.chat_template, work_dir(out),
                   identity={"recipe": recipe.name, "model": lm.source}, resume=options.resume,
                   threads=options.threads, progress=options.progress)


def _recovered(pruned: Any, v: VariantRecipe, teacher: Teacher | None, recipe: Recipe, tmp: Path,
               bar: Any) -> B.Recovery | None:
    """Distil `pruned` in place when `v` recovers; the dense graph in `tmp` is the teacher."""
    if v.recovery is None or teacher is None:
        return None
    dense = next(d for d in recipe.variants if d.method == "dense" and d.quantization == "none")
    bar.set_postfix_str(f"{v.name}: recovery")
    return teacher.recover(pruned, v, tmp / f"variants/{dense.name}/model.onnx")


def _shared_calibration(lm: LoadedModel, recipe: Recipe, configs: dict[str, PruneConfig],
                        options: ExportOptions) -> tuple[np.ndarray | None, DenseStats | None, dict[str, Any]]:
    """Calibration windows [samples, seq_len], the shared dense statistics, and what the pass cost."""
    calib, stats, shared = None, None, {}
    if recipe.needs_calibration:
        calib = calibration_windows(lm.tokenizer, recipe.calibration_samples, recipe.calibration_seq_len)
        needs = recipe_needs(configs.values())
        if needs:
            # one pass over the dense model serves every one-pass variant (and plans the others)
            stats = collect_stats(lm.model, calib, needs, progress=options.progress)
            shared = {"shared_pass_s": round(stats.seconds, 1), "shared_pass_peak_rss_mb": round(stats.peak_rss_mb)}
    return calib, stats, shared


def _manifest(lm: LoadedModel, dense_info: GraphInfo, variants: list[B.Variant], recipe: Recipe,
              calibrated: bool, shared: dict[str, Any]) -> B.Manifest:
    """The bundle's manifest: the model, the variants densest first, and how they were made."""
    model = lm.model
    return B.Manifest(
        model=B.ModelInfo(
            source=lm.source,
            architecture=(model.config.architectures or [type(model).__name__])[0],
            params=dense_info.params,
            context_length=int(getattr(model.config, "max_position_embeddings", 2048)),
            num_layers=len(dense_info.layers),
            vocab_size=dense_info.vocab,
            bos_token_id=getattr(model.config, "bos_token_id", None),
            eos_token_ids=_eos_ids(model.config, lm),
            chat_template=lm.chat_template,
            extra={"hidden_size": dense_info.hidden, "head_dim": dense_info.head_dim},
        ),
        variants=tuple(_ordered(variants)),
        extra={
            "recipe": recipe.name,
            "created_by": "edge-export",
            "calibration": {
                "text": "python-3.11-docs/whatsnew",
                "samples": recipe.calibration_samples,
                "seq_len": recipe.calibration_seq_len,
                **shared,
            }
            if calibrated
            else None,
            "heldout": {"text": "python-3.11-docs/tutorial+faq+howto", "windows": recipe.ppl_windows,
                        "seq_len": recipe.ppl_seq_len},
        },
    )


def _ordered(variants: list[B.Variant]) -> list[B.Variant]:
    """Densest first (fewest weights removed), keeping recipe order among equals."""
    return sorted(variants, key=lambda v: (v.sparsity, v.quantization != "none"))


def _eos_ids(config: Any, lm: LoadedModel) -> tuple[int, ...]:
    eos = getattr(config, "eos_token_id", None)
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    for special in ("<|im_end|>", "<|endoftext|>", "</s>", "<|eot_id|>"):
        tid = lm.tokenizer.token_to_id(special)
        if tid is not None:
            ids.add(tid)
    return tuple(sorted(i for i in ids if i is not None))


def _pruned_model(model: Any, cfg: PruneConfig | None, calib: np.ndarray | None,
                  stats: DenseStats | None) -> tuple[Any, dict[str, Any]]:
    """The fp32 model for a variant (the dense model itself when nothing is pruned) and its report."""
    if cfg is None:
        return model, {}
    pruned = copy.deepcopy(model)
    report = prune_model(pruned, cfg, calib, stats=stats, progress=False)
    return pruned, _jsonable(report.to_json())


def _jsonable(x: Any) -> Any:
    if is_dataclass(x) and not isinstance(x, type):
        x = asdict(x)
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, float):
        return round(x, 6)
    return x


def _export_variant(
    model: Any,
    v: VariantRecipe,
    root: Path,
    ppl_windows: np.ndarray | None,
    dense_decoder_params: int,
    options: ExportOptions,
    bar: Any,
) -> B.Variant:
    info = describe(model)
    rel = f"variants/{v.name}/model.onnx"
    path = root / rel
    steps: dict[str, float] = {}
    t = time.perf_counter()

    def step(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        steps[name] = round(now - t, 2)
        t = now

    bar.set_postfix_str(f"{v.name}: onnx")
    if v.quantization == "none":
        storage = SparseStorage.MASKED if v.pruned and not v.structured else SparseStorage.DENSE
        proto = build(model, storage, dtype=v.dtype)
    else:
        storage = SparseStorage.DENSE
        proto = quantize(build(model, SparseStorage.DENSE, untie_lm_head=True, dtype=v.dtype), v.quantization)
    size = save(proto, path)
    del proto
    step("onnx_s")
    bar.set_postfix_str(f"{v.name}: check")
    parity = verify(path, model, threads=options.threads)
    step("check_s")
    if v.quantization == "none" and v.dtype == "float32" and max(parity.prefill_max_abs, parity.decode_max_abs) > PARITY_LIMIT:
        raise ExportError(
            f"variant {v.name!r}: ONNX and torch disagree (max abs logit difference "
            f"{max(parity.prefill_max_abs, parity.decode_max_abs):.3g} > {PARITY_LIMIT}); this is an exporter bug"
        )
    ppl = None
    if ppl_windows is not None:
        bar.set_postfix_str(f"{v.name}: perplexity")
        ppl = perplexity(VariantSession(path, threads=options.threads), ppl_windows)
        step("perplexity_s")
    cost = B.Cost()
    if options.measure_cost:
        bar.set_postfix_str(f"{v.name}: cost")
        cost = _measure_cost(path, options.threads)
        step("cost_s")
    layers = [[s.heads, s.kv_heads, s.intermediate] for s in info.layers]
    return B.Variant(
        name=v.name,
        method=v.manifest_method,
        # against the dense decoder: structured variants have fewer weights, not zeros
        sparsity=round(1.0 - info.decoder_nonzero / dense_decoder_params, 6),
        structured=v.structured,
        quantization=v.quantization,
        parent=v.parent,
        onnx=rel,
        params=info.params,
        nonzero_params=info.nonzero_params,
        file_bytes=size,
        parity=parity,
        quality=B.Quality(perplexity=ppl, extra={"ppl_windows": 0 if ppl_windows is None else len(ppl_windows)}),
        cost=cost,
        gate=B.Gate("pending"),
        extra={
            "level": v.sparsity,
            "pruner": v.method,
            "storage": storage.value,
            "dtype": v.dtype,  # the graph's float type (weights, activations, KV cache, logits)
            "options": dict(v.options),
            "layers": layers,  # [heads, kv_heads, intermediate] per decoder layer
            "steps": steps,  # seconds per export step
        },
    )


def _measure_cost(path: Path, threads: int | None) -> B.Cost:
    """Prefill and decode ms per token and peak RSS of the saved variant, in a fresh process."""
    c = measure_in_subprocess(path, threads=threads)
    return B.Cost(
        prefill_ms_per_token=round(c["prefill_ms_per_token"], 4),
        decode_ms_per_token=round(c["decode_ms_per_token"], 4),
        peak_rss_mb=round(c["peak_rss_mb"], 1),
        extra={"load_s": round(c["load_s"], 3), "threads": c["threads"], "prompt_tokens": c["prompt_tokens"],
               "provider": "CPUExecutionProvider"},
    )


def verify(path: Path, model: Any, threads: int | None = None) -> B.Parity:
    """Load the file back (checker, ORT session) and compare logits with torch.

    Prefill on a fixed prompt, then one decode step through the KV cache.
    """
    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as e:
        raise ExportError(f"{str(path)!r} fails onnx.checker: {str(e)[:300]}") from e
    try:
        session = VariantSession(path, threads=threads)
    except EdgeError as e:
        raise ExportError(f"the exported graph does not load: {e}") from e
    rng = np.random.default_rng(1234)
    vocab = model.config.vocab_size
    ids = rng.integers(0, vocab, size=(1, PARITY_PROMPT + 1), dtype=np.int64)
    logits, past = session.forward(ids[:, :-1])
    step, _ = session.forward(ids[:, -1:], past)
    with torch.no_grad():
        ref = model(torch.from_numpy(ids)).logits.float().numpy()
    return B.Parity(
        prefill_max_abs=float(np.abs(logits - ref[:, :-1]).max()),
        decode_max_abs=float(np.abs(step - ref[:, -1:]).max()),
    )
