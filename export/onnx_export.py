"""Build an onnxruntime graph with a KV cache straight from a (pruned) Llama-family model.

The graph is written node by node from the weights rather than traced: a trace of
SmolLM2-135M takes minutes per variant (docs/FACTS.md), this takes seconds, and it emits
the fused onnxruntime operators that make CPU decoding fast:

    input_ids ─ Gather(embed) ─┐
    layer i:  SkipSimplifiedLayerNorm ─ MatMul(qkv) ─ GroupQueryAttention(rotary, KV cache)
              ─ MatMul(o) ─ SkipSimplifiedLayerNorm ─ MatMul(gate|up) ─ QuickGelu·up ─ MatMul(down)
    final norm ─ Slice(last logits_to_keep positions) ─ FusedMatMul(embed, transB) ─ logits
                                                                (tied lm_head stored once)

Inputs and outputs follow onnxruntime-genai's names (docs/DESIGN.md, section 3), so any
ORT program can drive a variant. One optional input, `logits_to_keep` (an overridable
initializer, default 0 = every position), lets a prefill compute the lm_head for its last
position only (`keep_logits`). Each layer's shapes are read from its weights, so
structured variants (fewer heads or neurons per layer) need nothing special. Node names
are stable and hierarchical (`/model/layers.3/attn/qkv_proj/MatMul`).

Unstructured variants store each pruned weight as its non-zero values plus a bitmask
(`SparseStorage.MASKED`); a small subgraph expands it, and onnxruntime's constant folding
runs that subgraph once when the session is created, so the file shrinks with sparsity
while inference runs on dense weights (ORT's CPU kernels gain nothing from zeros).
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from edge_runtime.engine.session import LOGITS_TO_KEEP
from edge_runtime.errors import ExportError
from export.load import SUPPORTED

log = logging.getLogger(__name__)

OPSET = 23
MS_DOMAIN = "com.microsoft"
EXTERNAL_DATA_SUFFIX = ".data"
FLOAT_TYPES = {"float32": (np.float32, TensorProto.FLOAT), "float16": (np.float16, TensorProto.FLOAT16)}


class SparseStorage(enum.Enum):
    DENSE = "dense"  # every weight as a plain float32 initializer
    MASKED = "masked"  # pruned weights as non-zero values + bitmask, expanded at session load


@dataclass(frozen=True)
class LayerShape:
    """One decoder layer as exported (per layer, since structured pruning varies them)."""

    heads: int
    kv_heads: int
    intermediate: int


@dataclass(frozen=True)
class GraphInfo:
    """What the builder learnt from the model; recorded in the manifest."""

    hidden: int
    head_dim: int
    vocab: int
    layers: tuple[LayerShape, ...]
    max_positions: int
    params: int  # parameters stored, embeddings included, tied weights once
    nonzero_params: int
    decoder_params: int  # the Linear weights of the decoder layers (what pruning touches)
    decoder_nonzero: int

    @property
    def sparsity(self) -> float:
        return 1.0 - self.decoder_nonzero / self.decoder_params


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float32).cpu().numpy()


class _Graph:
    """Nodes, initializers and value infos, with stable names.

    `float_type` is the graph's floating-point type: every float32 array stored through
    `init` is cast to it, so weights, norms, rotary tables and masked values agree.
    """

    def __init__(self, storage: SparseStorage, float_type: type = np.float32) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.storage = storage
        self.float_type = float_type
        self._consts: dict[tuple[str, bytes], str] = {}

    def init(self, name: str, array: np.ndarray) -> str:
        if array.dtype == np.float32 and self.float_type is not np.float32:
            array = array.astype(self.float_type)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def const(self, array: np.ndarray) -> str:
        """A shared small constant (shapes, axes, scalars)."""
        key = (str(array.dtype), array.tobytes() + str(array.shape).encode())
        if key not in self._consts:
            self._consts[key] = self.init(f"/const/{len(self._consts)}", array)
        return self._consts[key]

    def node(self, op: str, inputs: list[str], outputs: list[str], name: str, domain: str = "", **attrs: Any) -> list[str]:
        self.nodes.append(helper.make_node(op, inputs, outputs, name=name, domain=domain or None, **attrs))
        return outputs

    def weight(self, name: str, w: np.ndarray) -> str:
        """A MatMul weight [K, N]; stored masked if sparse storage is on and it has zeros."""
        if self.storage is SparseStorage.DENSE or np.count_nonzero(w) > 0.75 * w.size:
            # Masked storage costs 4 bytes per non-zero + 1 bit per weight: break-even at 97%
            # density, a clear win only below about 75%.
            return self.init(name, w)
        return self._masked(name, w)

    def _masked(self, name: str, w: np.ndarray) -> str:
        # values[0] is the zero that every pruned position gathers.
        flat = w.reshape(-1)
        mask = flat != 0
        values = np.concatenate([np.zeros(1, np.float32), flat[mask].astype(np.float32)])
        bits = np.packbits(mask, bitorder="little")
        v = self.init(f"{name}.values", values)
        b = self.init(f"{name}.bitmask", bits)
        p = f"{name}/expand"
        (u,) = self.node("Unsqueeze", [b, self.const(np.array([1], np.int64))], [f"{p}/bytes"], f"{p}/Unsqueeze")
        shifts = self.const(np.arange(8, dtype=np.uint8).reshape(1, 8))
        (s,) = self.node("BitShift", [u, shifts], [f"{p}/shifted"], f"{p}/BitShift", direction="RIGHT")
        (a,) = self.node("BitwiseAnd", [s, self.const(np.array(1, np.uint8))], [f"{p}/bits"], f"{p}/BitwiseAnd")
        (r,) = self.node("Reshape", [a, self.const(np.array([-1], np.int64))], [f"{p}/bits_flat"], f"{p}/Reshape")
        (sl,) = self.node(
            "Slice",
            [r, self.const(np.array([0], np.int64)), self.const(np.array([flat.size], np.int64))],
            [f"{p}/mask"],
            f"{p}/Slice",
        )
        (m,) = self.node("Cast", [sl], [f"{p}/mask_i32"], f"{p}/Cast", to=TensorProto.INT32)
        (c,) = self.node("CumSum", [m, self.const(np.array(0, np.int32))], [f"{p}/rank"], f"{p}/CumSum")
        (idx,) = self.node("Mul", [c, m], [f"{p}/index"], f"{p}/Mul")
        (g,) = self.node("Gather", [v, idx], [f"{p}/flat"], f"{p}/Gather", axis=0)
        return self.node("Reshape", [g, self.const(np.array(w.shape, np.int64))], [name], f"{p}/ReshapeOut")[0]


def _rope_tables(model: Any, max_positions: int, head_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin caches [max_positions, head_dim/2] from the model's own rotary module.

    Asking the module (instead of recomputing from rope_theta) carries any rope scaling
    the checkpoint uses (llama3, linear, yarn...).
    """
    rotary = model.model.rotary_emb
    pos = torch.arange(max_positions, dtype=torch.int64).unsqueeze(0)
    dummy = torch.zeros(1, 1, head_dim, dtype=torch.float32)
    with torch.no_grad():
        cos, sin = rotary(dummy, pos)  # [1, T, head_dim], halves duplicated
    half = head_dim // 2
    return _np(cos[0, :, :half]), _np(sin[0, :, :half])


