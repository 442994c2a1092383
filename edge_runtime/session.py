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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edge_runtime.errors import VariantError

log = logging.getLogger(__name__)

PAST = "past_key_values.{}.{}"
PRESENT = "present.{}.{}"


def default_threads() -> int:
    """Intra-op threads: the cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def providers_available(wanted: list[str] | None = None) -> list[str]:
    """`wanted` filtered to what this onnxruntime build offers; CPU always last."""
    have = ort.get_available_providers()
    if wanted is None:
        wanted = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    chosen = [p for p in wanted if p in have and p != "CPUExecutionProvider"]
    return chosen + ["CPUExecutionProvider"]


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
        providers: execution providers in order of preference (default: CUDA when
            available, else CPU).
    """

    def __init__(self, path: str | os.PathLike[str], threads: int | None = None, providers: list[str] | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise VariantError(f"ONNX file {str(self.path)!r} is missing; re-export the bundle")
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads or default_threads()
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        try:
            model, files = _expand_masked(self.path, so)
            self.session = ort.InferenceSession(model, so, providers=providers_available(providers))
            del model, files  # onnxruntime copied what it needs while creating the session
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
        self.vocab = int(self.session.get_outputs()[0].shape[-1])
        self.providers = self.session.get_providers()

    @property
    def num_layers(self) -> int:
        return len(self.kv)

    def empty_cache(self, batch: int = 1) -> list[np.ndarray]:
        """Past tensors with past = 0, in graph order (key, value per layer)."""
        return [
            np.zeros((batch, spec.kv_heads, 0, spec.head_dim), np.float32) for spec in self.kv for _ in range(2)
        ]

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


def _expand_masked(path: Path, so: ort.SessionOptions) -> tuple[str | bytes, dict[str, np.ndarray]]:
    """The model to open, with masked weights expanded here instead of by ORT.

    Masked-storage graphs (export/onnx_export.py) carry a subgraph per pruned weight
    that expands non-zero values + bitmask into the dense weight; any ORT program can
    load them, and ORT's constant folding does the expansion at load. Folding keeps every
    intermediate alive until it finishes (2.7 GB peak for SmolLM2-135M at 50%), so this
    runtime expands each weight in numpy instead, drops the subgraphs, and hands the
    dense weights to ORT as an in-memory external-data file, which ORT copies while it
    creates the session. Returns the model (bytes) and the in-memory files, which must
    stay alive until the session is created; dense-storage graphs come back as their
    path and no files.
    """
    import onnx
    from onnx import numpy_helper

    head = onnx.load(str(path), load_external_data=False)
    meta = {p.key: p.value for p in head.metadata_props}
    if meta.get("storage") != "masked":
        return str(path), {}
    inits = {t.name: t for t in head.graph.initializer}
    nodes = {n.name: n for n in head.graph.node}

    def array(name: str) -> np.ndarray:
        t = inits[name]
        if t.data_location != onnx.TensorProto.EXTERNAL:
            return numpy_helper.to_array(t)
        ext = {e.key: e.value for e in t.external_data}
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.data_type)
        raw = np.fromfile(path.parent / ext["location"], dtype=np.uint8, count=int(ext["length"]),
                          offset=int(ext.get("offset", 0)))
        return raw.view(dtype).reshape(tuple(t.dims))

    weights = [n.output[0] for n in head.graph.node if n.name.endswith("/expand/ReshapeOut")]
    shapes = {w: tuple(int(x) for x in numpy_helper.to_array(inits[nodes[f"{w}/expand/ReshapeOut"].input[1]]))
              for w in weights}
    sizes = [int(np.prod(shapes[w])) for w in weights]
    blob = np.empty(sum(sizes), np.float32)  # the in-memory "file" of expanded weights
    placeholders, offset = [], 0
    for w, size in zip(weights, sizes):
        mask = np.unpackbits(array(f"{w}.bitmask"), bitorder="little", count=size).astype(bool)
        dense = blob[offset : offset + size]
        dense[:] = 0.0
        dense[mask] = array(f"{w}.values")[1:]  # values[0] is the padding zero
        t = onnx.TensorProto(name=w, data_type=onnx.TensorProto.FLOAT, dims=shapes[w])
        t.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", _EXPANDED), ("offset", str(4 * offset)), ("length", str(4 * size))):
            t.external_data.add(key=key, value=value)
        placeholders.append(t)
        offset += size
    dropped = {f"{w}.{part}" for w in weights for part in ("values", "bitmask")}
    kept_nodes = [n for n in head.graph.node if "/expand/" not in n.name]
    kept_inits = [t for t in head.graph.initializer if t.name not in dropped] + placeholders
    del head.graph.node[:]
    head.graph.node.extend(kept_nodes)
    del head.graph.initializer[:]
    head.graph.initializer.extend(kept_inits)
    # With in-memory files, ORT wants every external file in the table: map the real one too.
    files = {_EXPANDED: blob.view(np.uint8)}
    for t in kept_inits:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            loc = next(e.value for e in t.external_data if e.key == "location")
            if loc not in files:
                files[loc] = np.memmap(path.parent / loc, dtype=np.uint8, mode="r")
    so.add_external_initializers_from_files_in_memory(
        list(files), list(files.values()), [b.nbytes for b in files.values()]
    )
    return head.SerializeToString(), files


_EXPANDED = "expanded-weights.bin"  # name of the in-memory external-data file


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
