"""Bundle variants open in onnxruntime-genai and decode exactly as edge_runtime does."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from tokenizers import Tokenizer

from edge_runtime.bundle import read_manifest
from export import genai

PROMPT = [5, 17, 33, 70, 101, 9, 250, 3]


def test_every_variant_carries_genai_files(tiny_bundle):
    m = read_manifest(tiny_bundle)
    for v in m.variants:
        assert v.extra["genai"] == {"config": f"variants/{v.name}/genai_config.json", "opens": True}
        folder = (tiny_bundle / v.onnx).parent
        cfg = json.loads((folder / genai.CONFIG).read_text())
        assert cfg["model"]["decoder"]["num_hidden_layers"] == m.model.num_layers
        assert cfg["model"]["decoder"]["filename"] == "model.onnx"
        assert json.loads((folder / genai.TOKENIZER_CONFIG).read_text())["tokenizer_class"] == "GPT2Tokenizer"


def test_unequal_heads_are_marked_not_openable(tiny_bundle):
    m = read_manifest(tiny_bundle)
    v = m.variants[0]
    uneven = replace(v, extra={**v.extra, "layers": [[4, 2, 128], [2, 1, 128]]})
    _, why = genai.config(m.model, uneven)
    assert why == "layers have different attention head counts [(2, 1), (4, 2)]; genai takes one count for all"


@pytest.mark.parametrize("index", [0, 1], ids=["dense", "dense-int8"])
def test_genai_decodes_as_edge_runtime(tiny_bundle, index):
    og = pytest.importorskip("onnxruntime_genai")
    v = read_manifest(tiny_bundle).variants[index]
    out = genai.compare_greedy(tiny_bundle, v, PROMPT, 10)
    assert out["same"] and len(out["genai"]) == 10, out
    assert out["max_logit_diff"] < 1e-4  # the same graph, fed the same inputs
    tok = og.Tokenizer(og.Model(str((tiny_bundle / v.onnx).parent)))
    text = "Once upon a time, <|im_start|>user\nhi<|im_end|> ünïcode"
    assert list(tok.encode(text)) == Tokenizer.from_file(str(tiny_bundle / "tokenizer.json")).encode(text).ids


@pytest.mark.slow
def test_genai_matches_on_the_real_bundle(tmp_path):
    """The default bundle's dense variant on the suite's generation prompts (benchmarks/genai_parity.py)."""
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("onnxruntime_genai")
    root = Path(__file__).resolve().parents[2]
    bundle = root / "bundles/smollm2-135m"
    if not (bundle / "manifest.json").is_file():
        pytest.skip(f"no default bundle at {bundle}: run `make demo` first")
    out = subprocess.run([sys.executable, str(root / "benchmarks/genai_parity.py"), "--bundle", str(bundle),
                          "--limit", "12", "--out", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
