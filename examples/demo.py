"""The main job, end to end on the embedded default model (`make demo`).

1. export: SmolLM2-135M-Instruct pruned (SparseGPT, structured), quantized, to ONNX
   (`edge-export`; with distillation after pruning: `--recipe recovered`; every method: `--recipe full`)
2. evaluate and gate every variant on the task suite (`edge-eval`)
3. learn which requests the cheaper variants lose: the difficulty model, scored on cases the
   gate never sees (`python -m harness.difficulty`)
4. train the budget controller and export its policy into the bundle (`edge-train`)
5. replay resource profiles through the RL, rule and static controllers (`edge-sim`)
6. serve real requests through `edge-serve` with the official OpenAI client
7. a short completion from each variant through the embedded runtime

Every stage runs the command a user would run and is skipped when its output is
already in the bundle (`--fresh` redoes everything). Reports land in the bundle
(`eval/`, `sim/`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge_runtime import bundle as B  # noqa: E402
from edge_runtime.control.policy import OnnxPolicy  # noqa: E402
from edge_runtime.errors import EdgeError  # noqa: E402
from edge_runtime.serve.client import wait_healthy  # noqa: E402

PROFILES = ("scripted-day", "commute-phone")  # replayed in stage 4 (both held out from training)
QUESTIONS = (
    "What is the capital of France?",
    "Give me three tips for saving battery on a laptop.",
)


STARTED: list[tuple[str, float]] = []  # (stage, perf_counter at its start), for the closing table


def stage(title: str) -> None:
    STARTED.append((title, time.perf_counter()))
    print(f"\n=== {title} ===", flush=True)


def stage_times(end: float) -> str:
    """Seconds per stage, as a Markdown table (the README quotes a fresh machine's)."""
    ends = [t for _, t in STARTED[1:]] + [end]
    rows = [f"| {title} | {stop - start:.0f} |" for (title, start), stop in zip(STARTED, ends, strict=True)]
    return "\n".join(["| stage | seconds |", "|---|---|", *rows])


def run(*cmd: str, capture: bool = False) -> str:
    print("$ " + " ".join(cmd), flush=True)
    proc = subprocess.run([sys.executable, "-m", *cmd], check=True, cwd=ROOT, text=True,
                          stdout=subprocess.PIPE if capture else None)
    return proc.stdout or ""


def manifest_of(path: Path) -> B.Manifest | None:
    try:
        m = B.read_manifest(path)
        B.check_files(path, m)
        return m
    except EdgeError:
        return None


def export(bundle: Path, recipe: str, fresh: bool) -> None:
    stage("1. export the default bundle (edge-export)")
    if manifest_of(bundle) is not None and not fresh:
        print(f"{bundle} exists: reusing it (pass --fresh to rebuild)")
        return
    run("export.cli", "--model", "smollm2-135m", "--out", str(bundle), "--recipe", recipe, "--force")


def evaluate(bundle: Path, fresh: bool) -> None:
    stage("2. evaluate and gate every variant (edge-eval)")
    m = manifest_of(bundle)
    if fresh or not (bundle / "floors.toml").is_file():
        run("harness.cli", "--bundle", str(bundle), "--set-floors", "--and-gate")  # dense scored once for both
    elif m is not None and all(v.gate.status != "pending" for v in m.variants):
        print("every variant already has a gate: reusing it")
    else:
        run("harness.cli", "--bundle", str(bundle))
    m = manifest_of(bundle)
    for v in m.variants:
        failed = f" (failed: {', '.join(v.gate.failed)})" if v.gate.failed else ""
        print(f"  {v.name:>20}: {v.gate.status}{failed}")


def difficulty(bundle: Path, fresh: bool) -> None:
    stage("3. train the difficulty model (python -m harness.difficulty)")
    m = manifest_of(bundle)
    if m is not None and m.difficulty and not fresh:
        print(f"the bundle has a difficulty model (AUC {m.difficulty.get('auc')}): reusing it")
        return
    entry = json.loads(run("harness.difficulty", "--bundle", str(bundle), capture=True))
    print(f"  {entry['cases']} cases, {entry['hard_cases']} that {', '.join(entry['variants'][1:])} lose where "
          f"{entry['variants'][0]} wins; cross-validated AUC {entry['auc']}")


def train(bundle: Path, fresh: bool) -> None:
    stage("4. train the budget controller (edge-train)")
    m = manifest_of(bundle)
    if m is not None and m.controller.policy and not fresh:
        try:
            OnnxPolicy.from_bundle(bundle, m)  # e.g. trained on an older observation version
        except EdgeError as e:
            print(f"the bundle's policy cannot be used ({e}): training a new one")
        else:
            print(f"the bundle has a policy ({m.controller.policy}): reusing it")
            return
    run("controller.cli", "--bundle", str(bundle))


def simulate(bundle: Path) -> None:
    stage("5. replay resource profiles (edge-sim)")
    out = bundle / "sim"
    out.mkdir(exist_ok=True)
    m = B.read_manifest(bundle)
    dense = next(v.name for v in m.variants if v.gate.status != "fail")
    rows = []
    for profile in PROFILES:
        for controller in ("rl", "rule", f"static:{dense}"):
            args = ["edge_runtime.sim.cli", "--bundle", str(bundle), "--profile", profile, "--controller", controller,
                    "--json"]
            if controller == "rl":
                args += ["--plot", str(out / f"{profile}.png")]
            r = json.loads(run(*args, capture=True))
            rows.append((profile, controller, r))
    print(f"\n{'profile':<15} {'controller':<18} {'reward':>8} {'quality':>8} {'hard q':>7} {'miss %':>7} "
          f"{'energy Wh':>9} {'battery':>8}")
    for profile, controller, r in rows:
        print(f"{profile:<15} {controller:<18} {r['reward']:8.1f} {r['mean_quality']:8.3f} {r['hard_quality']:7.3f} "
              f"{100 * r['deadline_miss_rate']:7.1f} {r['energy_wh']:9.2f} {r['battery_end']:8.2f}")
    print(f"plots of the RL controller's decisions: {out}/*.png")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(bundle: Path) -> None:
    stage("6. serve real requests (edge-serve + the OpenAI client)")
    import httpx
    from openai import OpenAI

    port = free_port()
    cmd = [sys.executable, "-m", "edge_runtime.serve.cli", "--bundle", str(bundle), "--port", str(port)]
    print("$ " + " ".join(cmd[2:]), flush=True)
    server = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "EDGE_LOG_LEVEL": "warning"})
    try:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, server, timeout_s=180, poll_s=0.5)
        client = OpenAI(base_url=f"{base}/v1", api_key="unused")
        model = client.models.list().data[0].id
        for q in QUESTIONS:
            raw = client.chat.completions.with_raw_response.create(
                model=bundle.name, messages=[{"role": "user", "content": q}], max_tokens=48, temperature=0
            )
            reply = raw.parse()
            print(f"\n> {q}\n{reply.choices[0].message.content.strip()}")
            print(f"  [variant {raw.headers.get('x-edge-variant')}, why: {raw.headers.get('x-edge-reason')}, "
                  f"{reply.usage.completion_tokens} tokens]")
        print("\n> (streamed) Once upon a time")
        stream = client.completions.create(model=bundle.name, prompt="Once upon a time", max_tokens=32,
                                           temperature=0, stream=True)
        print("".join(chunk.choices[0].text for chunk in stream if chunk.choices).strip())
        metrics = httpx.get(f"{base}/metrics", timeout=5).text
        served = [ln for ln in metrics.splitlines() if ln.startswith("edge_") and "selections_total{" in ln]
        print("\nper-variant selections (/metrics):\n  " + "\n  ".join(served[:8]))
        print(f"(models listed: {len(client.models.list().data)}, first: {model})")
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=60)
        print(f"edge-serve stopped on SIGTERM with exit code {code}")


def completions(bundle: Path) -> None:
    stage("7. a completion from each variant (embedded runtime, greedy)")
    from edge_runtime.runtime import Runtime

    prompt = "The capital of France is"
    with Runtime.open(bundle, allow_ungated=True, preload="none") as rt:
        for v in rt.manifest.variants:
            r = rt.generate(prompt, variant=v.name, max_tokens=16, temperature=0)
            gate = "" if v.gate.status != "fail" else "  [gate failed: not served by default]"
            print(f"[{v.name:>20}] {prompt}{r.text!r} ({r.timings.decode_tokens_per_s:.0f} tok/s){gate}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=ROOT / "bundles" / "smollm2-135m")
    ap.add_argument("--recipe", default="default", help="export recipe (default: %(default)s)")
    ap.add_argument("--fresh", action="store_true", help="redo every stage even if its output exists")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    export(args.bundle, args.recipe, args.fresh)
    evaluate(args.bundle, args.fresh)
    difficulty(args.bundle, args.fresh)
    train(args.bundle, args.fresh)
    simulate(args.bundle)
    serve(args.bundle)
    completions(args.bundle)
    end = time.perf_counter()
    print(f"\n{stage_times(end)}\n\ndone in {end - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
