"""A log summarizer that embeds the runtime (no HTTP): one summary per block of log lines.

Runs where the logs are, e.g. on a Jetson next to the service it watches:

    python examples/log_summarizer.py --bundle bundles/smollm2-135m /var/log/syslog
    journalctl -u myservice -n 200 | python examples/log_summarizer.py --bundle ... -

Each block becomes one chat request. Blocks with errors are marked hard (difficulty 1),
so the controller keeps them on a denser variant when the battery and the temperature
allow; routine blocks may go to a sparser, cheaper one. Every output line says which
variant wrote the summary, why the controller chose it, and how fast it decoded:

    {"block": 0, "lines": 20, "summary": "...", "variant": "dense-int8", "reason": "rule: battery<50%",
     "decode_tokens_per_s": 96.1, "cold_start": false}
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

from edge_runtime import EdgeError, Runtime  # noqa: E402

SEVERE = re.compile(r"\b(error|err|fail(ed|ure)?|panic|critical|fatal|oom|segfault)\b", re.IGNORECASE)
SYSTEM = "You summarize system logs for an operator. Answer with one short sentence."


def blocks(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    """Non-empty lines in blocks of `size`."""
    block: list[str] = []
    for line in lines:
        line = line.rstrip()
        if line:
            block.append(line)
        if len(block) == size:
            yield block
            block = []
    if block:
        yield block


def summarize(rt: Runtime, block: list[str], max_tokens: int, deadline_s: float) -> dict:
    """One block through the runtime; the summary with the variant that wrote it and why."""
    hard = 1.0 if any(SEVERE.search(line) for line in block) else 0.0
    messages = [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": "Summarize these log lines:\n" + "\n".join(block)}]
    r = rt.chat(messages, max_tokens=max_tokens, stop=["\n\n"], difficulty=hard, deadline_s=deadline_s)
    return {"lines": len(block), "summary": r.text.strip(), "variant": r.variant, "reason": r.reason,
            "difficulty": hard, "decode_tokens_per_s": round(r.timings.decode_tokens_per_s, 1),
            "cold_start": r.cold_start}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("log", help="log file, or - for standard input")
    ap.add_argument("--bundle", type=Path, default=ROOT / "bundles" / "smollm2-135m")
    ap.add_argument("--lines", type=int, default=20, help="log lines per summary (default: %(default)s)")
    ap.add_argument("--max-tokens", type=int, default=48, help="summary length in tokens (default: %(default)s)")
    ap.add_argument("--deadline-s", type=float, default=30.0, help="per summary (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=None, help="onnxruntime threads (default: all cores)")
    ap.add_argument("--memory-budget-mb", type=float, default=None, help="loaded variants at most (default: no limit)")
    args = ap.parse_args(argv)
    try:
        with Runtime.open(args.bundle, threads=args.threads, memory_budget_mb=args.memory_budget_mb) as rt:
            source = sys.stdin if args.log == "-" else open(args.log, encoding="utf-8", errors="replace")
            with source:
                for i, block in enumerate(blocks(source, args.lines)):
                    print(json.dumps({"block": i, **summarize(rt, block, args.max_tokens, args.deadline_s)}),
                          flush=True)
    except (EdgeError, OSError) as e:
        print(f"log_summarizer: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
