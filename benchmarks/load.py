"""Load figure: edge-serve at twice the rate it can sustain, with clients that hang up.

    python benchmarks/load.py [--bundle /work/bundles/smollm2-135m] [--minutes 10]
    python benchmarks/load.py --bundle tests-tiny-bundle --smoke      # seconds; the test suite's run

Starts `edge-serve` on a loopback port (nothing else is ever contacted), then:

1. measures the sustainable rate: `--calibrate` blocking requests one after another; the
   single worker serves one request at a time, so the rate is 1 / the mean service time;
2. drives it for `--minutes` with Poisson arrivals at `--overload` (2) times that rate:
   streaming and blocking chat requests, `--leave` of which hang up early (a blocking one
   by a read timeout, a streaming one after its first chunk), while a prober times
   `GET /health` every 0.25 s and the server's resident set is sampled;
3. waits for the queue to empty and reads `/metrics`.

Checks (each one a line of the report, all must pass for exit status 0):
* every accepted request that stayed completed (200 with a finish reason, or a stream that
  ended in `[DONE]`); the server finished exactly as many requests as it accepted, and the
  ones it cancelled are at most the clients that left (nothing accepted is lost);
* every refusal is 429 `rate_limit_error` with `Retry-After`, and the server counted as many;
* no other status, no transport error for a client that stayed;
* RSS grows by less than 5% from the end of the first tenth of the run to the end;
* `/health` answers within 100 ms at p99.

Writes `benchmarks/results/load.{json,md}` (`--out`). Timings from a busy machine are not
results: run the full figure on a quiet one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_runtime.serve.client import wait_healthy  # noqa: E402

DEFAULT_BUNDLE = "/work/bundles/smollm2-135m"
PROMPT = "Summarize in one sentence: the disk /dev/sda1 is 97% full and the backup job failed twice tonight."


@dataclass
class Tally:
    """What the clients saw."""

    sent: int = 0
    completed: int = 0  # stayed, got a whole answer
    rejected_429: int = 0
    rejected_without_retry_after: int = 0
    left: int = 0  # hung up after being accepted (or before any answer)
    left_after_completion: int = 0  # the answer came before the client's patience ran out
    other_status: dict[str, int] = field(default_factory=dict)
    transport_errors: int = 0  # for clients that meant to stay
    incomplete_streams: int = 0
    latencies_s: list[float] = field(default_factory=list)

    def other(self, what: str) -> None:
        self.other_status[what] = self.other_status.get(what, 0) + 1


# ------------------------------------------------------------------------------ the server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(bundle: str, port: int, args: argparse.Namespace) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "edge_runtime.serve.cli", "--bundle", bundle, "--host", "127.0.0.1",
           "--port", str(port), "--signals", "static", "--log-level", "warning", "--max-queue", str(args.max_queue)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def rss_mb(pid: int) -> float:
    """Resident set of `pid` in MiB (Linux /proc; psutil elsewhere)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        import psutil

        return psutil.Process(pid).memory_info().rss / 2**20


