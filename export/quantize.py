"""Weight-only quantization of an exported graph to onnxruntime's MatMulNBits.

Per-tensor `quantize_dynamic` int8 agreed with its fp32 parent on only 56% of argmax
tokens for SmolLM2-135M (docs/FACTS.md). Block-wise weight-only quantization keeps quality:
every MatMul weight (the lm_head included, untied for the purpose) is quantized in
blocks of input rows with one scale each, and activations are quantized to int8 on
the fly by the kernel (`accuracy_level=4`), which is what makes it fast on AVX2.
int8 takes blocks of 64: onnxruntime's packed int8 layout holds a float scale and a float
block sum beside each block (1.25 bytes a weight at 32, 1.125 at 64), and at 64 dense-int8
served in 16 MB less memory and decoded 7-10% faster on 2 cores, with no suite score
lower (docs/FACTS.md, eighth round). 128 would pad SmolLM2's 576-wide inputs to 640.

Schemes (`SCHEMES`), measured on SmolLM2-135M (4×256 held-out tokens, argmax agreement
with fp32): `int8` symmetric RTN: perplexity ×1.00, 96% agreement, 2.1× decode;
`int4` symmetric RTN (lm_head kept at 8 bits): perplexity ×1.17, 69%, 2.8× decode.
`int4-grid` rounds nothing: weights that came from a Q4_1 GGUF (the default model's) are
read back onto their grid and kept exactly, Q8_0 lm_head included (export/grid.py); a weight
off its grid is refused, not rounded. Measured (benchmarks/results/grid_quant.md, 8 prompts x
64 greedy tokens): with float32 activations every token equals dense's (logits within 2e-4);
with the kernel's int8 activations 97.5% agreement (int8: 97.3% in blocks of 32, 96.1% in
blocks of 64) in a file 21% smaller, but 0.87-0.91x dense-int8's decode on 2 cores: the Q4_1
minimum costs a float32 MatMul and an Add per projection.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import onnx

from edge_runtime.errors import RecipeError
from export.grid import rewrite
from export.onnx_export import MS_DOMAIN

log = logging.getLogger(__name__)

BLOCK_SIZE = 32  # the default block; the GGUF's own (Q8_0, Q4_1), so the embedding keeps it
LM_HEAD_NODE = "/lm_head/MatMul"


@dataclass(frozen=True)
class Scheme:
    """How one quantization scheme treats the decoder and the lm_head."""

    bits: int  # decoder weights
    head_bits: int  # lm_head weight (it is the most sensitive tensor)
    symmetric: bool = True
    accuracy_level: int = 4  # int8 activations in the kernel
    grid: bool = False  # keep the source's GGUF blocks exactly (Q4_1 at 4 bits, Q8_0 at 8) instead of rounding
    block_size: int = BLOCK_SIZE  # input rows per scale


SCHEMES: dict[str, Scheme] = {
    "int8": Scheme(bits=8, head_bits=8, block_size=64),
    "int4": Scheme(bits=4, head_bits=8),
    "int4-grid": Scheme(bits=4, head_bits=8, grid=True),
}


def _quantizer(proto: onnx.ModelProto, bits: int, scheme: Scheme, exclude: list[str] | None = None,
               include: list[str] | None = None) -> onnx.ModelProto:
    from onnxruntime.quantization import QuantFormat
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    cfg = DefaultWeightOnlyQuantConfig(
        block_size=scheme.block_size,
        is_symmetric=scheme.symmetric,
        accuracy_level=scheme.accuracy_level,
        bits=bits,
        quant_format=QuantFormat.QOperator,
        op_types_to_quantize=("MatMul",),
    )
    q = MatMulNBitsQuantizer(proto, algo_config=cfg, nodes_to_exclude=exclude or [], nodes_to_include=include)
    # the quantizer logs one INFO line per node
    qlog = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    level = qlog.level
    qlog.setLevel(logging.WARNING)
    try:
        q.process()
    finally:
        qlog.setLevel(level)
    return q.model.model


def quantize(proto: onnx.ModelProto, scheme_name: str) -> onnx.ModelProto:
    """`proto` (built with dense storage and an untied lm_head) with MatMuls in `scheme_name`."""
    if scheme_name not in SCHEMES:
        raise RecipeError(f"unknown quantization {scheme_name!r}; known: {sorted(SCHEMES)} (or 'none')")
    scheme = SCHEMES[scheme_name]
    if not any(n.name == LM_HEAD_NODE for n in proto.graph.node):
        raise RecipeError("quantize: the graph has no untied lm_head MatMul; build it with untie_lm_head=True")
    if scheme.grid:
        return quantize_embedding(rewrite(proto, scheme.bits, scheme.head_bits, LM_HEAD_NODE, scheme.accuracy_level))
    if scheme.head_bits == scheme.bits:
        return quantize_embedding(_quantizer(proto, scheme.bits, scheme))
    body = _quantizer(proto, scheme.bits, scheme, exclude=[LM_HEAD_NODE])
    return quantize_embedding(_quantizer(body, scheme.head_bits, scheme, include=[LM_HEAD_NODE]))


def quantize_embedding(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The token embedding's Gather as an 8-bit `GatherBlockQuantized` (blocks of 32, symmetric).

    The fp32 table is SmolLM2-135M's largest tensor (49152 x 576, 113 MB); quantized weight-only
    graphs kept it in fp32, so dense-int8 held 1.6x llama.cpp Q8_0's memory. A row is looked up
    once per token, so 8 bits cost nothing in speed. The default model's embedding is the GGUF's
    Q8_0 (blocks of 32, w = d * q): there the scale max|w| / 127 is d and the table is kept exactly.
    """
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type != "Gather" or node.input[0] not in inits or len(inits[node.input[0]].dims) != 2:
            continue
        table = numpy_helper.to_array(inits[node.input[0]])  # [vocab, hidden]
        if table.dtype != np.float32 or table.shape[1] % BLOCK_SIZE:
            continue
        blocks = table.reshape(table.shape[0], -1, BLOCK_SIZE)  # [vocab, hidden / 32, 32]
        scales = np.abs(blocks).max(axis=-1) / np.float32(127)  # [vocab, hidden / 32]
        safe = np.where(scales > 0, scales, np.float32(1))
        q = np.rint(blocks / safe[..., None]).astype(np.int16) + 128  # uint8 storage, zero point 128
        name = node.input[0]
        proto.graph.initializer.remove(inits[name])
        proto.graph.initializer.extend([
            numpy_helper.from_array(q.astype(np.uint8).reshape(table.shape), f"{name}_Q8"),
            numpy_helper.from_array(scales.astype(np.float32), f"{name}_scales"),
            numpy_helper.from_array(np.full(scales.shape, 128, np.uint8), f"{name}_zero_points"),
        ])
        quantized = helper.make_node(
            "GatherBlockQuantized", [f"{name}_Q8", node.input[1], f"{name}_scales", f"{name}_zero_points"],
            list(node.output), name=f"{node.name}_Q8", domain=MS_DOMAIN,
            bits=8, block_size=BLOCK_SIZE, gather_axis=0, quantize_axis=1)
        at = list(proto.graph.node).index(node)
        proto.graph.node.remove(node)
        proto.graph.node.insert(at, quantized)
        return proto
    return proto
