"""Speculative decoding benchmark: the go/no-go table, then the issue's targets.

    python benchmarks/speculative.py --bundle bundles/smollm2-135m [--threads 2] [--quick]

Go/no-go (is drafting worth it on this machine?):
1. verifier cost: one pass over n = 1..8 tokens, as a multiple of one decode step, per verifier;
2. drafter cost: one drafted token against one verifier step (prompt lookup: its n-gram search);
3. acceptance per drafter on two prompt sets: the evaluation suite's generation prompts
   (harness/data/suite.jsonl, every case that is not multiple choice) and input-grounded
   prompts (summarize or extract from a given text, as examples/log_summarizer.py asks).

Targets (greedy, decode tokens/s; every speed ratio is measured interleaved, prompt by prompt,
in this one run): the best pair with the dense verifier >= 1.6x dense alone with identical
output; the best with the dense-int8 verifier >= 1.25x dense-int8; prompt lookup on the
grounded prompts >= 2x its verifier; a drafter that is always rejected at most 10% slower
than its verifier (k falls back to plain decoding).

Writes benchmarks/results/speculative.json and .md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from edge_runtime.bundle import PROMPT_LOOKUP, read_manifest  # noqa: E402
from edge_runtime.engine.pairs import GROUNDED, run_pair, verify_costs  # noqa: E402
from edge_runtime.engine.pool import VariantPool  # noqa: E402
from edge_runtime.engine.sampling import Sampler, SamplingParams  # noqa: E402
from edge_runtime.engine.speculative import (  # noqa: E402
    AdaptiveK,
    KPolicy,
    ModelDrafter,
    PromptLookupDrafter,
    Speculator,
)
from edge_runtime.engine.tokenizer import Tokenizer  # noqa: E402
from harness.suite import load_suite  # noqa: E402

VERIFIERS = ("dense", "dense-int8")
TARGETS = {"dense": 1.6, "dense-int8": 1.25, "prompt-lookup": 2.0, "worst": 0.9}


class AlwaysWrong:
    """The worst drafter: it proposes the verifier's least likely token, so every draft is rejected."""

    name = "always-wrong"

    def __init__(self, decoder: Any) -> None:
        self.inner = ModelDrafter("always-wrong", decoder)

    def start(self, capacity: int) -> None:
        self.inner.start(capacity)

    def prefill(self, prompt: Any) -> None:
        self.inner.prefill(prompt)

    def evidence(self, seq: Any) -> int:
        return 0

    def propose(self, seq: Any, k: int, sampler: Sampler) -> tuple[list[int], None]:
        dec = self.inner.decoder
        logits = dec.prefill(list(seq[dec.length :]))  # one pass: cheaper than a real drafter's k
        return [int(np.argmin(logits))] * k, None

    def keep(self, length: int) -> None:
        self.inner.keep(length)


def wrong_host(m: Any, verifier: str) -> str:
    """The variant whose decoder the always-wrong drafter runs: the last one that is not the verifier."""
    return [v.name for v in m.variants if v.name != verifier][-1]