def describe(model: Any) -> GraphInfo:
    """Shapes and parameter counts of `model` as the builder would export it."""
    cfg = model.config
    inner = model.model
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    layers, dec, dec_nz = [], 0, 0
    for layer in inner.layers:
        a, m = layer.self_attn, layer.mlp
        layers.append(
            LayerShape(
                heads=a.q_proj.out_features // head_dim,
                kv_heads=a.k_proj.out_features // head_dim,
                intermediate=m.gate_proj.out_features,
            )
        )
        for lin in (a.q_proj, a.k_proj, a.v_proj, a.o_proj, m.gate_proj, m.up_proj, m.down_proj):
            dec += lin.weight.numel()
            dec_nz += int(torch.count_nonzero(lin.weight))
    params = sum(p.numel() for p in model.parameters())  # tied weights are one Parameter
    nonzero = sum(int(torch.count_nonzero(p)) for p in model.parameters())
    max_pos = int(getattr(cfg, "max_position_embeddings", 2048))
    return GraphInfo(
        hidden=cfg.hidden_size,
        head_dim=head_dim,
        vocab=cfg.vocab_size,
        layers=tuple(layers),
        max_positions=max_pos,
        params=params,
        nonzero_params=nonzero,
        decoder_params=dec,
        decoder_nonzero=dec_nz,
    )


