"""GGUF block grids read back from float32 weights, and their exact MatMulNBits form (`int4-grid`).

A model loaded from a Q4_1 GGUF holds dequantized weights: in every block of 32 input rows
of a decoder linear, w = d*q + m with q in 0..15 and d, m float16; its tied embedding is
Q8_0, w = d*q with q in -127..127. Rounding those again (int4 RTN) loses quality; reading
the grid back loses nothing (on SmolLM2 every block, d, m and q equal the GGUF's bit for bit).

Without zero points MatMulNBits computes x @ (d*(q - z))^T with the kernel's default z (8 at
4 bits, 128 at 8), so a Q4_1 weight needs one more term, what is left of its minimum, m + 8d,
times the sum of the input over the block:

    y = MatMulNBits(x; q, d) + blocksum(x) @ (M + 8D)^T    # x [B, S, K]; M, D [N, K/32]

The block sums (Reshape, ReduceSum) of one input tensor are computed once and shared by the
MatMuls that read it. Q8_0 weights are 8-bit MatMulNBits over q + 128, exact as they are.

Measured on SmolLM2 (benchmarks/results/grid_quant.md): with int8 activations in the kernel
(`accuracy_level=4`) the zero point decides the quality: at z = 0 (explicit zero points,
weights d*q all positive) the activations' rounding error grows along the weights' mean and
argmax agreement with dense fell to 94.5%; at z = 8 it is 97.5% (dense-int8: 97.3%), and
decoding is 5-8% faster than with explicit zero points centred on each block's zero. Float
zero points (z = -m/d, no extra term) are exact too but take the kernel's slow path: 844 us
a call on one projection (K=576, N=1536, 2 threads, M=1) against 35 us for this form.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edge_runtime.errors import RecipeError

BLOCK = 32  # GGUF's Q4_1 and Q8_0 block: 32 consecutive input rows share d (and m)
TOLERANCE = 1e-6  # reconstruction error allowed, relative to the block's largest |w|
KERNEL_ZERO = 8  # MatMulNBits' zero point at 4 bits when none is given


@dataclass(frozen=True)
class Grid:
    """One [K, N] MatMul weight as GGUF blocks: W[32 b + i, n] = d[n, b] * q[n, b, i] + m[n, b]."""

    q: np.ndarray  # [N, K/32, 32] uint8: Q4_1 q in 0..15; Q8_0 q + 128
    d: np.ndarray  # [N, K/32] float32 holding float16 values
    m: np.ndarray | None  # [N, K/32] float32 holding float16 values (Q4_1); None for Q8_0
    on_grid: np.ndarray  # [N, K/32] bool: the block is reproduced within TOLERANCE


def _blocks(w: np.ndarray) -> np.ndarray:
    """[K, N] MatMul weight -> [N, K/32, 32]: blocks along the input dim, as GGUF stores rows."""
    return np.ascontiguousarray(w.T).reshape(w.shape[1], -1, BLOCK)


def _half(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float16).astype(np.float32)


def _solve(b: np.ndarray, d: np.ndarray, m: np.ndarray, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """q = round((b - m) / d) per block [N, K/32, 32] and whether d*q + m gives b back with q in lo..hi."""
    step = np.where(d > 0, d, 1.0)[..., None]  # all-equal blocks: d = 0, every q = 0
    q = np.rint((b - m[..., None]) / step)
    rec = d[..., None] * q + m[..., None]  # float32, as GGUF readers dequantize
    exact = np.abs(rec - b) <= TOLERANCE * np.abs(b).max(-1, keepdims=True)
    return q, exact.all(-1) & (q.min(-1) >= lo) & (q.max(-1) <= hi)


def q4_1(w: np.ndarray) -> Grid:
    """llama.cpp's Q4_1 quantizer puts q = 0 at the block minimum and q = 15 at its maximum."""
    b = _blocks(w)
    lo, hi = b.min(-1), b.max(-1)
    m, d = _half(lo), _half((hi - lo) / 15)
    q, ok = _solve(b, d, m, 0, 15)
    return Grid(np.clip(q, 0, 15).astype(np.uint8), d, m, ok)


def q8_0(w: np.ndarray) -> Grid:
    """llama.cpp's Q8_0 quantizer puts |q| = 127 at the block's largest magnitude."""
    b = _blocks(w)
    d = _half(np.abs(b).max(-1) / 127)
    q, ok = _solve(b, d, np.zeros_like(d), -127, 127)
    return Grid((np.clip(q, -127, 127) + 128).astype(np.uint8), d, None, ok)


GRIDS: dict[int, tuple[str, Callable[[np.ndarray], Grid]]] = {4: ("Q4_1", q4_1), 8: ("Q8_0", q8_0)}


def read_grid(name: str, w: np.ndarray, bits: int) -> Grid:
    """The `bits` GGUF grid of weight `name` [K, N]; RecipeError when any block is off it."""
    kind, read = GRIDS[bits]
    if w.shape[0] % BLOCK:
        raise RecipeError(f"int4-grid: weight {name!r} has {w.shape[0]} input rows, not a multiple of {BLOCK}, so it "
                          f"is not on a {kind} grid; quantize this variant with 'int4' or 'int8' instead")
    grid = read(w)
    off = int(grid.on_grid.size - grid.on_grid.sum())
    if off:
        raise RecipeError(f"int4-grid: weight {name!r} is not on a {kind} grid ({off} of {grid.on_grid.size} blocks "
                          f"of {BLOCK} are not reproduced); quantize this variant with 'int4' or 'int8' instead")
    return grid


