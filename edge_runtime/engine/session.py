"""One variant's onnxruntime session and its KV cache.

The graph contract (docs/DESIGN.md, section 3): inputs `input_ids` [B, S] int64,
`attention_mask` [B, past+S] int64 and `past_key_values.{i}.key/.value`
[B, kv_heads_i, past, head_dim]; outputs `logits` [B, S, vocab] and `present.{i}.*`.
Head counts can differ per layer (structured variants), so they are read from the
session's input metadata, never assumed.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edge_runtime.engine import expand
from edge_runtime.engine.providers import resolve as resolve_providers
from edge_runtime.engine.residency import PREFILL_CHUNK, release_weight_pages, trim_heap
from edge_runtime.errors import VariantError

log = logging.getLogger(__name__)

PAST = "past_key_values.{}.{}"
PRESENT = "present.{}.{}"
LOGITS_TO_KEEP = "logits_to_keep"  # optional input: the lm_head runs on the last n positions (0: all)


def default_threads() -> int:
    """Intra-op threads: the cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@dataclass(frozen=True)
class KVSpec:
    """Shape of one layer's cache: [batch, kv_heads, past, head_dim]."""

    kv_heads: int
    head_dim: int


class VariantSession:
    """An onnxruntime session over one variant's `model.onnx`.

    Args:
        path: the ONNX file.
        threads: intra-op threads (default: all cores this process may use).
        providers: execution provider entries in order of preference, with options
            (`edge_runtime.engine.providers`; default: CUDA when available, else CPU).
        storage: the manifest's `storage` of the variant ("dense" skips the masked-weight check; "masked"
            expands the weights in a child process; None checks the graph here).
        spin: let idle intra-op threads spin (None: onnxruntime's default, which spins).
    """

    def __init__(self, path: str | os.PathLike[str], threads: int | None = None, providers: list[str] | None = None,
                 storage: str | None = None, spin: bool | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise VariantError(f"ONNX file {str(self.path)!r} is missing; re-export the bundle")
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads or default_threads()
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        # A memory pattern plans one block for a run's intermediates and keeps it for the next
        # run of the same shapes, which a decoder never repeats (the mask grows a step at a
        # time, prompts differ in length); off, dense-int8 served benchmarks/peers.py's workload
        # in 5 MB less at the same speed (docs/FACTS.md, eighth round).
        so.enable_mem_pattern = False
        if spin is not None:
            # Spinning worker threads answer the next forward pass a little sooner on an idle
            # machine, but burn the time slices other processes need on a shared one.
            so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        wanted, options = resolve_providers(providers)  # a bad name is the caller's error, not the file's
        try:
            # The manifest's `storage` says whether the graph is masked; only then is the
            # `onnx` package needed (and it stays optional on the device: see _expand_masked).
            model, tmp = (str(self.path), None) if storage == "dense" else \
                _expand_masked(self.path, child=storage == "masked")
            if tmp is not None:
                trim_heap()  # an expansion's temporaries, before the session's own peak
            try:
                self.session = ort.InferenceSession(model, so, providers=wanted, provider_options=options)
                release_weight_pages(model)  # what the prepacking read stays mapped, not resident
            finally:
                if tmp is not None:  # the session holds what it needs (prepacked or mapped: unlinked files stay mapped)
                    tmp.cleanup()
        except VariantError:
            raise
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph/... types
            raise VariantError(
                f"onnxruntime cannot load {str(self.path)!r} ({type(e).__name__}: {str(e)[:300]}); "
                "the file is corrupt or was written by another tool: re-export it"
            ) from e
        names = {i.name: i for i in self.session.get_inputs()}
        for required in ("input_ids", "attention_mask"):
            if required not in names:
                raise VariantError(f"{str(self.path)!r} has no {required!r} input: not an edge-export graph")
        self.kv: list[KVSpec] = []
        while PAST.format(len(self.kv), "key") in names:
            shape = names[PAST.format(len(self.kv), "key")].shape  # [B, kv_heads, past, head_dim]
            if not (isinstance(shape[1], int) and isinstance(shape[3], int)):
                raise VariantError(f"{str(self.path)!r}: KV cache input has no static head shape {shape}")
            self.kv.append(KVSpec(kv_heads=shape[1], head_dim=shape[3]))
        self.output_names = [o.name for o in self.session.get_outputs()]
        # graphs exported since logits_to_keep (export.onnx_export.keep_logits) can skip the
        # lm_head on prompt positions whose logits nobody reads
        self.keeps_logits = any(i.name == LOGITS_TO_KEEP for i in self.session.get_overridable_initializers())
        past0 = names.get(PAST.format(0, "key"))
        self.kv_dtype = _NP_TYPES.get(past0.type, np.float32) if past0 is not None else np.float32  # float16 graphs
        self.vocab = int(self.session.get_outputs()[0].shape[-1])
        self.providers = self.session.get_providers()  # what onnxruntime actually took, preferred first
        if self.providers[0] != wanted[0]:  # e.g. CUDA listed but its libraries failed to load
            log.warning("%s: asked for %s, onnxruntime runs it on %s", self.path, wanted[0], self.providers[0])

    @property
    def num_layers(self) -> int:
        return len(self.kv)

    def empty_cache(self, batch: int = 1) -> list[np.ndarray]:
        """Past tensors with past = 0, in graph order (key, value per layer)."""
        return [np.zeros((batch, spec.kv_heads, 0, spec.head_dim), self.kv_dtype) for spec in self.kv for _ in range(2)]

    def forward(
        self, input_ids: np.ndarray, past: list[np.ndarray] | None = None, attention_mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """One step: logits [B, S, vocab] and the present cache (past + these tokens).

        Args:
            input_ids: [B, S] int64.
            past: the previous call's present tensors (None: an empty cache).
            attention_mask: [B, past+S] (default: all ones).
        """
        input_ids = np.ascontiguousarray(input_ids, dtype=np.int64)
        batch, seq = input_ids.shape
        past = past if past is not None else self.empty_cache(batch)
        total = past[0].shape[2] + seq if past else seq
        if attention_mask is None:
            attention_mask = np.ones((batch, total), np.int64)
        feed: dict[str, np.ndarray] = {"input_ids": input_ids, "attention_mask": attention_mask}
        for i in range(self.num_layers):
            feed[PAST.format(i, "key")] = past[2 * i]
            feed[PAST.format(i, "value")] = past[2 * i + 1]
        out = self.session.run(self.output_names, feed)
        return out[0], out[1:]

    def logits(self, input_ids: np.ndarray) -> np.ndarray:
        """Logits [B, S, vocab] of whole sequences, no cache kept."""
        return self.forward(input_ids)[0]

    def decoder(self, capacity: int, prefill_chunk: int = PREFILL_CHUNK) -> Decoder:
        """A `Decoder` over this session with room for `capacity` tokens."""
        return Decoder(self, capacity, prefill_chunk)


_NP_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(bfloat16)": np.float32}


class Decoder:
    """Prefill and token-by-token decode for one sequence, with no per-token copies of the cache.

    Each layer's cache is one preallocated buffer [1, kv_heads, capacity, head_dim] bound as
    both `past_key_values.{i}.*` and `present.{i}.*`: GroupQueryAttention then writes the
    new positions in place, and the attention mask's length (the tokens so far) tells it
    how much of the buffer is valid. A decode step moves one token id in and one row of
    logits out; everything else stays where it is. Prompts are fed in chunks of
    `prefill_chunk` tokens, which bounds the transient logits [1, chunk, vocab] and the pass's
    intermediates (residency.PREFILL_CHUNK).

    One decoder serves one sequence at a time; `reset` starts the next one in the same
    buffers, so a long-running server allocates nothing per request.

    Args:
        session: the variant.
        capacity: most tokens (prompt + generated) a sequence may reach; `reserve` grows it.
        prefill_chunk: prompt tokens per forward pass during prefill.
    """

    def __init__(self, session: VariantSession, capacity: int, prefill_chunk: int = PREFILL_CHUNK) -> None:
        if capacity < 1 or prefill_chunk < 1:
            raise ValueError(f"capacity and prefill_chunk must be >= 1, got {capacity} and {prefill_chunk}")
        self.session = session
        self.prefill_chunk = prefill_chunk
        self.length = 0  # tokens in the cache
        sess = session.session
        self._device = "cuda" if session.providers[0] == "CUDAExecutionProvider" else "cpu"
        past_type = {i.name: i.type for i in sess.get_inputs()}.get(PAST.format(0, "key"), "tensor(float)")
        self._kv_dtype = _NP_TYPES.get(past_type, np.float32)
        self._logits_dtype = _NP_TYPES.get(sess.get_outputs()[0].type, np.float32)
        self._io = sess.io_binding()
        self._io.bind_output("logits", "cpu")  # bound first: output 0 of the binding from now on
        self._ids = np.zeros((1, 1), np.int64)  # the decode step's input, rewritten in place
        self._row = np.zeros((1, 1, session.vocab), self._logits_dtype)  # the decode step's logits
        self._mask = np.ones((1, 0), np.int64)
        self._cache: list[ort.OrtValue] = []
        # logits_to_keep (an overridable initializer, bound as an OrtValue: bind_cpu_input refuses it)
        self._keep_all = ort.OrtValue.ortvalue_from_numpy(np.zeros(1, np.int64))
        self._keep_last = ort.OrtValue.ortvalue_from_numpy(np.ones(1, np.int64))
        self.capacity = 0
        self.reserve(capacity)

    def reserve(self, capacity: int) -> None:
        """Make room for `capacity` tokens (reallocates and drops the cache if it grows)."""
        if capacity <= self.capacity:
            return
        self._cache = []  # free the old buffers before allocating the new ones
        for spec in self.session.kv:
            for _ in range(2):
                shape = (1, spec.kv_heads, capacity, spec.head_dim)
                if self._device == "cpu":
                    # numpy-backed: zeroed pages come from calloc lazily, and ORT reads them in place
                    value = ort.OrtValue.ortvalue_from_numpy(np.zeros(shape, self._kv_dtype))
                else:
                    value = ort.OrtValue.ortvalue_from_shape_and_type(shape, self._kv_dtype, self._device, 0)
                self._cache.append(value)
        for i in range(self.session.num_layers):
            for j, kind in enumerate(("key", "value")):
                self._io.bind_ortvalue_input(PAST.format(i, kind), self._cache[2 * i + j])
                self._io.bind_ortvalue_output(PRESENT.format(i, kind), self._cache[2 * i + j])
        self._mask = np.ones((1, capacity), np.int64)
        self.capacity = capacity
        self.length = 0

    @property
    def cache_bytes(self) -> int:
        """Bytes held by the KV buffers."""
        return sum(
            2 * spec.kv_heads * self.capacity * spec.head_dim * np.dtype(self._kv_dtype).itemsize
            for spec in self.session.kv
        )

    def reset(self) -> None:
        """Forget the sequence (the buffers are kept)."""
        self.length = 0

    def _bind_mask(self, total: int) -> None:
        self._io.bind_input("attention_mask", "cpu", 0, np.int64, [1, total], self._mask.ctypes.data)

    def prefill(self, ids: np.ndarray | list[int]) -> np.ndarray:
        """Append `ids` to the sequence; the logits [vocab] after its last token (a copy)."""
        return self._append(ids, every=False)[-1]

    def extend(self, ids: np.ndarray | list[int]) -> np.ndarray:
        """Append `ids` in one forward pass per chunk; the logits [S, vocab] after each of them (a copy).

        Speculative decoding scores k drafted tokens this way: one pass instead of k steps.
        """
        return self._append(ids, every=True)

    def rollback(self, length: int) -> None:
        """Keep only the first `length` tokens of the sequence, in place.

        Nothing is copied or cleared: the attention mask's length is what the graph reads
        as the valid part of the cache, so the next write lands on the first forgotten
        position and overwrites it.
        """
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot roll back to {length} tokens: the sequence has {self.length}")
        self.length = length

    def _append(self, ids: np.ndarray | list[int], every: bool) -> np.ndarray:
        ids = np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(1, -1))  # [1, S]
        n = ids.shape[1]
        if n == 0:
            raise ValueError("prefill needs at least one token")
        if self.length + n > self.capacity:
            raise ValueError(f"{self.length + n} tokens do not fit a decoder of capacity {self.capacity}")
        io, rows = self._io, []
        if self.session.keeps_logits:  # the lm_head over every position only where every row is wanted
            io.bind_ortvalue_input(LOGITS_TO_KEEP, self._keep_all if every else self._keep_last)
        for start in range(0, n, self.prefill_chunk):
            chunk = ids[:, start : start + self.prefill_chunk]  # [1, c]
            self.length += chunk.shape[1]
            io.bind_cpu_input("input_ids", chunk)
            self._bind_mask(self.length)
            io.bind_output("logits", "cpu")  # [1, c, vocab], allocated by ORT, dropped after the chunk
            self._run()
            if every or start + chunk.shape[1] >= n:
                logits = io.get_outputs()[0].numpy()[0]  # [c, vocab]
                rows.append(logits.copy() if every else logits[-1:].copy())
        self._bind_step()
        out = rows[0] if len(rows) == 1 else np.concatenate(rows)
        return out.astype(np.float32, copy=False)  # sampling in float32 whatever the graph's type

    def _bind_step(self) -> None:
        io = self._io
        io.bind_input("input_ids", "cpu", 0, np.int64, [1, 1], self._ids.ctypes.data)
        io.bind_output("logits", "cpu", 0, self._logits_dtype, [1, 1, self.session.vocab], self._row.ctypes.data)

    def step(self, token: int) -> np.ndarray:
        """Append one token; the logits [vocab] after it (a view, overwritten by the next step)."""
        if self.length + 1 > self.capacity:
            raise ValueError(f"the decoder is full ({self.capacity} tokens)")
        self._ids[0, 0] = token
        self.length += 1
        self._bind_mask(self.length)
        self._run()
        row = self._row[0, 0]
        return row if row.dtype == np.float32 else row.astype(np.float32)  # float16 graphs: sample in float32

    def _run(self) -> None:
        try:
            self.session.session.run_with_iobinding(self._io)
        except Exception as e:  # onnxruntime's Fail, RuntimeException, ...: the variant is broken here
            self.length = 0
            raise VariantError(
                f"onnxruntime failed running {str(self.session.path)!r} ({type(e).__name__}: {str(e)[:300]})"
            ) from e


def _expand_masked(path: Path, child: bool) -> tuple[str, tempfile.TemporaryDirectory[str] | None]:
    """The model to open: `path`, or a masked graph's dense copy in a temporary folder to
    remove once the session exists (edge_runtime/engine/expand.py). `child`: expand in a
    child process, so that its imports and temporaries stay out of this one (for a graph
    known to be masked; a check of an unknown graph is cheaper here).

    Raises:
        VariantError: the expansion failed (its message says why).
    """
    tmp = tempfile.TemporaryDirectory(prefix="edge-expanded-")

    def failed(why: object) -> VariantError:
        return VariantError(f"cannot expand the masked weights of {str(path)!r} ({why}); re-export the variant")

    try:
        if not child or not sys.executable:  # (an embedded interpreter may have no python to run)
            try:
                done = expand.expand(path, Path(tmp.name))
            except (OSError, ValueError) as e:
                raise failed(e) from e
        else:
            package_root = str(Path(__file__).resolve().parents[2])  # edge_runtime's folder, installed or not
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (package_root, os.environ.get("PYTHONPATH"))))}
            proc = subprocess.run([sys.executable, "-m", "edge_runtime.engine.expand", str(path), tmp.name],
                                  capture_output=True, text=True, env=env, check=False)
            if proc.returncode != 0:
                raise failed((proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1])
            done = proc.stdout.strip()
    except BaseException:
        tmp.cleanup()
        raise
    if done == expand.EXPANDED_DONE:
        return str(Path(tmp.name) / "model.onnx"), tmp
    tmp.cleanup()
    if done == expand.NO_ONNX:
        log.info("the onnx package is not installed: %s is opened as is (masked weights, if any, "
                 "are expanded by onnxruntime at a higher peak memory)", path)
    return str(path), None


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable log-softmax over the last axis, in float64 for sums over many tokens."""
    x = logits.astype(np.float64)
    x -= x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def sequence_nll(session: VariantSession, windows: np.ndarray, batch: int = 1) -> tuple[float, int]:
    """Summed next-token negative log-likelihood over `windows` [n, L] and the token count."""
    total, count = 0.0, 0
    for start in range(0, len(windows), batch):
        ids = windows[start : start + batch]
        lp = log_softmax(session.logits(ids)[:, :-1])  # [b, L-1, V]
        target = ids[:, 1:]
        total -= float(np.take_along_axis(lp, target[..., None], axis=-1).sum())
        count += target.size
    return total, count


def perplexity(session: VariantSession, windows: np.ndarray, batch: int = 1) -> float:
    """exp(mean next-token NLL) over non-overlapping windows [n, L]."""
    nll, n = sequence_nll(session, windows, batch)
    return float(np.exp(nll / n))
