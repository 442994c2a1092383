"""On-device side: bundles, onnxruntime generation, signals, the controller, edge-serve.

Imports only onnxruntime, numpy, psutil, tokenizers and the HTTP stack: never torch.
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
    "VariantError",
]
__version__ = "0.1.0"