def prompt_sets(tok: Tokenizer, room: int, quick: bool) -> dict[str, list[list[int]]]:
    cases = [c for c in load_suite().cases if c.type != "choice"]
    suite = [tok.encode_chat([{"role": "user", "content": c.prompt}]) if c.template == "chat" else tok.encode(c.prompt)
             for c in cases[:: max(1, len(cases) // (6 if quick else 24))]]
    grounded = [tok.encode_chat([{"role": "user", "content": p}]) for p in GROUNDED]
    return {"suite": [ids[-room:] for ids in suite], "grounded": [ids[-room:] for ids in grounded]}


def speculator_for(pool: VariantPool, drafter: str, verifier: str, k_max: int, draft_ratio: float,
                   slope: float) -> Any:
    """capacity -> a Speculator over `drafter`, with the measured costs and one AdaptiveK across
    prompts, as the runtime keeps one per pair across requests (its k starts from scratch here)."""
    m = pool.manifest
    k = AdaptiveK(KPolicy(k_max=k_max, k_start=min(3, k_max), draft_ratio=draft_ratio, verify_slope=slope))
    if drafter == PROMPT_LOOKUP:
        return lambda capacity: Speculator(PromptLookupDrafter(), k=k)

    def make(capacity: int) -> Speculator:
        loaded = pool.get(m.index(drafter if drafter != "always-wrong" else wrong_host(m, verifier)), capacity,
                          drafting=True, keep=(m.index(verifier),))[0]
        d = AlwaysWrong(loaded.decoder) if drafter == "always-wrong" else ModelDrafter(drafter, loaded.decoder)
        return Speculator(d, k=k)

    return make


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--k-max", type=int, default=6)
    ap.add_argument("--quick", action="store_true", help="fewer prompts and drafters (a smoke run)")
    ap.add_argument("--drafters", default=None,
                    help="comma-separated drafters to compare (default: prompt-lookup and every variant but dense)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "speculative"))
    args = ap.parse_args(argv)
    root = Path(args.bundle)
    m = read_manifest(root)
    tok = Tokenizer.from_bundle(root, m)
    pool = VariantPool(root, m, threads=args.threads, allow_ungated=True)  # threads not spinning, as the runtime's
    sets = prompt_sets(tok, m.model.context_length - args.max_tokens - 1, args.quick)
    verifiers = [v for v in VERIFIERS if v in m.names]
    drafters = [PROMPT_LOOKUP] + [v.name for v in m.variants if v.name not in ("dense",)]
    if args.drafters:
        drafters = [d for d in drafters if d in args.drafters.split(",")]
    elif args.quick:  # prompt lookup and the two drafters the manifest prices cheapest per token
        cheap = sorted(drafters[1:], key=lambda n: m.variant(n).cost.decode_ms_per_token or float("inf"))
        drafters = [PROMPT_LOOKUP, *cheap[:2]]
    out: dict[str, Any] = {"bundle": str(root), "threads": args.threads, "max_tokens": args.max_tokens,
                           "k_max": args.k_max, "verify_cost": {}, "drafter_cost": {}, "runs": []}
    probe = sets["grounded"][0]
    for v in verifiers:
        costs = verify_costs(pool.get(m.index(v), 512)[0].decoder, probe)
        out["verify_cost"][v] = {"step_ms": 1e3 * costs[0], "ratio": [c / costs[0] for c in costs]}
    step = out["verify_cost"][verifiers[0]]["step_ms"]
    for d in drafters:
        if d == PROMPT_LOOKUP:
            seq, t = probe * 4, time.perf_counter()
            for _ in range(50):
                PromptLookupDrafter().propose(seq, args.k_max, Sampler(SamplingParams()))
            ms = 1e3 * (time.perf_counter() - t) / 50
        else:
            ms = 1e3 * verify_costs(pool.get(m.index(d), 512, drafting=True)[0].decoder, probe, max_n=1)[0]
        out["drafter_cost"][d] = {"ms": ms, "ratio_to_verifier_step": ms / step}
    for v in verifiers:
        for d in [*drafters, "always-wrong"]:
            if d == v:
                continue
            for set_name, prompts in sets.items():
                if d == "always-wrong" and set_name == "suite":
                    continue
                ratio = out["drafter_cost"].get(d if d != "always-wrong" else wrong_host(m, v),
                                                {"ratio_to_verifier_step": 1.0})["ratio_to_verifier_step"]
                cost = out["verify_cost"][v]["ratio"]
                spec = speculator_for(pool, d, v, args.k_max, ratio, max(0.0, (cost[-1] - 1) / (len(cost) - 1)))
                run = run_pair(pool, tok, v, spec, prompts, args.max_tokens)
                out["runs"].append({"verifier": v, "drafter": d, "prompts": set_name, "speedup": run.speedup,
                                    "acceptance": run.acceptance, "identical": run.identical,
                                    "plain_ms_per_token": run.plain_ms_per_token,
                                    "pair_ms_per_token": run.pair_ms_per_token})
                print(json.dumps(out["runs"][-1]), flush=True)
    out["targets"] = targets(out["runs"])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps(out, indent=1))
    Path(args.out + ".md").write_text(markdown(out))
    print(markdown(out))
    return 0


def targets(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's four targets, each from the best (or the worst-case) run."""
    rows = []

    def best(pred: Any) -> dict[str, Any] | None:
        cands = [r for r in runs if pred(r)]
        return max(cands, key=lambda r: r["speedup"]) if cands else None

    for name, target, pred in (
        ("best pair, dense verifier", TARGETS["dense"], lambda r: r["verifier"] == "dense" and r["drafter"] != "always-wrong"),
        ("best pair, dense-int8 verifier", TARGETS["dense-int8"],
         lambda r: r["verifier"] == "dense-int8" and r["drafter"] != "always-wrong"),
        ("prompt lookup, grounded prompts", TARGETS["prompt-lookup"],
         lambda r: r["drafter"] == PROMPT_LOOKUP and r["prompts"] == "grounded"),
        ("always-rejected drafter (worst case)", TARGETS["worst"], lambda r: r["drafter"] == "always-wrong"),
    ):
        r = best(pred)
        if r is not None:
            rows.append({"target": name, "want": target, "run": r, "met": r["speedup"] >= target and r["identical"]})
    return rows


def markdown(out: dict[str, Any]) -> str:
    lines = ["# Speculative decoding", "", f"Bundle `{out['bundle']}`, threads {out['threads']}, "
             f"{out['max_tokens']} greedy tokens per prompt, k_max {out['k_max']}. Ratios measured interleaved.", "",
             "## Verifier: one pass over n tokens / one decode step", "",
             "| verifier | step ms | " + " | ".join(f"n={n}" for n in range(1, 9)) + " |",
             "|---|---|" + "---|" * 8]
    for v, c in out["verify_cost"].items():
        lines.append(f"| {v} | {c['step_ms']:.2f} | " + " | ".join(f"{x:.2f}" for x in c["ratio"]) + " |")
    lines += ["", "## Drafter: one drafted token / one verifier step", "", "| drafter | ms | ratio |", "|---|---|---|"]
    lines += [f"| {d} | {c['ms']:.3f} | {c['ratio_to_verifier_step']:.3f} |" for d, c in out["drafter_cost"].items()]
    lines += ["", "## Pairs", "", "| verifier | drafter | prompts | acceptance | speedup | identical |",
              "|---|---|---|---|---|---|"]
    for r in out["runs"]:
        acc = "-" if r["acceptance"] is None else f"{r['acceptance']:.2f}"
        lines.append(f"| {r['verifier']} | {r['drafter']} | {r['prompts']} | {acc} | {r['speedup']:.2f}x | "
                     f"{r['identical']} |")
    lines += ["", "## Targets", "", "| target | want | got | pair | met |", "|---|---|---|---|---|"]
    for t in out["targets"]:
        r = t["run"]
        lines.append(f"| {t['target']} | >= {t['want']}x | {r['speedup']:.2f}x | {r['verifier']} + {r['drafter']} "
                     f"({r['prompts']}) | {'yes' if t['met'] else 'no'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
