"""int4-grid: GGUF blocks read back exactly (against gguf-py's own quantizer), the exact graph,
blocksums shared per input, the Q8_0 lm_head, and refusals of weights off their grid."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import numpy as np
import onnxruntime as ort
import pytest
import torch
from gguf import GGMLQuantizationType, quants
from onnx import TensorProto, helper, numpy_helper

from edge_runtime.bundle import read_manifest
from edge_runtime.engine.session import VariantSession
from edge_runtime.errors import RecipeError
from export import quantize as Q
from export.grid import BLOCK, q4_1, q8_0, read_grid
from export.load import LoadedModel, tiny_model
from export.onnx_export import build, save

IDS = np.array([[3, 17, 33, 99, 120, 7, 8, 250]], np.int64)
RNG = np.random.default_rng(0)


def gguf_round_trip(w: np.ndarray, kind: GGMLQuantizationType) -> np.ndarray:
    """[rows, K] quantized by gguf-py (llama.cpp's reference quantizers) and dequantized, as transformers loads it."""
    return quants.dequantize(quants.quantize(w.astype(np.float32), kind), kind).reshape(w.shape)


def _snapped_model(lm: LoadedModel | None = None):
    """A tiny model whose linears are Q4_1 and whose tied embedding is Q8_0, like the default GGUF."""
    model = (lm or tiny_model()).model
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                kind = GGMLQuantizationType.Q8_0 if "embed" in name else GGMLQuantizationType.Q4_1
                p.copy_(torch.from_numpy(gguf_round_trip(p.numpy(), kind)))
    return model


def _exact(monkeypatch) -> None:
    """float32 activations in the kernel: the graph computes the float32 one's sums, in another order."""
    monkeypatch.setitem(Q.SCHEMES, "int4-grid", replace(Q.SCHEMES["int4-grid"], accuracy_level=0))


def _logits(path) -> np.ndarray:
    s = VariantSession(path, threads=1)
    logits, past = s.forward(IDS[:, :-1])
    step, _ = s.forward(IDS[:, -1:], past)
    return np.concatenate([logits, step], axis=1)


def test_q4_1_blocks_match_gguf():
    w = RNG.standard_normal((6, 4 * BLOCK)).astype(np.float32)
    w[0, :BLOCK] = 0.25  # an all-equal block: d = 0
    w[1, BLOCK:2 * BLOCK] = 0.0
    back = gguf_round_trip(w, GGMLQuantizationType.Q4_1)
    grid = q4_1(back.T)  # as an ONNX MatMul weight [K, N]
    raw = quants.quantize(w, GGMLQuantizationType.Q4_1).reshape(6, 4, 20)  # per block: d, m (float16), 16 bytes of q
    np.testing.assert_array_equal(grid.d, raw[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32))
    np.testing.assert_array_equal(grid.m, raw[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32))
    assert grid.on_grid.all() and grid.q.max() == 15 and grid.d[0, 0] == 0
    np.testing.assert_array_equal(grid.d[..., None] * grid.q + grid.m[..., None], back.reshape(6, 4, BLOCK))


def test_q8_0_blocks_match_gguf():
    w = RNG.standard_normal((5, 3 * BLOCK)).astype(np.float32)
    w[2, :BLOCK] = 0.0
    back = gguf_round_trip(w, GGMLQuantizationType.Q8_0)
    grid = q8_0(back.T)
    raw = quants.quantize(w, GGMLQuantizationType.Q8_0).reshape(5, 3, 34)  # per block: d (float16), 32 int8 q
    np.testing.assert_array_equal(grid.d, raw[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32))
    np.testing.assert_array_equal(grid.q.astype(np.int16) - 128, raw[..., 2:].copy().view(np.int8))
    assert grid.on_grid.all() and grid.m is None


def test_rounded_weights_are_off_the_grid():
    w = gguf_round_trip(RNG.standard_normal((4, 2 * BLOCK)), GGMLQuantizationType.Q4_1)
    w[3, 40] += 1e-3  # one block of eight
    with pytest.raises(RecipeError, match=r"^int4-grid: weight 'w' is not on a Q4_1 grid \(1 of 8 blocks of 32 are "
                       r"not reproduced\); quantize this variant with 'int4' or 'int8' instead$"):
        read_grid("w", w.T, 4)
    with pytest.raises(RecipeError, match=r"weight 'w' is not on a Q8_0 grid \(8 of 8 blocks"):
        read_grid("w", w.T, 8)  # Q4_1 blocks are not symmetric
    with pytest.raises(RecipeError, match=r"weight 'w' has 48 input rows, not a multiple of 32"):
        read_grid("w", np.zeros((48, 4), np.float32), 4)


def test_graph_is_exact_on_the_grid(tmp_path, monkeypatch):
    _exact(monkeypatch)
    model = _snapped_model()
    save(build(model, untie_lm_head=True), tmp_path / "fp32" / "model.onnx")
    proto = Q.quantize(build(model, untie_lm_head=True), "int4-grid")
    ops = Counter(n.op_type for n in proto.graph.node)
    assert ops["MatMulNBits"] == 2 * 4 + 1 and ops["MatMul"] == 2 * 4  # the minimum terms; the lm_head has none
    head = next(n for n in proto.graph.node if n.name == "/lm_head/MatMulNBits")
    assert {a.name: a.i for a in head.attribute}["bits"] == 8 and len(head.input) == 3  # Q8_0: default zero point
    assert not {"model.layers.0.mlp.down_proj.weight", "lm_head.weight"} & {t.name for t in proto.graph.initializer}
    save(proto, tmp_path / "grid" / "model.onnx")
    ref, out = _logits(tmp_path / "fp32" / "model.onnx"), _logits(tmp_path / "grid" / "model.onnx")
    assert np.abs(out - ref).max() < 1e-5 * np.abs(ref).max()


def test_int8_activations_stay_close(tmp_path):
    """The shipped form: the weights are exact, the kernel rounds activations to int8 per block."""
    model = _snapped_model()
    save(build(model, untie_lm_head=True), tmp_path / "fp32" / "model.onnx")
    save(Q.quantize(build(model, untie_lm_head=True), "int4-grid"), tmp_path / "grid" / "model.onnx")
    ref, out = _logits(tmp_path / "fp32" / "model.onnx"), _logits(tmp_path / "grid" / "model.onnx")
    assert np.abs(out - ref).max() < 0.02 * np.abs(ref).max()
    assert (out.argmax(-1) == ref.argmax(-1)).mean() >= 0.85


def _shared_input_graph(w1: np.ndarray, w2: np.ndarray, head: np.ndarray):
    """x [1, S, K] read by two MatMuls and the lm_head: y = x @ w1 + x @ w2, logits = x @ head."""
    k = w1.shape[0]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["y1"], "/a/MatMul"),
             helper.make_node("MatMul", ["x", "w2"], ["y2"], "/b/MatMul"),
             helper.make_node("Add", ["y1", "y2"], ["y"], "/add"),
             helper.make_node("MatMul", ["x", "head"], ["logits"], Q.LM_HEAD_NODE)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "S", k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "S", w1.shape[1]]),
                               helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, "S", head.shape[1]])],
                              [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (w2, "w2"), (head, "head"))])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)])


