"""onnxruntime execution providers: short names, options, and a check against this build.

A provider entry is a string, so that one form serves `Runtime.open(providers=...)`,
`edge-serve --providers` and `EDGE_PROVIDERS`: a name (full, "CUDAExecutionProvider", or
short, "cuda") followed by `:key=value` options, e.g.

    tensorrt:trt_engine_cache_path=/var/cache/edge/trt:trt_fp16_enable=1,cuda:device_id=0,cpu

TensorRT builds an engine per graph on first load (minutes on a Jetson); its engine and
timing caches are on by default, in `~/.cache/edge-runtime/tensorrt` unless
`trt_engine_cache_path` says otherwise, so the second start loads in seconds. CPU is
always appended last: the fallback for the operators another provider does not take.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import onnxruntime as ort

from edge_runtime.errors import ProviderError

ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "migraphx": "MIGraphXExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "dml": "DmlExecutionProvider",
    "qnn": "QNNExecutionProvider",
}
CPU = "CPUExecutionProvider"
AUTO = ("CUDAExecutionProvider", CPU)  # no entries given: CUDA where this build has it, then CPU
TRT_CACHE = Path("~/.cache/edge-runtime/tensorrt")


def _trt_defaults() -> dict[str, str]:
    cache = str(TRT_CACHE.expanduser())
    return {"trt_engine_cache_enable": "1", "trt_engine_cache_path": cache,
            "trt_timing_cache_enable": "1", "trt_timing_cache_path": cache}


def _name(word: str, available: Sequence[str]) -> str:
    name = ALIASES.get(word.strip().lower(), word.strip())
    if name not in ort.get_all_providers():
        raise ProviderError(
            f"unknown execution provider {word.strip()!r}: this onnxruntime {ort.__version__} offers "
            f"{', '.join(available)} (short names: {', '.join(sorted(ALIASES))})")
    if name not in available:
        raise ProviderError(
            f"execution provider {name!r} is not available in this onnxruntime {ort.__version__} build, which "
            f"offers {', '.join(available)}; install the build that has it (e.g. onnxruntime-gpu for CUDA)")
    return name


def resolve(entries: Sequence[str] | None, available: Sequence[str] | None = None
            ) -> tuple[list[str], list[dict[str, str]]]:
    """Provider names and their options for `ort.InferenceSession`, CPU last.

    Raises:
        ProviderError: an unknown or unavailable provider (the message lists the available
            ones), or an option that is not `key=value`.
    """
    have = list(available if available is not None else ort.get_available_providers())
    if entries is None:
        names = [p for p in AUTO if p in have and p != CPU]
        return names + [CPU], [{} for _ in names] + [{}]
    names, options = [], []
    for entry in entries:
        word, *opts = entry.split(":")
        if not word.strip():
            continue
        name = _name(word, have)
        given: dict[str, str] = {}
        for opt in opts:
            key, eq, value = opt.partition("=")
            if not eq or not key.strip():
                raise ProviderError(f"provider option {opt!r} of {name} must be key=value, as in "
                                    "'tensorrt:trt_engine_cache_path=/var/cache/trt'")
            given[key.strip()] = value.strip()
        if name == "TensorrtExecutionProvider":
            given = {**_trt_defaults(), **given}
            os.makedirs(given["trt_engine_cache_path"], exist_ok=True)
        if name not in names:
            names.append(name)
            options.append(given)
    if CPU not in names:
        names.append(CPU)
        options.append({})
    return names, options


def parse(text: str | None) -> tuple[str, ...] | None:
    """`--providers` / `EDGE_PROVIDERS` text ("tensorrt:k=v,cuda,cpu") as entries; None: auto."""
    if not text or not text.strip():
        return None
    return tuple(e.strip() for e in text.split(",") if e.strip())
