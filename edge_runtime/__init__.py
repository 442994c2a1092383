"""On-device side: bundles, onnxruntime generation, signals, the controller, edge-serve.

Imports only onnxruntime, numpy, psutil, llguidance, jinja2 and the HTTP stack: never torch
(`tokenizers` only for a bundle whose tokenizer is not byte-level BPE: edge_runtime/engine/codec.py).
"""

from edge_runtime.errors import (
    BundleError,
    EdgeError,
    Overloaded,
    PolicyError,
    ProfileError,
    RequestError,
    VariantError,
)

__all__ = [
    "BundleError",
    "EdgeError",
    "Overloaded",
    "PolicyError",
    "ProfileError",
    "RequestError",
    "Result",
    "Runtime",
    "RuntimeConfig",
    "SamplingParams",
    "VariantError",
]
__version__ = "0.1.0"

# The serving API, imported on first use so that `import edge_runtime.bundle` (export,
# training) does not pay for onnxruntime, tokenizers and prometheus.
_LAZY = {
    "Runtime": "edge_runtime.runtime",
    "RuntimeConfig": "edge_runtime.runtime",
    "Result": "edge_runtime.runtime",
    "SamplingParams": "edge_runtime.engine.sampling",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edge_runtime' has no attribute {name!r}")
