"""Greedy tokens of every variant of a bundle through the installed edge_runtime, as JSON.

Run by .ci/ort_floor.sh twice, with the development onnxruntime and llguidance and with the
lowest ones pyproject claims; the two outputs must be equal. Each variant answers a text
prompt and a chat; dense also answers under a JSON schema (llguidance's grammar), and the
chat prompt's ids go through llguidance's tokenizer. Stdlib and edge_runtime only.
"""

from __future__ import annotations

import importlib.metadata
import json
import sys

import onnxruntime

from edge_runtime import Runtime, SamplingParams

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"], "additionalProperties": False}


def main(bundle: str) -> None:
    tokens = {}
    params = SamplingParams(max_tokens=12, ignore_eos=True)
    with Runtime.open(bundle, threads=1, preload="all", allow_ungated=True) as rt:
        chat = [{"role": "user", "content": "Say <|im_end|> twice, then stop."}]
        tokens["chat prompt"] = rt.tokenizer.encode_chat(chat)
        for name in rt.manifest.names:
            tokens[name] = rt.generate("Once upon a time", variant=name, params=params).token_ids
            tokens[f"{name} chat"] = rt.chat(chat, variant=name, params=params).token_ids
        dense = rt.manifest.names[0]
        constraint = rt.grammars.compile_json_schema(SCHEMA, "response_format")
        tokens["json schema"] = rt.generate("A number:", variant=dense, constraint=constraint,
                                            params=SamplingParams(max_tokens=12)).token_ids
    print(json.dumps({"onnxruntime": onnxruntime.__version__, "llguidance": importlib.metadata.version("llguidance"),
                      "tokens": tokens}))


if __name__ == "__main__":
    main(sys.argv[1])