def build(
    model: Any,
    storage: SparseStorage = SparseStorage.DENSE,
    max_positions: int | None = None,
    untie_lm_head: bool = False,
    dtype: str = "float32",
) -> onnx.ModelProto:
    """The ONNX graph of `model` (a transformers Llama/Mistral/Qwen2 causal LM, maybe pruned).

    Args:
        model: the model, in eval mode, fp32.
        storage: how pruned weights are stored (see `SparseStorage`).
        max_positions: rotary table length (default: the model's context length).
        untie_lm_head: give the lm_head its own transposed weight so that weight-only
            quantization can reach it (a tied head is read through FusedMatMul).
        dtype: "float32", or "float16" for GPUs: weights, activations, the KV cache and the
            logits in half precision. onnxruntime's fused norms and GroupQueryAttention
            accumulate in float32 inside their kernels, so norms and softmax keep their range.
    """
    if dtype not in FLOAT_TYPES:
        raise ExportError(f"unknown graph dtype {dtype!r}; use one of {sorted(FLOAT_TYPES)}")
    cfg = model.config
    arch = (getattr(cfg, "architectures", None) or [type(model).__name__])[0]
    if arch not in SUPPORTED:
        raise ExportError(f"cannot export architecture {arch!r}; supported: {sorted(SUPPORTED)}")
    info = describe(model)
    max_positions = min(max_positions or info.max_positions, info.max_positions)
    hd = info.head_dim
    _check_fp16_range(model, dtype)
    g = _Graph(storage, FLOAT_TYPES[dtype][0])
    inner = model.model
    inputs, outputs = _io(info, FLOAT_TYPES[dtype][1])
    seqlens, total = _mask_lengths(g)
    cos, sin = _rope_tables(model, max_positions, hd)
    rope = (g.init("model.rotary.cos_cache", cos), g.init("model.rotary.sin_cache", sin))

    # ---- embeddings (the tied lm_head reads the same initializer)
    embed = g.init("model.embed_tokens.weight", _np(inner.embed_tokens.weight))
    (h,) = g.node("Gather", [embed, "input_ids"], ["/model/embed_tokens/output"], "/model/embed_tokens/Gather", axis=0)

    eps = float(cfg.rms_norm_eps)
    window = getattr(cfg, "sliding_window", None) if getattr(cfg, "use_sliding_window", True) else None
    residual: str | None = None
    pending = h  # output of the previous block, to be added to the residual stream
    for i, (layer, shape) in enumerate(zip(inner.layers, info.layers, strict=True)):
        p = f"/model/layers.{i}"
        # input norm (+ residual add from the previous layer)
        x, residual = _norm(g, f"{p}/input_layernorm", pending, residual, _np(layer.input_layernorm.weight), eps)
        o = _attention(g, i, layer.self_attn, shape, x, (seqlens, total) + rope, hd, window)
        x, residual = _norm(g, f"{p}/post_attention_layernorm", o, residual, _np(layer.post_attention_layernorm.weight), eps)
        pending = _mlp(g, i, layer.mlp, shape, x)

    x, _ = _norm(g, "/model/norm", pending, residual, _np(inner.norm.weight), eps)
    head = model.lm_head
    if head.weight.data_ptr() == inner.embed_tokens.weight.data_ptr() and not untie_lm_head:
        g.node("FusedMatMul", [x, embed], ["logits"], "/lm_head/FusedMatMul", domain=MS_DOMAIN, transB=1, alpha=1.0)
    else:
        g.node("MatMul", [x, g.init("lm_head.weight", _np(head.weight).T)], ["logits"], "/lm_head/MatMul")
    return keep_logits(_model_proto(g, inputs, outputs, arch, storage))


def keep_logits(proto: onnx.ModelProto) -> onnx.ModelProto:
    """`proto` with an optional input `logits_to_keep` [1] int64: the lm_head runs on the last n
    positions only (0, the default: all of them). A prefill needs the last row alone; the
    lm_head is a fifth of SmolLM2-135M's compute per token and its [S, vocab] output the
    largest transient of a prefill. Feeding nothing keeps every position, so programs that do
    not know the input (onnxruntime-genai, the evaluation's perplexity) see no change.
    A graph that has the input already is returned as it is.
    """
    graph = proto.graph
    if any(i.name == LOGITS_TO_KEEP for i in graph.input):
        return proto
    head = next(n for n in graph.node if "logits" in n.output)
    x = head.input[0]
    kept = "/lm_head/kept_positions"
    neg = helper.make_node("Neg", [LOGITS_TO_KEEP], ["/lm_head/keep_start"], "/lm_head/Neg")
    end = numpy_helper.from_array(np.array([np.iinfo(np.int64).max], np.int64), "/lm_head/keep_end")
    axis = numpy_helper.from_array(np.array([1], np.int64), "/lm_head/keep_axis")
    cut = helper.make_node("Slice", [x, "/lm_head/keep_start", end.name, axis.name], [kept], "/lm_head/Slice")
    head.input[0] = kept
    at = list(graph.node).index(head)
    graph.node.insert(at, cut)
    graph.node.insert(at, neg)
    graph.initializer.extend([numpy_helper.from_array(np.zeros(1, np.int64), LOGITS_TO_KEEP), end, axis])
    graph.input.append(helper.make_tensor_value_info(LOGITS_TO_KEEP, TensorProto.INT64, [1]))
    return proto


