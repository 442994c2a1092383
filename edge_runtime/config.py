"""Typed configuration: `RuntimeConfig`, and the one checker of TOML/JSON tables.

Profiles, reward weights, recipes, floors and training configs are typed, frozen
dataclasses; `check_table` is the one checker they share. Unknown keys and wrong types are rejected with the key's name, the
value seen and the known keys. `float` fields accept integers; `bool` never passes for a
number; `tuple[int, int]` and `tuple[int, ...]` take lists; `X | None` takes X; `dict[str, X]`
takes a table of X; a dataclass type takes a sub-table checked against its fields; `Any` takes
anything.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
import types
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from edge_runtime.control.signals import SOURCES
from edge_runtime.control.tiers import check_tier
from edge_runtime.engine.residency import PREFILL_CHUNK
from edge_runtime.errors import EdgeError
from edge_runtime.shadow.config import ShadowConfig


def typename(tp: Any) -> str:
    """A readable name for a type annotation, for error messages."""
    if typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return "a list of " + typename(args[0]).split(" ", 1)[-1] + "s"
        return "[" + ", ".join(typename(a) for a in args) + "]"
    if isinstance(tp, types.UnionType):
        return " or ".join(typename(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is dict or dataclasses.is_dataclass(tp):
        return "a table"
    return {float: "a number", int: "an integer", bool: "true/false", str: "a string",
            type(None): "absent"}.get(tp, str(tp))


def coerce(value: Any, tp: Any, where: str, error: type[EdgeError]) -> Any:
    """`value` as type `tp`, else `error` naming `where`, the expected type and the value."""
    if isinstance(tp, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None and len(args) < len(typing.get_args(tp)):
            return None
        return coerce(value, args[0], where, error)
    if typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        variadic = len(args) == 2 and args[1] is Ellipsis
        if not isinstance(value, (list, tuple)) or (not variadic and len(value) != len(args)):
            raise error(f"{where} must be {'' if variadic else 'a list '}{typename(tp)}, got {value!r}")
        kinds = [args[0]] * len(value) if variadic else list(args)
        return tuple(coerce(v, a, f"{where}[{i}]", error) for i, (v, a) in enumerate(zip(value, kinds, strict=True)))
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return check_table(tp, value, where, error)
    if typing.get_origin(tp) is dict:
        if not isinstance(value, dict):
            raise error(f"{where} must be a table, got {type(value).__name__} {value!r}")
        kind = typing.get_args(tp)[1]
        return {k: coerce(v, kind, f"{where}.{k}", error) for k, v in value.items()}
    ok = {
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        bool: isinstance(value, bool),
        str: isinstance(value, str),
    }.get(tp, False)
    if not ok:
        raise error(f"{where} must be {typename(tp)}, got {type(value).__name__} {value!r}")
    if tp is float:
        if not math.isfinite(value):
            raise error(f"{where} must be finite, got {value!r}")
        return float(value)
    return value


def check_table(cls: type, data: Any, where: str, error: type[EdgeError],
                skip: tuple[str, ...] = (), extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The keys of `data` checked against dataclass `cls` (fields in `skip` are not accepted).

    `extra` names keys the table may hold that are not fields of `cls`, with their types.
    """
    if not isinstance(data, dict):
        raise error(f"{where} must be a table, got {type(data).__name__} {data!r}")
    hints = {**typing.get_type_hints(cls), **(extra or {})}
    names = [f.name for f in fields(cls) if f.name not in skip] + list(extra or {})
    out = {}
    for key, value in data.items():
        if key not in names:
            raise error(f"{where}: unknown key {key!r}; known keys: {', '.join(names)}")
        out[key] = coerce(value, hints[key], f"{where}.{key}", error)
    return out


def read_toml(path: str | os.PathLike[str], what: str, error: type[EdgeError],
              missing: str = "") -> dict[str, Any]:
    """Parse a TOML file; `error` says which `what` is missing or malformed.

    `missing` is the fix a missing file's message ends with (how to make or find one).
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} {str(path)!r} does not exist" + (f"; {missing}" if missing else ""))
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise error(f"{what} {str(path)!r} is not valid TOML: {e}") from e


@dataclass(frozen=True)
class RuntimeConfig:
    """How a `Runtime` runs; `edge-serve` maps one flag to each field."""

    threads: int | None = None  # onnxruntime intra-op threads per session; None: every core this process may use
    providers: tuple[str, ...] | None = None  # execution providers, preferred first; None: CUDA if present, then CPU
    memory_budget_mb: float | None = None  # loaded variants' estimated MiB at most (LRU unloading); None: no limit
    max_queue: int = 16  # requests waiting before new ones are refused (Overloaded / HTTP 429)
    max_prompt_tokens: int | None = None  # longer prompts are refused; None: the context length - 1
    default_max_tokens: int = 256  # when a request sets none (capped by what fits the context)
    default_deadline_s: float | None = None  # when a request sets none; None: no deadline
    allow_ungated: bool = False  # also serve variants whose evaluation gate failed (logged loudly)
    preload: str | tuple[str, ...] = "first"  # at open: "none", "first" (first servable), "all", or variant names
    prefill_chunk: int = PREFILL_CHUNK  # prompt tokens per forward pass (bounds a prefill's transient memory)
    signals: str = "auto"  # auto | psutil | sysfs | static, when no SignalSource object is passed
    tier: str = "auto"  # floors tier: auto (from battery and heat, control.tiers.select_tier) | normal | saver | critical
    spin: bool = False  # onnxruntime threads busy-wait between passes: a little faster on an idle
    # machine, up to 2x slower where other processes share the cores (measured on 2 busy cores)
    shadow: ShadowConfig = ShadowConfig()  # shadow scoring, drift and capture (edge_runtime.shadow); off by default

    def __post_init__(self) -> None:
        for name in ("max_queue", "default_max_tokens", "prefill_chunk"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"RuntimeConfig.{name} must be an integer >= 1, got {v!r}")
        for name in ("memory_budget_mb", "default_deadline_s"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0):
                raise ValueError(f"RuntimeConfig.{name} must be a number > 0 or None, got {v!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"RuntimeConfig.threads must be an integer >= 1 or None, got {self.threads!r}")
        check_tier(self.tier, "RuntimeConfig.tier", ValueError)
        if self.signals not in SOURCES:
            raise ValueError(f"RuntimeConfig.signals must be one of {sorted(SOURCES)}, got {self.signals!r}")
