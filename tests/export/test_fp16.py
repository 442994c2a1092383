"""float16 graphs for GPUs: parity on the CPU (onnxruntime runs every operator of the graph in
float16 there too), int4 weight-only on top, refusals, and a CUDA run where a GPU exists."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edge_runtime.bundle import read_manifest
from edge_runtime.engine.session import VariantSession
from edge_runtime.errors import ExportError, RecipeError
from export.load import TinyConfig, tiny_model
from export.onnx_export import SparseStorage, build, save
from export.quantize import quantize
from export.recipe import Recipe

IDS = np.array([[3, 17, 33, 99, 120, 7, 8, 250]], np.int64)


def _logits(path, providers=None):
    s = VariantSession(path, threads=1, providers=providers)
    logits, past = s.forward(IDS[:, :-1])
    step, _ = s.forward(IDS[:, -1:], past)
    return logits.astype(np.float32), step.astype(np.float32), s


@pytest.mark.parametrize("storage", [SparseStorage.DENSE, SparseStorage.MASKED])
def test_float16_graph_matches_torch_on_the_cpu(tmp_path, storage):
    model = tiny_model(TinyConfig(architecture="Qwen2ForCausalLM")).model  # q/k/v biases too
    if storage is SparseStorage.MASKED:
        with torch.no_grad():
            for layer in model.model.layers:
                w = layer.mlp.down_proj.weight
                w[w.abs() < w.abs().median()] = 0.0
    proto = build(model, storage, dtype="float16")
    onnx.checker.check_model(proto)
    assert {i.type.tensor_type.elem_type for i in proto.graph.output} == {onnx.TensorProto.FLOAT16}
    save(proto, tmp_path / "model.onnx")
    logits, step, s = _logits(tmp_path / "model.onnx")
    assert s.kv_dtype == np.float16
    with torch.no_grad():
        ref = model(torch.from_numpy(IDS)).logits.numpy()
    scale = np.abs(ref).max()
    assert np.abs(logits - ref[:, :-1]).max() < 2e-3 * scale + 1e-3
    assert np.abs(step - ref[:, -1:]).max() < 2e-3 * scale + 1e-3
    assert (logits.argmax(-1) == ref[:, :-1].argmax(-1)).mean() >= 0.85
    dec = s.decoder(16)
    assert dec.prefill(IDS[0]).dtype == np.float32  # sampling always sees float32


def test_int4_weight_only_on_a_float16_graph(tmp_path):
    model = tiny_model().model
    proto = quantize(build(model, untie_lm_head=True, dtype="float16"), "int4")
    assert "MatMulNBits" in {n.op_type for n in proto.graph.node}
    save(proto, tmp_path / "model.onnx")
    save(quantize(build(model, untie_lm_head=True), "int4"), tmp_path / "fp32" / "model.onnx")
    half, _, _ = _logits(tmp_path / "model.onnx")
    full, _, _ = _logits(tmp_path / "fp32" / "model.onnx")
    assert np.abs(half - full).max() < 1e-2 * np.abs(full).max() + 1e-3  # the same int4 weights, in half


def test_float16_refuses_weights_beyond_its_range():
    model = tiny_model().model
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight[0, 0] = 1e6
    with pytest.raises(ExportError, match=r"^cannot export in float16: weight 'model.layers.0.mlp.up_proj.weight' "
                       r"reaches 1e\+06, beyond float16's 65504; export this model with dtype float32$"):
        build(model, dtype="float16")


def test_recipe_dtype():
    r = Recipe.from_dict({"variant": [{"name": "d", "method": "dense", "dtype": "float16"},
                                      {"name": "d-int4", "parent": "d", "quantization": "int4", "dtype": "float16"}]})
    assert [v.dtype for v in r.variants] == ["float16", "float16"]
    with pytest.raises(RecipeError, match=r"'d': unknown dtype 'bfloat16'; known: float32, float16"):
        Recipe.from_dict({"variant": [{"name": "d", "method": "dense", "dtype": "bfloat16"}]})


def test_float16_bundle_exports_and_serves(tmp_path):
    from tests.conftest import build_tiny_bundle

    out = build_tiny_bundle(tmp_path / "b", {"name": "gpu", "evaluation": {"ppl_windows": 1, "ppl_seq_len": 32},
                                             "variant": [{"name": "dense-fp16", "method": "dense", "dtype": "float16"},
                                                         {"name": "dense-fp16-int4", "parent": "dense-fp16",
                                                          "quantization": "int4", "dtype": "float16"}]},
                            measure_cost=False)
    for v in read_manifest(out).variants:
        assert v.extra["dtype"] == "float16" and v.parity.prefill_max_abs < 0.5, v
        assert np.isfinite(v.quality.perplexity)


@pytest.mark.skipif("CUDAExecutionProvider" not in ort.get_available_providers(), reason="no CUDA provider here")
def test_float16_on_cuda_matches_the_cpu(tmp_path):
    save(build(tiny_model().model, dtype="float16"), tmp_path / "model.onnx")
    cpu, _, _ = _logits(tmp_path / "model.onnx", ["cpu"])
    gpu, _, s = _logits(tmp_path / "model.onnx", ["cuda"])
    assert s.providers[0] == "CUDAExecutionProvider"
    assert np.abs(cpu - gpu).max() < 1e-2 * np.abs(cpu).max() + 1e-3
