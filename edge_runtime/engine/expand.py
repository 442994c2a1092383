"""Expand a masked-storage variant's weights into a dense copy, in a process of its own.

Masked-storage graphs (export/onnx_export.py) carry a subgraph per pruned weight that
expands non-zero values + bitmask into the dense weight; any ORT program can load them,
and ORT's constant folding does the expansion at load. Folding keeps every intermediate
alive until it finishes (2.7 GB peak for SmolLM2-135M at 50%), so the runtime expands each
weight in numpy instead, one at a time, into an external-data file beside a copy of the
graph without the subgraphs, and opens that like a dense variant: ORT maps the file,
prepacks the weights into its own buffers and lets the mapping go, so a masked variant
takes the memory of its dense twin (an in-memory file instead was copied by ORT while the
expanded copy was alive: about 1.3x dense at peak).

`VariantSession` runs `python -m edge_runtime.engine.expand MODEL OUT_DIR` as a child, so
the `onnx` package (9 MB once imported) and the expansion's numpy temporaries never count
in the serving process, whose peak then equals dense's. The child prints what it did:
`expanded` (OUT_DIR holds model.onnx and its weights), `dense` (not a masked graph: open
MODEL as it is) or `no-onnx` (the `onnx` package is missing: open MODEL as it is and let
ORT's folding expand it).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import BinaryIO

import numpy as np

EXPANDED = "expanded-weights.bin"  # the expanded weights' external-data file
EXPANDED_DONE, DENSE, NO_ONNX = "expanded", "dense", "no-onnx"
# Write size for the expanded file. The page cache keeps a file written in large pieces in
# large folios (Linux 6.x), and a fault maps a whole folio: one token lookup in an embedding
# written in one piece mapped megabytes (109 of its 113 MB after a 128-token prefill, where
# the dense variant's file, read by readahead, had 29). Pieces of 64 KB, the kernel's
# fault-around size, give the masked variant dense's footprint.
CHUNK = 1 << 16


def expand(path: Path, out: Path) -> str:
    """Write `path`'s graph with its masked weights expanded into the folder `out`; what was
    done (`EXPANDED_DONE`, `DENSE` or `NO_ONNX`).

    Raises:
        ValueError: the variant's external data is truncated.
    """
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        return NO_ONNX

    head = onnx.load(str(path), load_external_data=False)
    meta = {p.key: p.value for p in head.metadata_props}
    if meta.get("storage") != "masked":
        return DENSE
    inits = {t.name: t for t in head.graph.initializer}
    nodes = {n.name: n for n in head.graph.node}

    def external(t: onnx.TensorProto) -> tuple[Path, int, int]:
        """Where an external tensor's bytes are: (file, offset, length)."""
        ext = {e.key: e.value for e in t.external_data}
        return path.parent / ext["location"], int(ext.get("offset", 0)), int(ext["length"])

    def array(name: str) -> np.ndarray:
        t = inits[name]
        if t.data_location != onnx.TensorProto.EXTERNAL:
            return numpy_helper.to_array(t)
        file, start, length = external(t)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.data_type)
        raw = np.fromfile(file, dtype=np.uint8, count=length, offset=start)
        if raw.size != length:
            raise ValueError(f"the external data of {name!r} is truncated")
        return raw.view(dtype).reshape(tuple(t.dims))

    weights = [n.output[0] for n in head.graph.node if n.name.endswith("/expand/ReshapeOut")]
    dropped = {f"{w}.{part}" for w in weights for part in ("values", "bitmask")}
    kept = [t for t in head.graph.initializer if t.name not in dropped]
    placeholders, offset = [], 0

    def place(name: str, shape: tuple[int, ...], data_type: int, nbytes: int) -> None:
        nonlocal offset
        t = onnx.TensorProto(name=name, data_type=data_type, dims=shape)
        t.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", EXPANDED), ("offset", str(offset)), ("length", str(nbytes))):
            t.external_data.add(key=key, value=value)
        placeholders.append(t)
        offset += nbytes

    def write(f: BinaryIO, name: str, shape: tuple[int, ...], data: np.ndarray) -> None:
        raw = memoryview(np.ascontiguousarray(data).reshape(-1).view(np.uint8))
        for at in range(0, len(raw), CHUNK):
            f.write(raw[at : at + CHUNK])
        place(name, shape, onnx.helper.np_dtype_to_tensor_dtype(data.dtype), data.nbytes)

    def copy(f: BinaryIO, t: onnx.TensorProto) -> None:  # a weight the pruning left alone, file to file
        file, start, length = external(t)
        left, buf = length, bytearray(CHUNK)
        with open(file, "rb") as src:
            src.seek(start)
            while left:
                n = src.readinto(memoryview(buf)[: min(CHUNK, left)])
                if not n:
                    raise ValueError(f"the external data of {t.name!r} is truncated")
                f.write(memoryview(buf)[:n])
                left -= n
        place(t.name, tuple(t.dims), t.data_type, length)

    # One file holds everything external (ORT refuses external data outside the model's
    # folder, links included): the expanded weights, then the variant's other external tensors.
    with open(out / EXPANDED, "wb") as f:
        for w in weights:
            shape = tuple(int(x) for x in numpy_helper.to_array(inits[nodes[f"{w}/expand/ReshapeOut"].input[1]]))
            size = int(np.prod(shape))
            mask = np.unpackbits(array(f"{w}.bitmask"), bitorder="little", count=size).astype(bool)
            values = array(f"{w}.values")
            dense = np.zeros(size, values.dtype)  # float32, or float16 graphs' half precision
            dense[mask] = values[1:]  # values[0] is the padding zero
            write(f, w, shape, dense)
        for t in kept:
            if t.data_location == onnx.TensorProto.EXTERNAL:
                copy(f, t)
    inline = [t for t in kept if t.data_location != onnx.TensorProto.EXTERNAL]
    del head.graph.node[:]
    head.graph.node.extend(n for n in nodes.values() if "/expand/" not in n.name)
    del head.graph.initializer[:]
    head.graph.initializer.extend(inline + placeholders)
    (out / "model.onnx").write_bytes(head.SerializeToString())
    return EXPANDED_DONE


def main(argv: list[str] | None = None) -> int:
    model, out = (argv if argv is not None else sys.argv[1:])
    try:
        print(expand(Path(model), Path(out)))
    except (OSError, ValueError) as e:
        print(e, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