def metric_sum(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of counter `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(\{{[^}}]*\}})? ([0-9.e+-]+)$", line)
        if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
            total += float(m.group(2))
    return total


def server_counts(text: str) -> dict[str, float]:
    return {"finished": metric_sum(text, "edge_requests_total"),
            "cancelled": metric_sum(text, "edge_requests_total", finish_reason="cancelled"),
            "overloaded": metric_sum(text, "edge_requests_rejected_total", reason="overloaded")}


# ------------------------------------------------------------------------------ the clients


def body(args: argparse.Namespace, stream: bool) -> dict:
    return {"model": "auto", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": args.max_tokens,
            "ignore_eos": True, "stream": stream, **({"stream_options": {"include_usage": True}} if stream else {})}


async def blocking(client: httpx.AsyncClient, url: str, args: argparse.Namespace, tally: Tally,
                   patience_s: float | None) -> None:
    t0 = time.perf_counter()
    try:
        timeout = httpx.Timeout(600.0, read=patience_s) if patience_s else httpx.Timeout(600.0)
        r = await client.post(url + "/v1/chat/completions", json=body(args, False), timeout=timeout)
    except httpx.ReadTimeout:
        if patience_s:
            tally.left += 1
            return
        tally.transport_errors += 1
        return
    except httpx.TransportError:
        tally.transport_errors += 1
        return
    record(r, tally, time.perf_counter() - t0, leaving=bool(patience_s),
           complete=r.status_code == 200 and r.json()["choices"][0]["finish_reason"] in ("length", "stop"))


async def streaming(client: httpx.AsyncClient, url: str, args: argparse.Namespace, tally: Tally,
                    leave: bool) -> None:
    t0 = time.perf_counter()
    try:
        async with client.stream("POST", url + "/v1/chat/completions", json=body(args, True),
                                 timeout=httpx.Timeout(600.0)) as r:
            if r.status_code != 200:
                await r.aread()
                record(r, tally, time.perf_counter() - t0, leaving=False, complete=False)
                return
            lines = []
            async for line in r.aiter_lines():
                if line:
                    lines.append(line)
                if leave and len(lines) >= 2:  # the role chunk and one token: then hang up
                    tally.left += 1
                    return
    except httpx.TransportError:
        tally.transport_errors += 1
        return
    record(r, tally, time.perf_counter() - t0, leaving=leave, complete=bool(lines) and lines[-1] == "data: [DONE]")


def record(r: httpx.Response, tally: Tally, seconds: float, leaving: bool, complete: bool) -> None:
    if r.status_code == 429:
        tally.rejected_429 += 1
        if "retry-after" not in r.headers or r.json()["error"]["type"] != "rate_limit_error":
            tally.rejected_without_retry_after += 1
    elif r.status_code == 200 and complete:
        tally.completed += 1
        tally.latencies_s.append(seconds)
        if leaving:
            tally.left_after_completion += 1
    elif r.status_code == 200:
        tally.incomplete_streams += 1
    else:
        tally.other(str(r.status_code))


async def probe_health(client: httpx.AsyncClient, url: str, stop: asyncio.Event, out: list[float]) -> None:
    while not stop.is_set():
        t0 = time.perf_counter()
        try:
            r = await client.get(url + "/health", timeout=10)
            out.append(time.perf_counter() - t0 if r.status_code == 200 else float("inf"))
        except httpx.TransportError:
            out.append(float("inf"))
        await asyncio.sleep(0.25)


async def sample_rss(pid: int, stop: asyncio.Event, out: list[tuple[float, float]], t0: float) -> None:
    while not stop.is_set():
        out.append((time.monotonic() - t0, rss_mb(pid)))
        await asyncio.sleep(1.0)


# ------------------------------------------------------------------------------ the phases


async def calibrate(url: str, args: argparse.Namespace) -> float:
    """Mean seconds per blocking request, one at a time (after one warm-up request)."""
    async with httpx.AsyncClient() as client:
        times = []
        for i in range(args.calibrate + 1):
            t0 = time.perf_counter()
            r = await client.post(url + "/v1/chat/completions", json=body(args, False), timeout=600)
            r.raise_for_status()
            if i:
                times.append(time.perf_counter() - t0)
    return statistics.mean(times)


async def drive(url: str, pid: int, rate: float, args: argparse.Namespace) -> dict:
    """Poisson arrivals at `rate` per second for the run's duration; returns what was seen."""
    tally, health, rss = Tally(), [], []
    rng = random.Random(args.seed)
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=8)
    async with httpx.AsyncClient(limits=limits) as client:
        before = server_counts((await client.get(url + "/metrics")).text)
        t0 = time.monotonic()
        side = [asyncio.create_task(probe_health(client, url, stop, health)),
                asyncio.create_task(sample_rss(pid, stop, rss, t0))]
        tasks, due = [], t0
        while True:  # arrival times are drawn ahead, so a late event loop sends a burst, not fewer requests
            due += rng.expovariate(rate)
            if due - t0 >= args.seconds:
                break
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            leave, stream = rng.random() < args.leave, rng.random() < 0.5
            tally.sent += 1
            if stream:
                tasks.append(asyncio.create_task(streaming(client, url, args, tally, leave)))
            else:
                # patient enough to be queued (a 429 comes at once), impatient enough to leave before the end
                patience = max(0.3, rng.uniform(0.2, 1.0) * args.service_s * args.max_queue / 2) if leave else None
                tasks.append(asyncio.create_task(blocking(client, url, args, tally, patience)))
        await asyncio.gather(*tasks)
        await drained(client, url)
        stop.set()
        await asyncio.gather(*side)
        rss.append((time.monotonic() - t0, rss_mb(pid)))
        after = server_counts((await client.get(url + "/metrics")).text)
    server = {k: after[k] - before[k] for k in after}
    return {"tally": tally, "health_s": health, "rss": rss, "server": server, "seconds": time.monotonic() - t0}


async def drained(client: httpx.AsyncClient, url: str, timeout_s: float = 120.0) -> None:
    """Wait until nothing is queued or running (cancelled requests finish within a token)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        s = (await client.get(url + "/status")).json()
        if s["queue_depth"] == 0 and s["running"] is None:
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the server still had work {timeout_s:g} s after the last client finished")


# ------------------------------------------------------------------------------ checks and report


def checks(run: dict) -> dict[str, dict]:
    """Each check: passed, and the numbers it was decided on."""
    t: Tally = run["tally"]
    s = run["server"]
    accepted = t.sent - t.rejected_429
    health = sorted(run["health_s"])
    p99 = health[min(len(health) - 1, int(0.99 * len(health)))] if health else float("inf")
    warm = [mb for ts, mb in run["rss"] if ts >= 0.1 * run["seconds"]] or [mb for _, mb in run["rss"]]
    growth = (run["rss"][-1][1] - warm[0]) / warm[0]
    # a client that hung up may have left before its 429 arrived: the server's counts settle it
    return {
        "every accepted request that stayed completed": {
            "passed": t.completed + t.left == accepted and not t.incomplete_streams,
            "accepted": accepted, "completed": t.completed, "left": t.left,
            "incomplete_streams": t.incomplete_streams},
        "nothing accepted is lost (server: finished + refused = sent)": {
            "passed": s["finished"] + s["overloaded"] == t.sent and s["cancelled"] <= t.left,
            "sent": t.sent, "server_finished": s["finished"], "server_refused": s["overloaded"],
            "server_cancelled": s["cancelled"], "clients_left": t.left},
        "every refusal is 429 with Retry-After": {
            "passed": (t.rejected_without_retry_after == 0
                       and t.rejected_429 <= s["overloaded"] <= t.rejected_429 + t.left),
            "client_429": t.rejected_429, "server_refused": s["overloaded"],
            "without_retry_after": t.rejected_without_retry_after},
        "no other status, no transport error": {
            "passed": not t.other_status and not t.transport_errors,
            "other_status": t.other_status, "transport_errors": t.transport_errors},
        "RSS growth < 5%": {"passed": growth < 0.05, "growth": round(growth, 4), "rss_start_mb": round(warm[0], 1),
                            "rss_end_mb": round(run["rss"][-1][1], 1)},
        "/health p99 < 100 ms": {"passed": p99 < 0.1, "p99_ms": round(1e3 * p99, 2), "probes": len(health)},
    }


def report(args: argparse.Namespace, rate: float, run: dict, results: dict[str, dict]) -> dict:
    t: Tally = run["tally"]
    lat = sorted(t.latencies_s)
    return {
        "bundle": args.bundle, "smoke": args.smoke, "minutes": args.seconds / 60, "overload": args.overload,
        "max_tokens": args.max_tokens, "max_queue": args.max_queue, "leave_share": args.leave,
        "service_s": round(args.service_s, 4), "sustainable_rate_per_s": round(rate, 3),
        "offered_rate_per_s": round(args.overload * rate, 3),
        "clients": {k: v for k, v in asdict(t).items() if k != "latencies_s"},
        "completed_latency_p50_s": round(lat[len(lat) // 2], 3) if lat else None,
        "completed_latency_p95_s": round(lat[int(0.95 * (len(lat) - 1))], 3) if lat else None,
        "server": run["server"], "checks": results, "passed": all(c["passed"] for c in results.values()),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
    }


def markdown(rep: dict) -> str:
    lines = [f"# edge-serve under load ({'smoke run' if rep['smoke'] else 'load figure'})", "",
             f"Bundle `{rep['bundle']}`; {rep['minutes']:.2f} min at {rep['overload']}x the sustainable rate "
             f"({rep['sustainable_rate_per_s']} req/s measured, {rep['offered_rate_per_s']} req/s offered); "
             f"max_tokens {rep['max_tokens']}, queue {rep['max_queue']}, {100 * rep['leave_share']:.0f}% of "
             f"clients hang up early. Completed requests: p50 {rep['completed_latency_p50_s']} s, "
             f"p95 {rep['completed_latency_p95_s']} s.", "", "| check | result | numbers |", "|---|---|---|"]
    for name, c in rep["checks"].items():
        nums = ", ".join(f"{k} {v}" for k, v in c.items() if k != "passed")
        lines.append(f"| {name} | {'pass' if c['passed'] else 'FAIL'} | {nums} |")
    lines += ["", "Clients: " + ", ".join(f"{k} {v}" for k, v in rep["clients"].items()), ""]
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", default=DEFAULT_BUNDLE, help="bundle directory (default: %(default)s)")
    ap.add_argument("--minutes", type=float, default=10.0, help="length of the overload phase (default: 10)")
    ap.add_argument("--smoke", action="store_true", help="a seconds-long run (4 s of load, 3 calibration requests) for tests")
    ap.add_argument("--overload", type=float, default=2.0, help="offered rate / sustainable rate (default: 2)")
    ap.add_argument("--leave", type=float, default=0.2, help="share of clients that hang up early (default: 0.2)")
    ap.add_argument("--max-tokens", type=int, default=None,
                    help="tokens per request (default: 32; 160 with --smoke, so that a tiny model's requests take "
                    "long enough for the client to keep up)")
    ap.add_argument("--max-queue", type=int, default=16, help="edge-serve --max-queue (default: 16)")
    ap.add_argument("--calibrate", type=int, default=8, help="requests timed for the sustainable rate")
    ap.add_argument("--threads", type=int, default=None, help="edge-serve --threads")
    ap.add_argument("--seed", type=int, default=0, help="arrival and client-mix seed")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="results directory")
    args = ap.parse_args(argv)
    args.seconds = 4.0 if args.smoke else 60.0 * args.minutes
    if args.smoke:
        args.calibrate = min(args.calibrate, 3)
    if args.max_tokens is None:
        args.max_tokens = 160 if args.smoke else 32
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(args.bundle, port, args)
    try:
        wait_healthy(url, proc, timeout_s=300)
        args.service_s = asyncio.run(calibrate(url, args))
        rate = 1.0 / args.service_s
        print(f"sustainable: {rate:.2f} req/s ({1e3 * args.service_s:.0f} ms each); offering {args.overload}x "
              f"for {args.seconds:.0f} s", flush=True)
        run = asyncio.run(drive(url, proc.pid, args.overload * rate, args))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    rep = report(args, rate, run, checks(run))
    args.out.mkdir(parents=True, exist_ok=True)
    name = "load_smoke" if args.smoke else "load"
    (args.out / f"{name}.json").write_text(json.dumps(rep, indent=2) + "\n")
    (args.out / f"{name}.md").write_text(markdown(rep))
    print(markdown(rep))
    return 0 if rep["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
