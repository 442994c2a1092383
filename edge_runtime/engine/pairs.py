"""Measure speculative pairs on this machine: what one verification costs, what drafting costs,
how often drafts are kept, and the pair's decode speed against its verifier alone.

    python -m edge_runtime.engine.probe --pairs BUNDLE      # re-measure every pair, rewrite the manifest

The exporter calls `measure_pairs` after writing the variants (a recipe's `[[pair]]` tables),
and `benchmarks/speculative.py` builds its tables from the same functions. Plain and
speculative runs are interleaved prompt by prompt, so machine noise hits both alike.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from edge_runtime.bundle import Cost, Manifest, Pair, read_manifest, write_manifest
from edge_runtime.engine.generate import Generation
from edge_runtime.engine.pool import VariantPool
from edge_runtime.engine.sampling import SamplingParams
from edge_runtime.engine.session import Decoder
from edge_runtime.engine.speculative import Speculator
from edge_runtime.engine.tokenizer import Tokenizer

log = logging.getLogger(__name__)

# Input-grounded prompts (the output quotes the input, as examples/log_summarizer.py asks):
# built in, so that a device without the evaluation harness can measure its pairs.
GROUNDED = (
    "Summarize these log lines in one sentence.\n"
    "kernel: EXT4-fs error (device sda1): ext4_find_entry: reading directory lblock 0\n"
    "kernel: EXT4-fs error (device sda1): ext4_find_entry: reading directory lblock 0\n"
    "systemd[1]: backup.service: Main process exited, code=exited, status=1/FAILURE\n",
    "Extract the host names from this text, one per line: the database db-primary-01 replicates to "
    "db-replica-02 and db-replica-03; the cache cache-eu-1 serves web-eu-1 and web-eu-2.",
    "Repeat the key facts of this message: The meeting with Dr. Alvarez moved from Tuesday 10:00 to "
    "Thursday 14:30 in room B-204; bring the Q3 budget report and the signed NDA.",
)


# Open-ended prompts (the output quotes nothing): prompt lookup finds little to copy here, so a
# pair's cost is measured on both kinds and the catalog prices the mix, not the best case.
OPEN = (
    "Give three short tips for keeping a bicycle chain in good condition.",
    "Explain in a few sentences why bread goes stale.",
    "Write a four-line poem about a lighthouse keeper.",
)
PROMPT_SETS = {"grounded": GROUNDED, "open": OPEN}


@dataclass(frozen=True)
class PairRun:
    """One pair over a prompt set, beside its verifier alone."""

    plain_ms_per_token: float  # the verifier alone, decode
    pair_ms_per_token: float  # the pair, decode
    drafted: int
    accepted: int
    identical: bool  # greedy: the pair's tokens equal the verifier's on every prompt

    @property
    def acceptance(self) -> float | None:
        return self.accepted / self.drafted if self.drafted else None

    @property
    def speedup(self) -> float:
        return self.plain_ms_per_token / self.pair_ms_per_token if self.pair_ms_per_token else 0.0


def verify_costs(decoder: Decoder, prompt_ids: Sequence[int], max_n: int = 8, repeats: int = 5) -> list[float]:
    """Seconds of one verifier pass over n = 1..max_n tokens after `prompt_ids` (best of `repeats`).

    n = 1 is a plain decode step. Each pass is rolled back, so every n sees the same cache.
    """
    decoder.reserve(len(prompt_ids) + max_n + 1)
    decoder.reset()
    decoder.prefill(list(prompt_ids))
    base = decoder.length
    best = [float("inf")] * max_n
    for _ in range(repeats):
        for n in range(1, max_n + 1):
            t = time.perf_counter()
            if n == 1:
                decoder.step(1)
            else:
                decoder.extend([1] * n)
            best[n - 1] = min(best[n - 1], time.perf_counter() - t)
            decoder.rollback(base)
    return best


def _generate(pool: VariantPool, tok: Tokenizer, ids: list[int], params: SamplingParams, verifier: int,
              speculator: Speculator | None) -> Generation:
    loaded = pool.get(verifier, len(ids) + params.max_tokens)[0]
    gen = Generation(loaded.decoder, tok, ids, params, speculator=speculator)
    gen.run()
    return gen


def run_pair(pool: VariantPool, tok: Tokenizer, verifier: str, speculator: Callable[[int], Speculator],
             prompts: Sequence[list[int]], max_tokens: int = 48, repeats: int = 1) -> PairRun:
    """Greedy decode of every prompt by `verifier` alone and with `speculator(capacity)`, interleaved."""
    params = SamplingParams(max_tokens=max_tokens, ignore_eos=True)
    index = pool.manifest.index(verifier)
    plain_s = pair_s = 0.0
    plain_n = pair_n = drafted = accepted = 0
    identical = True
    for _ in range(repeats):
        for ids in prompts:
            a = _generate(pool, tok, ids, params, index, None)
            b = _generate(pool, tok, ids, params, index, speculator(len(ids) + max_tokens))
            identical &= a.token_ids == b.token_ids
            plain_s, plain_n = plain_s + a.timings.decode_s, plain_n + a.timings.decode_steps
            pair_s, pair_n = pair_s + b.timings.decode_s, pair_n + b.timings.decode_steps
            drafted, accepted = drafted + b.spec.drafted, accepted + b.spec.accepted
    return PairRun(1e3 * plain_s / max(plain_n, 1), 1e3 * pair_s / max(pair_n, 1), drafted, accepted, identical)


def measure_pair(pool: VariantPool, tok: Tokenizer, pair: Pair, prompt_sets: Mapping[str, Sequence[list[int]]],
                 max_tokens: int = 48) -> Pair:
    """`pair` with its measured cost, acceptance and cost ratios (for its k policy) filled in.

    The cost is the mean over the prompt sets (each set's own speedup is kept in `cost.extra`):
    measured on input-grounded prompts alone, prompt lookup was priced at 2.07x its verifier
    for every request, where open-ended ones gave 0.99x (and the suite's prompts 1.06x).
    """
    first = next(iter(prompt_sets.values()))[0]
    verifier = pool.get(pool.manifest.index(pair.verifier), 256)[0]
    costs = verify_costs(verifier.decoder, first)
    slope = max(0.0, (costs[-1] / costs[0] - 1.0) / (len(costs) - 1))
    extra = dict(pair.extra, verify_slope=round(slope, 4))
    if pair.drafter != "prompt-lookup":
        drafter = pool.get(pool.manifest.index(pair.drafter), 256, drafting=True)[0]
        extra["draft_ratio"] = round(verify_costs(drafter.decoder, first, max_n=1)[0] / costs[0], 4)
    measured = replace(pair, extra=extra)
    pool.replace_pair(measured)  # measure with the policy these ratios give, from a fresh start
    runs = {kind: run_pair(pool, tok, pair.verifier, lambda capacity: pool.get_pair(pair.name, capacity)[1],
                           prompts, max_tokens) for kind, prompts in prompt_sets.items()}
    if not all(r.identical for r in runs.values()):
        log.error("pair %r: greedy output differs from its verifier's; this is a bug, please report it", pair.name)
    plain = sum(r.plain_ms_per_token for r in runs.values()) / len(runs)
    mixed = sum(r.pair_ms_per_token for r in runs.values()) / len(runs)
    drafted = sum(r.drafted for r in runs.values())
    return replace(measured, acceptance=sum(r.accepted for r in runs.values()) / drafted if drafted else None,
                   cost=Cost(decode_ms_per_token=round(mixed, 4),
                             extra={"verifier_ms_per_token": round(plain, 4), "speedup": round(plain / mixed, 3),
                                    "prompts": "+".join(runs),
                                    **{f"speedup_{kind}": round(r.speedup, 3) for kind, r in runs.items()}}))


def measure_pairs(bundle_dir: str | os.PathLike[str], manifest: Manifest | None = None, threads: int | None = None,
                  max_tokens: int = 48) -> Manifest:
    """Measure every pair of the bundle on the built-in prompt sets (`PROMPT_SETS`) and write them into its manifest."""
    root = Path(bundle_dir)
    manifest = manifest or read_manifest(root)
    if not manifest.pairs:
        return manifest
    tok = Tokenizer.from_bundle(root, manifest)
    pool = VariantPool(root, manifest, threads=threads, allow_ungated=True)
    room = manifest.model.context_length - max_tokens - 1  # a small model's context may not hold them whole
    sets = {kind: [tok.encode_chat([{"role": "user", "content": p}])[-room:] for p in texts]
            for kind, texts in PROMPT_SETS.items()}
    pairs = []
    for pair in manifest.pairs:
        pairs.append(measure_pair(pool, tok, pair, sets, max_tokens))
        log.info("pair %r: %.2f ms/token (verifier %.2f), acceptance %s", pair.name,
                 pairs[-1].cost.decode_ms_per_token, pairs[-1].cost.extra["verifier_ms_per_token"],
                 pairs[-1].acceptance)
    pool.close()
    manifest = replace(manifest, pairs=tuple(pairs))
    write_manifest(root, manifest)
    return manifest
