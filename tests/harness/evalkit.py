"""Helpers for the evaluation harness tests: a fake model whose answers each test sets, and
a tiny bundle of ONNX bigram graphs with onnxruntime-genai I/O names.

A plain module (not conftest) so tests can import it by a name no other conftest shares.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from edge_runtime.bundle import Manifest, ModelInfo, Variant, write_manifest
from export.load import TINY_CHAT_TEMPLATE
from harness.scoring import greedy
from harness.text import heldout_text

HEADER = {"suite": "edge-eval", "version": "1.0.0", "changelog": [{"version": "1.0.0", "changes": "test"}]}


class FakeModel:
    """Puts all its probability on continuing one of `targets` (token id sequences).

    At a position whose prefix matches a target's prefix, the next token of that target gets
    logit +20; everything else is flat. So the test decides which option wins and what is
    generated (a target should end with the stop id to end generation).
    """

    def __init__(self, targets: Sequence[Sequence[int]], vocab: int) -> None:
        self.targets = [list(t) for t in targets]
        self.vocab = vocab
        self.calls = 0

    def logits(self, input_ids: np.ndarray) -> np.ndarray:
        self.calls += 1
        b, s = input_ids.shape
        out = np.zeros((b, s, self.vocab), dtype=np.float32)  # [B, S, V]
        for i in range(b):
            row = list(input_ids[i])
            for t in self.targets:
                for p in range(min(s, len(t) - 1)):
                    if row[: p + 1] != t[: p + 1]:
                        break
                    out[i, p, t[p + 1]] = 20.0
        return out

    def generate(self, prompt_ids: Sequence[int], max_new_tokens: int, stop_ids: Collection[int]) -> Iterator[int]:
        return greedy(self, prompt_ids, max_new_tokens, stop_ids)


def suite_text(cases: list[dict], header: dict | None = None) -> str:
    return "\n".join(json.dumps(x) for x in [header or HEADER, *cases]) + "\n"


# --------------------------------------------------------------------------- a tiny ORT bundle


def bigram_table(tok: Tokenizer, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """log bigram frequencies of the held-out text [V, V], optionally mixed with noise."""
    v = tok.get_vocab_size()
    ids = np.asarray(tok.encode(heldout_text()[:60_000]).ids)
    counts = np.ones((v, v), dtype=np.float64)
    np.add.at(counts, (ids[:-1], ids[1:]), 1.0)
    table = np.log(counts / counts.sum(axis=1, keepdims=True))
    if noise:
        table = table + noise * np.random.default_rng(seed).standard_normal(table.shape)
    return table.astype(np.float32)


def bigram_onnx(path: Path, table: np.ndarray, kv_heads: Sequence[int] = (2, 1), head_dim: int = 4) -> None:
    """An ONNX graph with onnxruntime-genai I/O names whose logits are a bigram table lookup."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    f, i64 = TensorProto.FLOAT, TensorProto.INT64
    v = table.shape[0]
    inputs = [helper.make_tensor_value_info("input_ids", i64, ["batch", "seq"]),
              helper.make_tensor_value_info("attention_mask", i64, ["batch", "total"])]
    outputs = [helper.make_tensor_value_info("logits", f, ["batch", "seq", v])]
    inits = [numpy_helper.from_array(table, "table")]
    nodes = [helper.make_node("Gather", ["table", "input_ids"], ["logits"], axis=0)]  # [B, S, V]
    for layer, kv in enumerate(kv_heads):
        for kind in ("key", "value"):
            # The runtime's decoder binds past and present to one preallocated buffer (as
            # GroupQueryAttention updates it in place), so present has past's shape here.
            past, present = f"past_key_values.{layer}.{kind}", f"present.{layer}.{kind}"
            inputs.append(helper.make_tensor_value_info(past, f, ["batch", kv, "past", head_dim]))
            outputs.append(helper.make_tensor_value_info(present, f, ["batch", kv, "past", head_dim]))
            nodes.append(helper.make_node("Identity", [past], [present]))
    graph = helper.make_graph(nodes, "bigram", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


BUNDLE_VARIANTS = (  # name, method, sparsity, noise, prefill ms/token, decode ms/token
    ("dense", "dense", 0.0, 0.0, 2.0, 30.0),
    ("wanda-30", "wanda", 0.3, 0.3, 1.9, 29.0),
    ("magnitude-70", "magnitude", 0.7, 6.0, 1.0, 15.0),
)


def build_bundle(root: Path, tok: Tokenizer, costs: bool = True, variants=BUNDLE_VARIANTS) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    tok.save(str(root / "tokenizer.json"))
    vs = []
    for name, method, sparsity, noise, pre, dec in variants:
        rel = f"variants/{name}/model.onnx"
        bigram_onnx(root / rel, bigram_table(tok, noise, seed=len(vs)))
        size = (root / rel).stat().st_size
        cost = {"prefill_ms_per_token": pre, "decode_ms_per_token": dec, "peak_rss_mb": 50.0} if costs else {}
        vs.append(Variant.from_dict({
            "name": name, "method": method, "sparsity": sparsity, "structured": False, "quantization": "none",
            "parent": None, "onnx": rel, "params": 1000, "nonzero_params": int(1000 * (1 - sparsity)),
            "file_bytes": int(size * (1 - sparsity / 2)), "cost": cost,
        }))
    model = ModelInfo(source="tiny", architecture="LlamaForCausalLM", params=1000, context_length=1024, num_layers=2,
                      vocab_size=tok.get_vocab_size(), eos_token_ids=(tok.token_to_id("<|im_end|>"),),
                      chat_template=TINY_CHAT_TEMPLATE)
    write_manifest(root, Manifest(model=model, variants=tuple(vs), extra={"note": "kept"}))
    return root


SMALL_SUITE = [
    {"id": "c1", "slice": "common", "type": "choice", "prompt": "The name of the", "options": [" function", " zebra"], "answer": 0},
    {"id": "c2", "slice": "common", "type": "regex", "prompt": "Python is", "pattern": ".", "template": "raw", "max_new_tokens": 4},
    {"id": "c3", "slice": "common", "type": "list", "prompt": "List two things.", "n": 2, "template": "chat", "max_new_tokens": 6, "tags": ["instruction"]},
    {"id": "e1", "slice": "edge", "type": "choice", "prompt": "You can use the", "options": [" interpreter", " xylophone", " quagga"], "answer": 0},
    {"id": "e2", "slice": "edge", "type": "exact", "prompt": "Say ok.", "answer": ["ok"], "template": "chat", "max_new_tokens": 4},
    {"id": "a1", "slice": "adversarial", "type": "choice", "prompt": "This is an", "options": [" example", " examp"], "answer": 0},
    {"id": "a2", "slice": "adversarial", "type": "json", "prompt": "JSON please.", "keys": ["a"], "template": "chat", "max_new_tokens": 6},
    {"id": "m1", "slice": "multilingual", "type": "choice", "prompt": "Le", "options": [" module", " chat"], "answer": 0, "lang": "fr"},
]