def _check_fp16_range(model: Any, dtype: str) -> None:
    """Refuse a float16 export whose weights do not fit float16 (they would become inf)."""
    if dtype != "float16":
        return
    limit = float(np.finfo(np.float16).max)
    for name, p in model.named_parameters():
        peak = float(p.detach().abs().max())
        if not peak < limit:
            raise ExportError(f"cannot export in float16: weight {name!r} reaches {peak:.3g}, beyond float16's "
                              f"{limit:.0f}; export this model with dtype float32")


def _io(info: GraphInfo, elem: int = TensorProto.FLOAT) -> tuple[list[onnx.ValueInfoProto], list[onnx.ValueInfoProto]]:
    """The graph inputs and outputs, with onnxruntime-genai's names; `elem`: the float type."""
    B, S, T, P = "batch_size", "sequence_length", "total_sequence_length", "past_sequence_length"
    hd = info.head_dim
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, [B, S]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [B, T]),
    ]
    outputs = [helper.make_tensor_value_info("logits", elem, [B, S, info.vocab])]
    for i, shape in enumerate(info.layers):
        for kind in ("key", "value"):
            inputs.append(
                helper.make_tensor_value_info(f"past_key_values.{i}.{kind}", elem, [B, shape.kv_heads, P, hd])
            )
            outputs.append(
                helper.make_tensor_value_info(f"present.{i}.{kind}", elem, [B, shape.kv_heads, T, hd])
            )
    return inputs, outputs


def _mask_lengths(g: _Graph) -> tuple[str, str]:
    """Attention bookkeeping shared by every layer: seqlens_k [B] = tokens so far - 1, and the total length."""
    (msum,) = g.node("ReduceSum", ["attention_mask", g.const(np.array([1], np.int64))], ["/model/attn_mask/sum"],
                     "/model/attn_mask/ReduceSum", keepdims=0)
    (mlen,) = g.node("Sub", [msum, g.const(np.array(1, np.int64))], ["/model/attn_mask/sub"], "/model/attn_mask/Sub")
    (seqlens,) = g.node("Cast", [mlen], ["/model/attn_mask/seqlens_k"], "/model/attn_mask/Cast", to=TensorProto.INT32)
    (mshape,) = g.node("Shape", ["attention_mask"], ["/model/attn_mask/shape"], "/model/attn_mask/Shape")
    (tlen,) = g.node("Gather", [mshape, g.const(np.array(1, np.int64))], ["/model/attn_mask/total_len"],
                     "/model/attn_mask/Gather", axis=0)
    (total,) = g.node("Cast", [tlen], ["/model/attn_mask/total_seq_len"], "/model/attn_mask/CastTotal", to=TensorProto.INT32)
    return seqlens, total


def _attention(g: _Graph, i: int, a: Any, shape: LayerShape, x: str, shared: tuple[str, str, str, str],
               hd: int, window: int | None) -> str:
    """Layer `i`'s attention: one packed q|k|v MatMul feeding GroupQueryAttention, then o_proj.

    `shared` is (seqlens_k, total_sequence_length, cos cache, sin cache).
    """
    p = f"/model/layers.{i}"
    w_qkv = np.concatenate([_np(a.q_proj.weight), _np(a.k_proj.weight), _np(a.v_proj.weight)], axis=0).T
    (qkv,) = g.node("MatMul", [x, g.weight(f"model.layers.{i}.attn.qkv_proj.weight", w_qkv)],
                    [f"{p}/attn/qkv_proj/output"], f"{p}/attn/qkv_proj/MatMul")
    if a.q_proj.bias is not None:
        b_qkv = np.concatenate([_np(a.q_proj.bias), _np(a.k_proj.bias), _np(a.v_proj.bias)])
        (qkv,) = g.node("Add", [qkv, g.init(f"model.layers.{i}.attn.qkv_proj.bias", b_qkv)],
                        [f"{p}/attn/qkv_proj/biased"], f"{p}/attn/qkv_proj/Add")
    seqlens, total, cos_n, sin_n = shared
    attn_out = f"{p}/attn/GroupQueryAttention/output"
    g.node(
        "GroupQueryAttention",
        [qkv, "", "", f"past_key_values.{i}.key", f"past_key_values.{i}.value", seqlens, total, cos_n, sin_n],
        [attn_out, f"present.{i}.key", f"present.{i}.value"],
        f"{p}/attn/GroupQueryAttention",
        domain=MS_DOMAIN,
        num_heads=shape.heads,
        kv_num_heads=shape.kv_heads,
        do_rotary=1,
        rotary_interleaved=0,
        scale=float(getattr(a, "scaling", hd**-0.5)),
        local_window_size=int(window) if window else -1,
    )
    return _linear(g, f"{p}/attn/o_proj", f"model.layers.{i}.attn.o_proj", attn_out, a.o_proj)


