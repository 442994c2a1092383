"""Optional extras: which tool needs which, the one-line message when one is missing, `--version`.

The base install is the device (edge-serve, edge-sim). The offline tools and a few options
need an extra (pyproject's `[project.optional-dependencies]`; tests/test_packaging.py keeps
`EXTRAS` equal to it). A tool calls `require(extra, tool)` before its first import of an
optional package, so a missing extra is one line naming the extra to install, never a
`ModuleNotFoundError` traceback from deep inside an import chain.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util

from edge_runtime.errors import MissingExtra

DISTRIBUTION = "edge-sparsity-runtime"

# extra -> (distribution name, import name) of each package it adds.
EXTRAS: dict[str, tuple[tuple[str, str], ...]] = {
    "plot": (("matplotlib", "matplotlib"),),
    "eval": (("matplotlib", "matplotlib"), ("tqdm", "tqdm"), ("tokenizers", "tokenizers")),
    "tokenizers": (("tokenizers", "tokenizers"),),
    "export": (("torch", "torch"), ("transformers", "transformers"), ("gguf", "gguf"),
               ("accelerate", "accelerate"), ("onnx", "onnx"), ("safetensors", "safetensors"),
               ("tqdm", "tqdm")),
    "train": (("torch", "torch"), ("onnx", "onnx"), ("onnxscript", "onnxscript"),
              ("gymnasium", "gymnasium"), ("stable-baselines3", "stable_baselines3"), ("tqdm", "tqdm")),
}


def missing(extra: str) -> list[str]:
    """Distribution names of `extra` that cannot be imported here (found without importing them)."""
    return [dist for dist, module in EXTRAS[extra] if importlib.util.find_spec(module) is None]


def require(extra: str, tool: str) -> None:
    """Raise `MissingExtra` (one line: what is missing, the pip command) unless `extra` is installed."""
    absent = missing(extra)
    if absent:
        raise MissingExtra(
            f"{tool} needs the [{extra}] extra ({', '.join(absent)} not installed): "
            f"pip install '{DISTRIBUTION}[{extra}]'"
        )


def version() -> str:
    """The installed distribution's version, or the source tree's when running uninstalled."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        from edge_runtime import __version__

        return __version__


def add_version(parser: argparse.ArgumentParser) -> None:
    """Give a tool's parser `--version` ("edge-serve 0.1.0")."""
    parser.add_argument("--version", action="version", version=f"{parser.prog} {version()}")
