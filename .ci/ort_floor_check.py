"""Greedy tokens of every variant of a bundle through the installed edge_runtime, as JSON.

Run by .ci/ort_floor.sh twice, with the development onnxruntime and with the lowest one
pyproject claims; the two outputs must be equal. Stdlib and edge_runtime only.
"""

from __future__ import annotations

import json
import sys

import onnxruntime

from edge_runtime import Runtime, SamplingParams


def main(bundle: str) -> None:
    tokens = {}
    with Runtime.open(bundle, threads=1, preload="all", allow_ungated=True) as rt:
        for name in rt.manifest.names:
            r = rt.generate("Once upon a time", variant=name, params=SamplingParams(max_tokens=12, ignore_eos=True))
            tokens[name] = r.token_ids
    print(json.dumps({"onnxruntime": onnxruntime.__version__, "tokens": tokens}))


if __name__ == "__main__":
    main(sys.argv[1])