def _mlp(g: _Graph, i: int, m: Any, shape: LayerShape, x: str) -> str:
    """Layer `i`'s MLP: gate and up in one MatMul, SiLU(gate) * up, down."""
    p = f"/model/layers.{i}"
    inter = shape.intermediate
    w_gu = np.concatenate([_np(m.gate_proj.weight), _np(m.up_proj.weight)], axis=0).T  # [H, 2I]
    (gu,) = g.node("MatMul", [x, g.weight(f"model.layers.{i}.mlp.gate_up_proj.weight", w_gu)],
                   [f"{p}/mlp/gate_up_proj/output"], f"{p}/mlp/gate_up_proj/MatMul")
    gate, up = g.node("Split", [gu, g.const(np.array([inter, inter], np.int64))], [f"{p}/mlp/gate", f"{p}/mlp/up"],
                      f"{p}/mlp/Split", axis=-1)
    (act,) = g.node("QuickGelu", [gate], [f"{p}/mlp/act/output"], f"{p}/mlp/act/QuickGelu", domain=MS_DOMAIN, alpha=1.0)
    (prod,) = g.node("Mul", [act, up], [f"{p}/mlp/mul/output"], f"{p}/mlp/Mul")
    return _linear(g, f"{p}/mlp/down_proj", f"model.layers.{i}.mlp.down_proj", prod, m.down_proj)


def _model_proto(g: _Graph, inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto],
                 arch: str, storage: SparseStorage) -> onnx.ModelProto:
    graph = helper.make_graph(g.nodes, "edge-llm", inputs, outputs, initializer=g.inits)
    proto = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS_DOMAIN, 1)],
        producer_name="edge-export",
    )
    proto.ir_version = 10
    proto.metadata_props.extend(
        [
            onnx.StringStringEntryProto(key="architecture", value=arch),
            onnx.StringStringEntryProto(key="storage", value=storage.value),
        ]
    )
    return proto


def _norm(g: _Graph, p: str, x: str, residual: str | None, weight: np.ndarray, eps: float) -> tuple[str, str]:
    """RMSNorm of residual + x; returns (normalized, new residual)."""
    w = g.init(p.removeprefix("/").replace("/", ".") + ".weight", weight)
    if residual is None:
        # first layer: nothing to add yet
        (out,) = g.node("RMSNormalization", [x, w], [f"{p}/output"], f"{p}/RMSNormalization", axis=-1, epsilon=eps)
        return out, x
    out, summed = f"{p}/output", f"{p}/residual"
    g.node("SkipSimplifiedLayerNormalization", [x, residual, w], [out, "", "", summed], f"{p}/SkipSimplifiedLayerNorm",
           domain=MS_DOMAIN, epsilon=eps)
    return out, summed


def _linear(g: _Graph, p: str, wname: str, x: str, lin: torch.nn.Linear) -> str:
    (y,) = g.node("MatMul", [x, g.weight(f"{wname}.weight", _np(lin.weight).T)], [f"{p}/output"], f"{p}/MatMul")
    if lin.bias is not None:
        (y,) = g.node("Add", [y, g.init(f"{wname}.bias", _np(lin.bias))], [f"{p}/biased"], f"{p}/Add")
    return y


def save(proto: onnx.ModelProto, path: str | Path) -> int:
    """Write `proto` to `path` (+ `path.data` for the weights); returns total bytes on disk."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = path.with_name(path.name + EXTERNAL_DATA_SUFFIX)
    # onnx appends to an existing external-data file: start from nothing
    path.unlink(missing_ok=True)
    data.unlink(missing_ok=True)
    onnx.save_model(
        proto,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=path.name + EXTERNAL_DATA_SUFFIX,
        size_threshold=1024,
    )
    return path.stat().st_size + (data.stat().st_size if data.exists() else 0)
