"""Execution providers: short names, options, one-line errors, what onnxruntime actually took."""

from __future__ import annotations

import json
import urllib.request

import onnxruntime as ort
import pytest

from edge_runtime import Runtime
from edge_runtime.engine import providers as P
from edge_runtime.errors import ProviderError
from edge_runtime.serve import cli

CPU_ONLY = ["CPUExecutionProvider"]
GPU_BUILD = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def test_auto_and_short_names():
    assert P.resolve(None, CPU_ONLY) == (["CPUExecutionProvider"], [{}])
    assert P.resolve(None, GPU_BUILD)[0] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    names, opts = P.resolve(["cuda:device_id=1", "cpu"], GPU_BUILD)
    assert names == ["CUDAExecutionProvider", "CPUExecutionProvider"] and opts == [{"device_id": "1"}, {}]


def test_tensorrt_gets_an_engine_cache(tmp_path):
    names, opts = P.resolve([f"trt:trt_engine_cache_path={tmp_path}/engines", "cuda"], GPU_BUILD)
    assert names == GPU_BUILD
    assert opts[0]["trt_engine_cache_enable"] == "1" and opts[0]["trt_engine_cache_path"] == f"{tmp_path}/engines"
    assert (tmp_path / "engines").is_dir()


def test_unknown_provider_is_one_line_listing_the_available():
    with pytest.raises(ProviderError, match=r"^unknown execution provider 'cudaa': this onnxruntime .* offers "
                       r"CPUExecutionProvider \(short names: .*cuda.*\)$"):
        P.resolve(["cudaa"], CPU_ONLY)
    with pytest.raises(ProviderError, match=r"'CUDAExecutionProvider' is not available .* offers CPUExecutionProvider; "
                       r"install the build that has it \(e.g. onnxruntime-gpu for CUDA\)"):
        P.resolve(["cuda"], CPU_ONLY)
    with pytest.raises(ProviderError, match=r"provider option 'device_id' of CPUExecutionProvider must be key=value"):
        P.resolve(["cpu:device_id"], CPU_ONLY)


def test_parse_cli_text():
    assert P.parse(None) is None and P.parse(" ") is None
    assert P.parse("tensorrt:trt_fp16_enable=1, cuda ,cpu") == ("tensorrt:trt_fp16_enable=1", "cuda", "cpu")


def test_edge_serve_refuses_an_unknown_provider_in_one_line(tiny_bundle, capsys):
    assert cli.main(["--bundle", str(tiny_bundle), "--providers", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("edge-serve: error: unknown execution provider 'nosuch'") and err.count("\n") == 1


def test_runtime_open_refuses_before_loading(tiny_bundle):
    with pytest.raises(ProviderError, match="unknown execution provider 'gpu'"):
        Runtime.open(tiny_bundle, providers=("gpu",), threads=1, power=None)


def test_models_route_shows_the_provider_used(live):
    live.runtime.pool.get(0, 16)
    req = urllib.request.Request(live.url + "/v1/models", headers={"Authorization": f"Bearer {live.key}"})
    models = {m["id"]: m for m in json.load(urllib.request.urlopen(req))["data"]}
    assert models["dense"]["edge"]["providers"] == ["CPUExecutionProvider"]


@pytest.mark.skipif("CUDAExecutionProvider" not in ort.get_available_providers(), reason="no CUDA provider here")
def test_cuda_runs_the_tiny_bundle(tiny_bundle):
    with Runtime.open(tiny_bundle, providers=("cuda",), threads=1, power=None) as rt:
        assert rt.pool.get(0, 16)[0].session.providers[0] == "CUDAExecutionProvider"
        assert rt.generate("hello").token_ids
