"""The graph builder: parity with torch, masked storage, per-layer shapes, quantization."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from edge_runtime.engine.session import VariantSession
from edge_runtime.errors import VariantError
from export.load import TinyConfig, tiny_model
from export.onnx_export import LOGITS_TO_KEEP, SparseStorage, build, describe, keep_logits, save
from export.quantize import quantize


def _torch_logits(model, ids: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(ids)).logits.numpy()


def _parity(model, path) -> tuple[float, float]:
    s = VariantSession(path, threads=1)
    ids = np.array([[3, 17, 33, 99, 120, 7, 8, 250]], np.int64)
    logits, past = s.forward(ids[:, :-1])
    step, _ = s.forward(ids[:, -1:], past)
    ref = _torch_logits(model, ids)
    return float(np.abs(logits - ref[:, :-1]).max()), float(np.abs(step - ref[:, -1:]).max())


@pytest.mark.parametrize("arch", ["LlamaForCausalLM", "Qwen2ForCausalLM"])
def test_parity_prefill_and_decode(tmp_path, arch):
    model = tiny_model(TinyConfig(architecture=arch)).model
    proto = build(model)
    onnx.checker.check_model(proto)
    save(proto, tmp_path / "model.onnx")
    prefill, decode = _parity(model, tmp_path / "model.onnx")
    assert prefill < 1e-4 and decode < 1e-4


def test_stable_hierarchical_node_names():
    proto = build(tiny_model().model)
    names = {n.name for n in proto.graph.node}
    assert "/model/layers.0/attn/qkv_proj/MatMul" in names
    assert "/model/layers.1/attn/GroupQueryAttention" in names
    assert "/lm_head/FusedMatMul" in names  # tied head read from the embedding, stored once
    assert len(names) == len(proto.graph.node)


def test_logits_to_keep_is_optional_and_keeps_the_last_positions(tmp_path):
    model = tiny_model().model
    proto = build(model)
    assert keep_logits(proto) is proto and sum(i.name == LOGITS_TO_KEEP for i in proto.graph.input) == 1
    save(proto, tmp_path / "model.onnx")
    s = VariantSession(tmp_path / "model.onnx", threads=1).session
    ids = np.array([[3, 17, 33, 99, 120]], np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    feeds |= {i.name: np.zeros([1, i.shape[1], 0, i.shape[3]], np.float32) for i in s.get_inputs()
              if i.name.startswith("past_key_values")}
    every = s.run(["logits"], feeds)[0]  # nothing fed: every position, as onnxruntime-genai sees it
    np.testing.assert_allclose(every, _torch_logits(model, ids), atol=1e-4)
    for n in (1, 3):
        kept = s.run(["logits"], {**feeds, LOGITS_TO_KEEP: np.array([n], np.int64)})[0]
        np.testing.assert_allclose(kept, every[:, -n:], atol=1e-5)


def _prune_half(model) -> None:
    torch.manual_seed(1)
    with torch.no_grad():
        for layer in model.model.layers:
            for lin in (*[getattr(layer.self_attn, n) for n in ("q_proj", "k_proj", "v_proj", "o_proj")],
                        layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj):
                keep = lin.weight.abs() >= lin.weight.abs().median(dim=1, keepdim=True).values
                lin.weight.mul_(keep)


@pytest.mark.parametrize("storage", [None, "masked"])  # expanded here, or in a child process
def test_masked_storage_is_smaller_and_identical(tmp_path, storage):
    model = tiny_model(TinyConfig(hidden=128, intermediate=256)).model
    _prune_half(model)
    dense = save(build(model, SparseStorage.DENSE), tmp_path / "d" / "model.onnx")
    masked = save(build(model, SparseStorage.MASKED), tmp_path / "m" / "model.onnx")
    assert masked < 0.8 * dense
    ids = np.array([[1, 2, 3, 4, 5]], np.int64)
    a = VariantSession(tmp_path / "d" / "model.onnx", threads=1).logits(ids)
    b = VariantSession(tmp_path / "m" / "model.onnx", threads=1, storage=storage).logits(ids)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("storage", [None, "masked"])  # expanded here, or in a child process
def test_a_truncated_masked_variant_says_so(tmp_path, storage):
    model = tiny_model().model
    _prune_half(model)
    save(build(model, SparseStorage.MASKED), tmp_path / "model.onnx")
    data = tmp_path / "model.onnx.data"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    with pytest.raises(VariantError, match=r"^cannot expand the masked weights of .*model.onnx.* \(the external data of .* is truncated\); re-export"):
        VariantSession(tmp_path / "model.onnx", threads=1, storage=storage)


def test_masked_storage_loads_in_plain_onnxruntime(tmp_path):
    """Any ORT program can load a masked graph: constant folding expands the weights."""
    import onnxruntime as ort

    model = tiny_model().model
    _prune_half(model)
    save(build(model, SparseStorage.MASKED), tmp_path / "model.onnx")
    plain = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    s = VariantSession(tmp_path / "model.onnx", threads=1)
    ids = np.array([[1, 2, 3]], np.int64)
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    feed.update({i.name: np.zeros((1, i.shape[1], 0, i.shape[3]), np.float32)
                 for i in plain.get_inputs() if i.name.startswith("past")})
    np.testing.assert_allclose(plain.run(["logits"], feed)[0], s.logits(ids), atol=1e-5)


def test_per_layer_shapes_follow_the_weights(tmp_path):
    """A layer with fewer KV heads, query heads and neurons exports with its own shapes."""
    model = tiny_model(TinyConfig(layers=2, heads=4, kv_heads=2, intermediate=128)).model
    layer = model.model.layers[1]
    hd = 16
    a, m = layer.self_attn, layer.mlp
    with torch.no_grad():
        # drop KV head 1 with its whole query group (query heads 2, 3), and 48 neurons
        q = torch.nn.Linear(64, 2 * hd, bias=False)
        q.weight.copy_(a.q_proj.weight[: 2 * hd])
        k = torch.nn.Linear(64, hd, bias=False)
        k.weight.copy_(a.k_proj.weight[:hd])
        v = torch.nn.Linear(64, hd, bias=False)
        v.weight.copy_(a.v_proj.weight[:hd])
        o = torch.nn.Linear(2 * hd, 64, bias=True)
        o.weight.copy_(a.o_proj.weight[:, : 2 * hd])
        o.bias.fill_(0.01)
        a.q_proj, a.k_proj, a.v_proj, a.o_proj = q, k, v, o
        for name, dim in (("gate_proj", 0), ("up_proj", 0), ("down_proj", 1)):
            old = getattr(m, name)
            w = old.weight[:80] if dim == 0 else old.weight[:, :80]
            new = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
            new.weight.copy_(w)
            setattr(m, name, new)
    info = describe(model)
    assert [(s.heads, s.kv_heads, s.intermediate) for s in info.layers] == [(4, 2, 128), (2, 1, 80)]
    save(build(model), tmp_path / "model.onnx")
    s = VariantSession(tmp_path / "model.onnx", threads=1)
    assert [k.kv_heads for k in s.kv] == [2, 1]
    prefill, decode = _parity(model, tmp_path / "model.onnx")
    assert prefill < 1e-4 and decode < 1e-4


@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_quantized_graph_runs_close_to_fp32(tmp_path, scheme):
    model = tiny_model(TinyConfig(hidden=128, intermediate=256)).model
    save(quantize(build(model, untie_lm_head=True), scheme), tmp_path / "model.onnx")
    proto = onnx.load(str(tmp_path / "model.onnx"), load_external_data=False)
    assert sum(n.op_type == "MatMulNBits" for n in proto.graph.node) == 2 * 4 + 1  # qkv, o, gate|up, down per layer + lm_head
    blocks = {a.i for n in proto.graph.node if n.op_type == "MatMulNBits" for a in n.attribute if a.name == "block_size"}
    assert blocks == {64 if scheme == "int8" else 32}  # int8: half the packed layout's per-block scale and sum
    embedding = [n for n in proto.graph.node if n.op_type == "GatherBlockQuantized"]
    assert [a.i for n in embedding for a in n.attribute if a.name == "block_size"] == [32]  # the GGUF Q8_0's blocks
    ids = np.array([[5, 6, 7, 8, 9, 10]], np.int64)
    out = VariantSession(tmp_path / "model.onnx", threads=1).logits(ids)
    ref = _torch_logits(model, ids)
    rel = np.abs(out - ref).max() / np.abs(ref).max()
    assert rel < (0.02 if scheme == "int8" else 0.2)


def test_masked_expansion_leaves_no_temporary_files(tmp_path, monkeypatch):
    """The expanded weights go through a temporary folder that is gone once the session exists."""
    import tempfile

    model = tiny_model().model
    _prune_half(model)
    save(build(model, SparseStorage.MASKED), tmp_path / "v" / "model.onnx")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    s = VariantSession(tmp_path / "v" / "model.onnx", threads=1)
    assert list(scratch.iterdir()) == []
    assert s.logits(np.array([[1, 2, 3]], np.int64)).shape[:2] == (1, 3)