class GridRewriter:
    """The nodes and initializers that compute a graph's MatMuls exactly from their weights' grids."""

    def __init__(self, accuracy_level: int) -> None:
        self.accuracy_level = accuracy_level  # 4: int8 activations in the kernel (fast); 0: float32 (exact)
        self.nodes: list[onnx.NodeProto] = []  # the rewritten graph's nodes, in order
        self.inits: dict[str, onnx.TensorProto] = {}  # initializers to add
        self.sums: dict[str, str] = {}  # input tensor -> its block sums [B, S, K/32]

    def _add(self, name: str, value: np.ndarray) -> str:
        if name not in self.inits:
            self.inits[name] = numpy_helper.from_array(value, name)
        return name

    def _nbits(self, node: onnx.NodeProto, grid: Grid, bits: int, out: str) -> None:
        """MatMulNBits over q and d with the kernel's default zero point: x @ (d*(q - 2^(bits-1)))^T."""
        n, nb, _ = grid.q.shape
        weight = node.input[1]
        packed = grid.q if bits == 8 else grid.q[..., 0::2] | (grid.q[..., 1::2] << 4)  # low nibble first
        inputs = [node.input[0], self._add(f"{weight}_Q{bits}", packed),
                  self._add(f"{weight}_scales", grid.d.reshape(-1))]
        level = {"accuracy_level": self.accuracy_level} if self.accuracy_level else {}
        self.nodes.append(helper.make_node("MatMulNBits", inputs, [out], _prefix(node) + "/MatMulNBits",
                                           domain="com.microsoft", K=nb * BLOCK, N=n, bits=bits, block_size=BLOCK,
                                           **level))

    def _blocksum(self, x: str, blocks: int) -> str:
        """[B, S, K] -> [B, S, K/32] (the builder's activations are 3-D), once per input tensor."""
        if x not in self.sums:
            base = x.removesuffix("/output") + "/blocksum"
            shape = self._add(f"/const/blocks_{blocks}x{BLOCK}", np.array([0, 0, blocks, BLOCK], np.int64))
            axes = self._add("/const/last_axis", np.array([-1], np.int64))
            self.nodes += [helper.make_node("Reshape", [x, shape], [f"{base}/Reshape/output"], f"{base}/Reshape"),
                           helper.make_node("ReduceSum", [f"{base}/Reshape/output", axes], [f"{base}/output"],
                                            f"{base}/ReduceSum", keepdims=0)]
            self.sums[x] = f"{base}/output"
        return self.sums[x]

    def replace(self, node: onnx.NodeProto, grid: Grid, bits: int) -> None:
        """Emit the nodes that compute `node`'s output exactly from `grid`."""
        if grid.m is None:
            self._nbits(node, grid, bits, node.output[0])
            return
        prefix = _prefix(node)
        sums = self._blocksum(node.input[0], grid.q.shape[1])
        self._nbits(node, grid, bits, f"{prefix}/MatMulNBits/output")
        rest = grid.m + grid.d * KERNEL_ZERO  # [N, K/32]; d*8 is exact, the sum rounds once in float32
        mins = self._add(f"{node.input[1]}_mins", np.ascontiguousarray(rest.T))  # [K/32, N]
        self.nodes += [helper.make_node("MatMul", [sums, mins], [f"{prefix}/min/MatMul/output"], f"{prefix}/min/MatMul"),
                       helper.make_node("Add", [f"{prefix}/MatMulNBits/output", f"{prefix}/min/MatMul/output"],
                                        [node.output[0]], f"{prefix}/min/Add")]


def _prefix(node: onnx.NodeProto) -> str:
    return node.name.removesuffix("/MatMul") or node.output[0]


def _float32_weight(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> np.ndarray | None:
    """A MatMul's constant [K, N] weight (None for other nodes); RecipeError for one not 2-D float32."""
    if node.op_type != "MatMul" or node.input[1] not in inits:
        return None
    t = inits[node.input[1]]
    if t.data_type != onnx.TensorProto.FLOAT or len(t.dims) != 2:
        raise RecipeError(f"int4-grid: weight {t.name!r} is {onnx.TensorProto.DataType.Name(t.data_type)} with "
                          f"{len(t.dims)} dims, but GGUF grids are read from 2-D float32 weights; export this "
                          "variant with dtype float32")
    return numpy_helper.to_array(t)


def rewrite(proto: onnx.ModelProto, bits: int, head_bits: int, head: str, accuracy_level: int) -> onnx.ModelProto:
    """`proto` with every constant MatMul on its grid: `bits` (Q4_1) in the decoder, `head_bits` (Q8_0) at `head`.

    Every weight is read (and refused when off its grid) before the graph changes.
    """
    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    grids: dict[int, tuple[Grid, int]] = {}
    for i, node in enumerate(graph.node):
        w = _float32_weight(node, inits)
        if w is not None:
            nbits = head_bits if node.name == head else bits
            grids[i] = (read_grid(node.input[1], w, nbits), nbits)
    r = GridRewriter(accuracy_level)
    for i, node in enumerate(graph.node):
        if i in grids:
            r.replace(node, *grids[i])
        else:
            r.nodes.append(node)
    replaced = {graph.node[i].input[1] for i in grids}
    del graph.node[:]
    graph.node.extend(r.nodes)
    used = {name for n in graph.node for name in n.input}
    for i in reversed(range(len(graph.initializer))):
        if graph.initializer[i].name in replaced - used:
            del graph.initializer[i]  # a float32 weight now held as its grid
    graph.initializer.extend(r.inits.values())
    return proto
