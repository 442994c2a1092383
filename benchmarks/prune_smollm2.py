"""Time, memory and perplexity of the default recipe's pruned variants on SmolLM2-135M.

    PYTHONPATH=. python3 benchmarks/prune_smollm2.py --eval-windows 60 --out benchmarks/results/prune_smollm2.json

One shared calibration pass (`collect_stats`) feeds every variant, as the exporter does;
each variant prunes a fresh copy of the dense model. Perplexity is the torch one
(export.perplexity) on held-out windows of 512 tokens; 0 windows skips it.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import platform
import time
from pathlib import Path

import torch

from export.calibrate import collect_stats
from export.corpus import calibration_windows
from export.load import load_model, set_threads
from export.memory import max_rss_mb, release_memory
from export.perplexity import perplexity
from export.prune import prune_configs, prune_model, recipe_needs
from export.recipe import bundled
from harness.text import heldout_windows


def main() -> None:
    default = prune_configs(bundled("default"))  # export/recipes/default.toml
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--samples", type=int, default=128, help="calibration windows (default 128)")
    ap.add_argument("--seq-len", type=int, default=512, help="tokens per calibration window (default 512)")
    ap.add_argument("--eval-windows", type=int, default=16, help="held-out windows of 512 tokens; 0 = no perplexity")
    ap.add_argument("--variants", nargs="*", default=list(default), choices=list(default))
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    set_threads()

    t = time.perf_counter()
    lm = load_model(args.model)
    load_s = time.perf_counter() - t
    ev = heldout_windows(lm.tokenizer, args.eval_windows, 512) if args.eval_windows else None
    dense_ppl = perplexity(lm.model, ev) if ev is not None else None
    ids = calibration_windows(lm.tokenizer, args.samples, args.seq_len)
    cfgs = {n: default[n] for n in args.variants}
    c = time.process_time()
    stats = collect_stats(lm.model, ids, recipe_needs(cfgs.values()))
    shared = {"samples": args.samples, "seq_len": args.seq_len, "seconds": round(stats.seconds, 1),
              "cpu_seconds": round(time.process_time() - c, 1), "peak_rss_mb": round(stats.peak_rss_mb)}
    print(f"shared statistics: {shared}", flush=True)

    runs = []
    for k, (name, cfg) in enumerate(cfgs.items()):
        rest = list(cfgs.values())[k:]
        if stats is not None and not recipe_needs(rest):
            stats = None  # what is left calibrates on its own: free the shared Hessians
            release_memory()
        model = copy.deepcopy(lm.model)
        r = prune_model(model, cfg, ids, stats=stats)
        ppl = perplexity(model, ev) if ev is not None else None
        run = {"name": name, "method": cfg.method, "level": cfg.level, "sparsity": round(r.sparsity, 5),
               "structured": r.structured, "params": r.params, "nonzero_params": r.nonzero_params,
               "perplexity": None if ppl is None else round(ppl, 3),
               "perplexity_vs_dense": None if ppl is None else round(ppl / dense_ppl, 3),
               "seconds": round(r.seconds, 1), "cpu_seconds": round(r.cpu_seconds, 1),
               "peak_rss_mb": round(r.peak_rss_mb), "config": cfg.to_json()}
        runs.append(run)
        print(json.dumps({k: v for k, v in run.items() if k != "config"}), flush=True)
        del model
        release_memory()

    result = {"benchmark": "prune", "model": args.model, "machine": platform.processor() or platform.machine(),
              "threads": torch.get_num_threads(), "load_seconds": round(load_s, 1), "eval_windows": args.eval_windows,
              "dense_perplexity": None if dense_ppl is None else round(dense_ppl, 3), "shared_statistics": shared,
              "process_peak_rss_mb": round(max_rss_mb()), "runs": runs}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
