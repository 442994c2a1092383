"""Runtime benchmark: speed per variant, the runtime's own overhead, the controller, edge-serve, memory.

    python benchmarks/runtime_bench.py --bundle bundles/smollm2-135m [--threads 2] [--quick]

Writes `benchmarks/results/runtime.json` (a `variants` list with the manifest's keys plus
this benchmark's measurements, then the controller, server and memory sections) and
`benchmarks/results/runtime.md` (the same as Markdown tables). What it measures:

1. per variant, 128-token prefill and greedy decode tokens/s three ways, interleaved
   run by run so that machine noise hits them alike: a bare loop on the runtime's
   `Decoder` (IO binding, KV cache in place), the same variant through
   `Runtime.generate` (queue, signals, observation, policy, dispatch, sampling,
   detokenization), and the plain `session.forward` loop that copies the cache every
   step. The runtime's overhead is the median over runs of runtime / bare - 1.
2. the controller: `Runtime.decide` (signals + observation + policy) and the policy
   alone, p50/p99 over varied requests.
3. edge-serve in a separate process: throughput and p50/p95 latency at 1, 4 and 16
   concurrent clients, against the embedded call.
4. memory: resident set over many requests through the runtime (growth after warm-up).

Targets (the issue): runtime overhead <= 3% of request time; decision p99 <= 1 ms;
edge-serve overhead at 1 client <= 5%; RSS growth < 5%. Comparisons with other runtimes
(llama.cpp, onnxruntime-genai) are benchmarks/peers.py's: measured side by side in one
run, never typed in here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from edge_runtime.bundle import read_manifest  # noqa: E402
from edge_runtime.control import observation  # noqa: E402
from edge_runtime.control.signals import StaticSource  # noqa: E402
from edge_runtime.engine.session import VariantSession  # noqa: E402
from edge_runtime.runtime import Runtime  # noqa: E402
from edge_runtime.serve.client import wait_healthy  # noqa: E402

RT: dict[str, Any] = {}  # Runtime.open settings shared by every section (--spin)


@dataclass
class _Pin:
    """A policy that always answers `index` (the controller's cost without its choice)."""

    index: int

    def decide(self, obs: np.ndarray, allowed: np.ndarray) -> Any:
        from types import SimpleNamespace

        return SimpleNamespace(variant=self.index, reason="bench", latency_s=0.0)


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


# ------------------------------------------------------------------------------ 1. speed


def bare(decoder: Any, prompt: np.ndarray, new: int) -> tuple[float, float]:
    """(prefill s, decode s for new - 1 steps) of a greedy loop straight on the decoder."""
    decoder.reset()
    t0 = time.perf_counter()
    row = decoder.prefill(prompt)
    tok = int(np.argmax(row))
    t1 = time.perf_counter()
    for _ in range(new - 1):
        tok = int(np.argmax(decoder.step(tok)))
    return t1 - t0, time.perf_counter() - t1


def naive(session: VariantSession, prompt: np.ndarray, new: int) -> float:
    """Decode s of the plain forward loop (past/present copied every step)."""
    logits, past = session.forward(prompt[None, :])
    tok = int(logits[0, -1].argmax())
    t0 = time.perf_counter()
    for _ in range(new - 1):
        logits, past = session.forward(np.array([[tok]], np.int64), past)
        tok = int(logits[0, -1].argmax())
    return time.perf_counter() - t0


def bench_variants(bundle: Path, names: list[str], threads: int | None, prompt_len: int, new: int,
                   repeats: int) -> list[dict[str, Any]]:
    manifest = read_manifest(bundle)
    rng = np.random.default_rng(0)
    prompt = rng.integers(100, manifest.model.vocab_size, prompt_len).astype(np.int64)
    out = []
    for name in names:
        index = manifest.index(name)
        v = manifest.variants[index]
        print(f"  {name}: ", end="", flush=True)
        with Runtime.open(bundle, **RT, policy=_Pin(index), signals=StaticSource(), threads=threads, preload=(name,),
                          allow_ungated=True) as rt:
            loaded, _ = rt.pool.get(index, prompt_len + new)
            dec, session = loaded.decoder, loaded.session
            rt.generate(prompt_ids=prompt.tolist(), max_tokens=4, ignore_eos=True)  # warm up both paths
            bare(dec, prompt, 4)
            rows = []
            for _ in range(repeats):
                bp, bd = bare(dec, prompt, new)
                r = rt.generate(prompt_ids=prompt.tolist(), max_tokens=new, ignore_eos=True)
                nd = naive(session, prompt, new)
                t = r.timings
                service = t.total_s - t.queue_s  # what the request cost once picked up...
                rows.append({"bare_prefill_s": bp, "bare_decode_s": bd, "rt_prefill_s": t.prefill_s,
                             "rt_decode_s": t.decode_s, "rt_total_s": t.total_s, "rt_service_s": service,
                             "naive_decode_s": nd})
                print(".", end="", flush=True)
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        overhead = statistics.median(r["rt_total_s"] / (r["bare_prefill_s"] + r["bare_decode_s"]) - 1 for r in rows)
        m = {
            "prompt_tokens": prompt_len, "new_tokens": new, "repeats": repeats,
            "prefill_tok_s": prompt_len / med["bare_prefill_s"],
            "decode_tok_s": (new - 1) / med["bare_decode_s"],
            "runtime_prefill_tok_s": prompt_len / med["rt_prefill_s"],
            "runtime_decode_tok_s": (new - 1) / med["rt_decode_s"],
            "naive_decode_tok_s": (new - 1) / med["naive_decode_s"],
            "runtime_overhead_frac": overhead,
            "request_s": med["rt_total_s"],
        }
        print(f" decode {m['decode_tok_s']:.1f} tok/s (runtime {m['runtime_decode_tok_s']:.1f}, naive "
              f"{m['naive_decode_tok_s']:.1f}), prefill {m['prefill_tok_s']:.0f} tok/s, overhead {overhead:+.2%}")
        out.append({**v.to_dict(), "bench": m})
    return out


# ------------------------------------------------------------------------------ 2. controller


def bench_controller(bundle: Path, threads: int | None, n: int) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    with Runtime.open(bundle, **RT, signals=StaticSource(), threads=threads, preload="none") as rt:
        full, policy_only = [], []
        allowed = rt.allowed()
        for _ in range(n):
            p, m = int(rng.integers(1, 1024)), int(rng.integers(1, 512))
            dl, hard = float(rng.uniform(0.5, 30)), float(rng.uniform())
            t0 = time.perf_counter()
            _, obs = rt.decide(p, m, dl, hard)
            full.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            rt.policy.decide(obs, allowed)
            policy_only.append(time.perf_counter() - t0)
        kind = type(rt.policy).__name__
    return {"policy": kind, "calls": n, "decide_p50_ms": 1e3 * pct(full, 50), "decide_p99_ms": 1e3 * pct(full, 99),
            "policy_p50_ms": 1e3 * pct(policy_only, 50), "policy_p99_ms": 1e3 * pct(policy_only, 99),
            "observation_features": len(observation.FEATURES)}


# ------------------------------------------------------------------------------ 3. edge-serve


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _latencies(fn, clients: int, total: int) -> tuple[list[float], float]:
    """Run `fn` `total` times from `clients` threads; (latencies, wall s)."""
    lat: list[float] = []
    lock = threading.Lock()
    todo = iter(range(total))

    def worker() -> None:
        while True:
            with lock:
                if next(todo, None) is None:
                    return
            t0 = time.perf_counter()
            fn()
            with lock:
                lat.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    ts = [threading.Thread(target=worker) for _ in range(clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return lat, time.perf_counter() - t0


def bench_server(bundle: Path, variant: str, threads: int | None, prompt_len: int, new: int,
                 levels: list[int], per_client: int) -> dict[str, Any]:
    """edge-serve in its own process against the embedded call, same variant and request.

    At one client the two are interleaved call by call (the same machine noise hits both)
    and the overhead is the median of the per-pair ratios; then the server alone at each
    concurrency level.
    """
    import httpx

    manifest = read_manifest(bundle)
    rng = np.random.default_rng(2)
    prompt = rng.integers(100, manifest.model.vocab_size, prompt_len).astype(np.int64).tolist()
    body = {"model": variant, "prompt": prompt, "max_tokens": new, "ignore_eos": True}
    n_single = max(8, per_client * 2)
    port = _free_port()
    cmd = [sys.executable, "-m", "edge_runtime.serve.cli", "--bundle", str(bundle), "--port", str(port),
           "--preload", variant, "--max-queue", "64", "--signals", "static", "--log-level", "warning",
           "--allow-ungated"] + (["--threads", str(threads)] if threads else []) + (["--spin"] if RT.get("spin") else [])
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    url = f"http://127.0.0.1:{port}"
    local = threading.local()

    def call() -> None:
        c = getattr(local, "client", None)
        if c is None:
            c = local.client = httpx.Client(timeout=600)
        c.post(url + "/v1/completions", json=body).raise_for_status()

    try:
        wait_healthy(url, proc, timeout_s=300)
        call()
        embedded, served = [], []
        with Runtime.open(bundle, **RT, signals=StaticSource(), threads=threads, preload=(variant,), allow_ungated=True,
                          max_queue=64) as rt:
            rt.generate(prompt_ids=prompt, max_tokens=4, variant=variant)
            for _ in range(n_single):
                t0 = time.perf_counter()
                rt.generate(prompt_ids=prompt, max_tokens=new, ignore_eos=True, variant=variant)
                t1 = time.perf_counter()
                call()
                embedded.append(t1 - t0)
                served.append(time.perf_counter() - t1)
        overhead = statistics.median(s / e - 1 for s, e in zip(served, embedded, strict=True))
        print(f"   1 client, interleaved with the embedded call: p50 {pct(served, 50):.3f} s vs "
              f"{pct(embedded, 50):.3f} s ({overhead:+.2%})")
        results = {}
        for clients in levels:
            total = n_single if clients == 1 else clients * per_client
            lat, wall = _latencies(call, clients, total)
            results[str(clients)] = {"requests": total, "req_per_s": total / wall, "tok_per_s": total * new / wall,
                                     "p50_s": pct(lat, 50), "p95_s": pct(lat, 95)}
            print(f"  {clients:>2} clients: {total / wall:.2f} req/s, p50 {pct(lat, 50):.3f} s, "
                  f"p95 {pct(lat, 95):.3f} s")
    finally:
        proc.terminate()
        proc.wait(60)
    emb = {"requests": n_single, "p50_s": pct(embedded, 50), "p95_s": pct(embedded, 95),
           "served_p50_s": pct(served, 50)}
    return {"variant": variant, "prompt_tokens": prompt_len, "new_tokens": new, "embedded": emb,
            "clients": results, "overhead_1_client_frac": overhead, "exit_code": proc.returncode}


# ------------------------------------------------------------------------------ 4. memory


def bench_memory(bundle: Path, threads: int | None, n: int) -> dict[str, Any]:
    manifest = read_manifest(bundle)
    rng = np.random.default_rng(3)
    with Runtime.open(bundle, **RT, signals=StaticSource(), threads=threads, preload="all") as rt:
        names = [v.name for i, v in enumerate(manifest.variants) if rt.allowed()[i]]
        warm = max(1, n // 10)
        samples = []
        for i in range(n):
            p = rng.integers(100, manifest.model.vocab_size, int(rng.integers(8, 64))).tolist()
            rt.generate(prompt_ids=p, max_tokens=int(rng.integers(4, 16)), temperature=float(rng.choice([0, 0.8])),
                        seed=i, variant=names[i % len(names)])
            if i + 1 == warm or (i + 1) % max(1, n // 10) == 0:
                samples.append((i + 1, rss_mb()))
    base = samples[0][1]
    growth = samples[-1][1] / base - 1
    print(f"  RSS {base:.0f} MiB after {samples[0][0]} requests, {samples[-1][1]:.0f} MiB after {n}: {growth:+.2%}")
    return {"requests": n, "warmup": warm, "rss_mb": samples, "growth_frac": growth}


# ------------------------------------------------------------------------------ report


def targets(variants: list[dict], controller: dict, server: dict | None, memory: dict | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if variants:
        worst = max(v["bench"]["runtime_overhead_frac"] for v in variants)
        out["runtime_overhead_frac"] = {"value": worst, "target": "<= 0.03", "pass": worst <= 0.03}
    out["decision_p99_ms"] = {"value": controller["decide_p99_ms"], "target": "<= 1.0",
                              "pass": controller["decide_p99_ms"] <= 1.0}
    if server and server.get("overhead_1_client_frac") is not None:
        o = server["overhead_1_client_frac"]
        out["server_overhead_1_client_frac"] = {"value": o, "target": "<= 0.05", "pass": o <= 0.05}
    if memory:
        g = memory["growth_frac"]
        out["rss_growth_frac"] = {"value": g, "target": "< 0.05", "pass": g < 0.05}
    return out


def markdown(res: dict[str, Any]) -> str:
    lines = [f"# Runtime benchmark: {res['bundle']}", "",
             f"{res['machine']['cpu']}, {res['machine']['cores']} cores, {res['config']['threads'] or 'all'} threads "
             f"({'spinning' if res['config']['spin'] else 'not spinning'}), "
             f"onnxruntime {res['machine']['onnxruntime']}; prompt {res['config']['prompt_tokens']} tokens, "
             f"{res['config']['new_tokens']} new tokens, median of {res['config']['repeats']} interleaved runs.", "",
             "| variant | method | sparsity | quant | gate | prefill tok/s | decode tok/s | runtime decode tok/s "
             "| copy-every-step decode tok/s | runtime overhead |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for v in res["variants"]:
        b = v["bench"]
        lines.append(f"| {v['name']} | {v['method']} | {v['sparsity']:.2f} | {v['quantization']} | {v['gate']['status']} "
                     f"| {b['prefill_tok_s']:.0f} | {b['decode_tok_s']:.1f} | {b['runtime_decode_tok_s']:.1f} "
                     f"| {b['naive_decode_tok_s']:.1f} | {b['runtime_overhead_frac']:+.2%} |")
    lines += ["", "Peers (llama.cpp, onnxruntime-genai) side by side: benchmarks/peers.py (results/peers.md).", ""]
    c = res["controller"]
    lines += [f"Controller ({c['policy']}): decide p50 {c['decide_p50_ms']:.3f} ms, p99 {c['decide_p99_ms']:.3f} ms "
              f"(policy alone p99 {c['policy_p99_ms']:.3f} ms).", ""]
    s = res.get("server")
    if s:
        lines += [f"edge-serve, variant {s['variant']}, {s['prompt_tokens']}+{s['new_tokens']} tokens; embedded call "
                  f"p50 {s['embedded']['p50_s']:.3f} s:", "",
                  "| clients | req/s | tok/s | p50 s | p95 s |", "|---|---|---|---|---|"]
        for k, r in s["clients"].items():
            lines.append(f"| {k} | {r['req_per_s']:.2f} | {r['tok_per_s']:.1f} | {r['p50_s']:.3f} | {r['p95_s']:.3f} |")
        lines.append("")
    m = res.get("memory")
    if m:
        lines += [f"Memory: RSS {m['rss_mb'][0][1]:.0f} MiB after {m['warmup']} requests, {m['rss_mb'][-1][1]:.0f} MiB "
                  f"after {m['requests']} ({m['growth_frac']:+.2%}).", ""]
    lines += ["| target | value | goal | pass |", "|---|---|---|---|"]
    for k, t in res["targets"].items():
        lines.append(f"| {k} | {t['value']:.3f} | {t['target']} | {'yes' if t['pass'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=None, help="onnxruntime threads (default: all cores)")
    ap.add_argument("--variants", default=None, help="comma-separated (default: all)")
    ap.add_argument("--spin", action="store_true", help="let onnxruntime's threads busy-wait (RuntimeConfig.spin)")
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--decisions", type=int, default=2000)
    ap.add_argument("--clients", default="1,4,16", help="edge-serve concurrency levels")
    ap.add_argument("--per-client", type=int, default=4, help="requests per client at each level")
    ap.add_argument("--server-variant", default=None, help="variant the server test pins (default: the fastest)")
    ap.add_argument("--memory-requests", type=int, default=1000)
    ap.add_argument("--skip", default="", help="comma-separated sections to skip: variants, server, memory")
    ap.add_argument("--quick", action="store_true", help="tiny settings, for checking the script")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)
    if args.quick:
        args.prompt_tokens, args.new_tokens, args.repeats, args.decisions = 16, 8, 3, 200
        args.per_client, args.memory_requests, args.clients = 2, 60, "1,4"
    RT["spin"] = args.spin
    manifest = read_manifest(args.bundle)
    names = args.variants.split(",") if args.variants else [v.name for v in manifest.variants
                                                            if v.gate.status != "fail"]
    skip = set(filter(None, args.skip.split(",")))
    import onnxruntime

    variants: list[dict[str, Any]] = []
    if "variants" not in skip:
        print("1. variants")
        variants = bench_variants(args.bundle, names, args.threads, args.prompt_tokens, args.new_tokens, args.repeats)
    print("2. controller")
    controller = bench_controller(args.bundle, args.threads, args.decisions)
    print(f"  decide p99 {controller['decide_p99_ms']:.3f} ms ({controller['policy']})")
    server = None
    if "server" not in skip:
        print("3. edge-serve")
        fastest = max(variants, key=lambda v: v["bench"]["decode_tok_s"])["name"] if variants else names[-1]
        server = bench_server(args.bundle, args.server_variant or fastest, args.threads, min(args.prompt_tokens, 32),
                              min(args.new_tokens, 32), [int(c) for c in args.clients.split(",")], args.per_client)
    memory = None
    if "memory" not in skip:
        print("4. memory")
        memory = bench_memory(args.bundle, args.threads, args.memory_requests)
    res = {
        "bundle": str(args.bundle),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "onnxruntime": onnxruntime.__version__, "python": platform.python_version(),
                    "load_avg_at_end": os.getloadavg()},
        "config": {"threads": args.threads, "spin": args.spin, "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens,
                   "repeats": args.repeats, "quick": args.quick},
        "variants": variants,
        "controller": controller,
        "server": server,
        "memory": memory,
    }
    res["targets"] = targets(variants, controller, server, memory)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "runtime.json").write_text(json.dumps(res, indent=2) + "\n")
    (args.out / "runtime.md").write_text(markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