def test_blocksums_are_shared_per_input(monkeypatch):
    _exact(monkeypatch)
    q4 = [gguf_round_trip(RNG.standard_normal((24, 2 * BLOCK)), GGMLQuantizationType.Q4_1).T for _ in range(2)]
    head = gguf_round_trip(RNG.standard_normal((50, 2 * BLOCK)), GGMLQuantizationType.Q8_0).T
    proto = Q.quantize(_shared_input_graph(*q4, head), "int4-grid")
    ops = Counter(n.op_type for n in proto.graph.node)
    assert (ops["ReduceSum"], ops["Reshape"], ops["MatMulNBits"], ops["MatMul"]) == (1, 1, 3, 2)
    x = RNG.standard_normal((1, 5, 2 * BLOCK)).astype(np.float32)
    y, logits = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    for out, ref in ((y, x @ q4[0] + x @ q4[1]), (logits, x @ head)):
        assert np.abs(out - ref).max() < 1e-5 * np.abs(ref).max()


def test_off_grid_weights_are_refused_not_rounded():
    proto = build(tiny_model().model, untie_lm_head=True)  # random float32 weights
    with pytest.raises(RecipeError, match=r"^int4-grid: weight 'model\.layers\.0\.attn\.qkv_proj\.weight' is not on a "
                       r"Q4_1 grid \(\d+ of \d+ blocks of 32 are not reproduced\); quantize this variant with 'int4' or "
                       r"'int8' instead$"):
        Q.quantize(proto, "int4-grid")
    assert "MatMulNBits" not in {n.op_type for n in proto.graph.node}  # refused before the graph changed


def test_off_grid_lm_head_is_refused():
    model = _snapped_model()
    with torch.no_grad():
        model.model.embed_tokens.weight[5, 7] += 1e-3
    with pytest.raises(RecipeError, match=r"weight 'lm_head\.weight' is not on a Q8_0 grid \(1 of \d+ blocks"):
        Q.quantize(build(model, untie_lm_head=True), "int4-grid")


def test_float16_graph_is_refused():
    with pytest.raises(RecipeError, match=r"weight 'model\.layers\.0\.attn\.qkv_proj\.weight' is FLOAT16 with 2 dims, "
                       r"but GGUF grids are read from 2-D float32 weights; export this variant with dtype float32$"):
        Q.quantize(build(_snapped_model(), untie_lm_head=True, dtype="float16"), "int4-grid")


def test_bundle_with_a_grid_copy(tmp_path):
    """A recipe's `int4-grid` child of the dense variant: exported, checked and recorded like the others."""
    from export.pipeline import ExportOptions, export_bundle
    from export.recipe import Recipe

    lm = tiny_model()
    _snapped_model(lm)
    recipe = Recipe.from_dict({"name": "grid", "evaluation": {"ppl_windows": 1, "ppl_seq_len": 32},
                               "variant": [{"name": "dense", "method": "dense"},
                                           {"name": "dense-q4", "parent": "dense", "quantization": "int4-grid"}]})
    export_bundle(lm, tmp_path / "b", recipe, options=ExportOptions(threads=1, measure_cost=False, progress=False))
    dense, q4 = read_manifest(tmp_path / "b").variants
    assert (q4.quantization, q4.parent, q4.params) == ("int4-grid", "dense", dense.params)
    assert q4.file_bytes < dense.file_bytes and max(q4.parity.prefill_max_abs, q4.parity.decode_max_abs) < 0.05
    assert abs(q4.quality.perplexity / dense.quality.perplexity - 1) < 0.01 and q4.extra["genai"]["opens"]
