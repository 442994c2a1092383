"""The records of a manifest: a variant (its parity, quality, cost, gate) and a speculative pair."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

from edge_runtime.errors import BundleError

FORMAT = "edge-bundle/1"
MANIFEST = "manifest.json"
TOKENIZER = "tokenizer.json"
POLICY = "controller/policy.onnx"
DIFFICULTY_MODEL = "controller/difficulty.npz"

METHODS = ("dense", "magnitude", "wanda", "sparsegpt", "2:4", "structured")
QUANTIZATIONS = ("none", "int8", "int4")
GATE_STATUSES = ("pass", "fail", "pending")


# --------------------------------------------------------------------------- helpers


def _check(d: dict[str, Any], key: str, types: type | tuple[type, ...], where: str) -> Any:
    if key not in d:
        raise BundleError(f"{where}: missing key {key!r}; re-export the bundle with edge-export")
    value = d[key]
    # bool is an int subclass: never accept it where a number is meant, and vice versa
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        ok = False
    else:
        ok = isinstance(value, types)
    if not ok:
        names = types.__name__ if isinstance(types, type) else "/".join(t.__name__ for t in types)
        raise BundleError(f"{where}: {key!r} must be {names}, got {type(value).__name__} {value!r}")
    return value


def _inside(path: Any, where: str, key: str) -> str:
    """`path` if it is a relative path that stays inside the bundle (no absolute path, no `..`)."""
    posix = PurePosixPath(str(path).replace("\\", "/"))
    if not isinstance(path, str) or not path.strip() or posix.is_absolute() or ".." in posix.parts \
            or PureWindowsPath(path).drive:
        raise BundleError(f"{where}: {key!r} must be a relative path inside the bundle (no '..'), got {path!r}")
    return path


def _opt_float(d: dict[str, Any], key: str, where: str) -> float | None:
    if d.get(key) is None:
        return None
    return float(_check(d, key, (int, float), where))


def _split(d: dict[str, Any], cls: type) -> tuple[dict[str, Any], dict[str, Any]]:
    """Known keys of dataclass `cls` and the rest."""
    names = {f.name for f in fields(cls)} - {"extra"}
    return {k: v for k, v in d.items() if k in names}, {k: v for k, v in d.items() if k not in names}


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else x


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Parity:
    """Max abs logit difference between the ONNX graph (ORT) and the torch model."""

    prefill_max_abs: float | None = None
    decode_max_abs: float | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str) -> Parity:
        return cls(_opt_float(d, "prefill_max_abs", where), _opt_float(d, "decode_max_abs", where))


@dataclass(frozen=True)
class Quality:
    """Held-out perplexity and harness scores (0-1 per dimension or slice)."""

    perplexity: float | None = None
    scores: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str) -> Quality:
        known, extra = _split(d, cls)
        scores = known.get("scores", {}) or {}
        if not isinstance(scores, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in scores.values()
        ):
            raise BundleError(f"{where}: 'scores' must map names to numbers, got {scores!r}")
        return cls(_opt_float(d, "perplexity", where), {k: float(v) for k, v in scores.items()}, extra)


@dataclass(frozen=True)
class Cost:
    """Measured on the machine that built the bundle (ORT CPU unless `extra` says else)."""

    prefill_ms_per_token: float | None = None
    decode_ms_per_token: float | None = None
    peak_rss_mb: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str) -> Cost:
        _, extra = _split(d, cls)
        return cls(
            _opt_float(d, "prefill_ms_per_token", where),
            _opt_float(d, "decode_ms_per_token", where),
            _opt_float(d, "peak_rss_mb", where),
            extra,
        )

    @property
    def measured(self) -> bool:
        return self.prefill_ms_per_token is not None and self.decode_ms_per_token is not None


@dataclass(frozen=True)
class Gate:
    """Deployment gate: `pass`, `fail` (with the failing dimensions) or `pending` (not yet evaluated)."""

    status: str = "pending"
    failed: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str) -> Gate:
        status = _check(d, "status", str, where)
        if status not in GATE_STATUSES:
            raise BundleError(f"{where}: gate status must be one of {GATE_STATUSES}, got {status!r}")
        failed = d.get("failed", [])
        if not isinstance(failed, list) or not all(isinstance(x, str) for x in failed):
            raise BundleError(f"{where}: gate 'failed' must be a list of dimension names, got {failed!r}")
        _, extra = _split(d, cls)
        return cls(status, tuple(failed), extra)


@dataclass(frozen=True)
class Recovery:
    """How a pruned variant was distilled from its dense parent; absent (old manifests too): not recovered."""

    tokens: int  # loss tokens trained on
    steps: int  # optimizer steps
    seconds: float  # wall time of the distillation (teacher data not included)
    data: dict[str, int] = field(default_factory=dict)  # loss tokens per source: chat, prose
    extra: dict[str, Any] = field(default_factory=dict)  # config, losses, peak memory ...

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str) -> Recovery:
        where, data = f"{where}: recovery", d.get("data") or {}
        if not isinstance(data, dict) or not all(isinstance(v, int) and not isinstance(v, bool) for v in data.values()):
            raise BundleError(f"{where}: 'data' must map sources to token counts, got {data!r}")
        return cls(_check(d, "tokens", int, where), _check(d, "steps", int, where),
                   float(_check(d, "seconds", (int, float), where)), dict(data), _split(d, cls)[1])

    def to_dict(self) -> dict[str, Any]:
        return {"tokens": self.tokens, "steps": self.steps, "seconds": self.seconds, "data": dict(self.data), **self.extra}


@dataclass(frozen=True)
class Variant:
    """One exported model in the bundle (docs/DESIGN.md, section 3)."""

    name: str
    method: str  # dense | magnitude | wanda | sparsegpt | 2:4 | structured
    sparsity: float  # share of decoder weights removed (structured) or zero (unstructured)
    structured: bool
    quantization: str  # none | int8 | int4 | int4-grid
    parent: str | None  # the fp32 variant a quantized one was made from
    onnx: str  # path relative to the bundle root
    params: int  # parameters stored (structured variants have fewer)
    nonzero_params: int
    file_bytes: int  # model.onnx plus its external data
    parity: Parity = field(default_factory=Parity)
    quality: Quality = field(default_factory=Quality)
    cost: Cost = field(default_factory=Cost)
    gate: Gate = field(default_factory=Gate)
    recovery: Recovery | None = None  # set when the variant was distilled after pruning
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "variant") -> Variant:
        if not isinstance(d, dict):
            raise BundleError(f"{where}: a variant must be a JSON object, got {type(d).__name__}")
        name = _check(d, "name", str, where)
        where = f"{where} {name!r}"
        method = _check(d, "method", str, where)
        sparsity = float(_check(d, "sparsity", (int, float), where))
        if not 0.0 <= sparsity < 1.0:
            raise BundleError(f"{where}: sparsity must be in [0, 1), got {sparsity}")
        parent = d.get("parent")
        if parent is not None and not isinstance(parent, str):
            raise BundleError(f"{where}: 'parent' must be a variant name or null, got {parent!r}")
        known, extra = _split(d, cls)
        return cls(
            name=name,
            method=method,
            sparsity=sparsity,
            structured=_check(d, "structured", bool, where),
            quantization=_check(d, "quantization", str, where),
            parent=parent,
            onnx=_inside(_check(d, "onnx", str, where), where, "onnx"),
            params=_check(d, "params", int, where),
            nonzero_params=_check(d, "nonzero_params", int, where),
            file_bytes=_check(d, "file_bytes", int, where),
            parity=Parity.from_dict(known.get("parity") or {}, where),
            quality=Quality.from_dict(known.get("quality") or {}, where),
            cost=Cost.from_dict(known.get("cost") or {}, where),
            gate=Gate.from_dict(known.get("gate") or {"status": "pending"}, where),
            recovery=Recovery.from_dict(_check(d, "recovery", dict, where), where) if known.get("recovery") else None,
            extra=extra,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "method": self.method,
            "sparsity": self.sparsity,
            "structured": self.structured,
            "quantization": self.quantization,
            "parent": self.parent,
            "onnx": self.onnx,
            "params": self.params,
            "nonzero_params": self.nonzero_params,
            "file_bytes": self.file_bytes,
            "parity": {
                "prefill_max_abs": _finite(self.parity.prefill_max_abs),
                "decode_max_abs": _finite(self.parity.decode_max_abs),
            },
            "quality": {
                "perplexity": _finite(self.quality.perplexity),
                "scores": dict(self.quality.scores),
                **self.quality.extra,
            },
            "cost": {
                "prefill_ms_per_token": self.cost.prefill_ms_per_token,
                "decode_ms_per_token": self.cost.decode_ms_per_token,
                "peak_rss_mb": self.cost.peak_rss_mb,
                **self.cost.extra,
            },
            "gate": {"status": self.gate.status, "failed": list(self.gate.failed), **self.gate.extra},
            **({"recovery": self.recovery.to_dict()} if self.recovery else {}),
            **self.extra,
        }

    @property
    def passed(self) -> bool:
        """True unless the evaluation gate failed (`pending` bundles are servable)."""
        return self.gate.status != "fail"


PROMPT_LOOKUP = "prompt-lookup"  # a pair's drafter that is no model (n-grams of the prompt and the text)


@dataclass(frozen=True)
class Pair:
    """A speculative pair: `drafter` proposes tokens that the gated `verifier` checks, so the
    output (and its quality) is the verifier's at (ideally) the drafter's speed."""

    name: str  # the action's name, e.g. "dense+sparsegpt-70"
    verifier: str  # a variant name
    drafter: str  # a variant name, or "prompt-lookup"
    k_max: int = 6  # most drafts per verification (k adapts below it)
    k_start: int = 3  # k before any acceptance was seen
    cost: Cost = field(default_factory=Cost)  # decode_ms_per_token of the pair, measured as a whole
    acceptance: float | None = None  # share of drafts kept, measured with the cost
    extra: dict[str, Any] = field(default_factory=dict)  # draft_ratio, verify_slope, ...

    @classmethod
    def from_dict(cls, d: Any, where: str = "pair") -> Pair:
        if not isinstance(d, dict):
            raise BundleError(f"{where}: a pair must be a JSON object, got {type(d).__name__}")
        name = _check(d, "name", str, where)
        where = f"{where} {name!r}"
        k_max = d.get("k_max", 6)
        k_start = d.get("k_start", min(3, k_max) if isinstance(k_max, int) else 3)
        for key, k in (("k_max", k_max), ("k_start", k_start)):
            if isinstance(k, bool) or not isinstance(k, int) or k < (1 if key == "k_max" else 0):
                raise BundleError(f"{where}: {key} must be a positive integer, got {k!r}; use 1..8")
        if k_start > k_max:
            raise BundleError(f"{where}: k_start ({k_start}) is above k_max ({k_max})")
        acceptance = _opt_float(d, "acceptance", where)
        if acceptance is not None and not 0.0 <= acceptance <= 1.0:
            raise BundleError(f"{where}: acceptance must be in [0, 1], got {acceptance}")
        known, extra = _split(d, cls)
        return cls(name, _check(d, "verifier", str, where), _check(d, "drafter", str, where), k_max, k_start,
                   Cost.from_dict(known.get("cost") or {}, where), acceptance, extra)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "verifier": self.verifier, "drafter": self.drafter, "k_max": self.k_max,
                "k_start": self.k_start, "acceptance": self.acceptance,
                "cost": {"prefill_ms_per_token": self.cost.prefill_ms_per_token,
                         "decode_ms_per_token": self.cost.decode_ms_per_token,
                         "peak_rss_mb": self.cost.peak_rss_mb, **self.cost.extra},
                **self.extra}


def check_pairs(pairs: tuple[Pair, ...], variants: tuple[Variant, ...]) -> None:
    """Refuse pairs that name an unknown verifier or drafter, or a taken name.

    A gate-failed verifier is not refused here (edge-eval must be able to write its verdict
    into a manifest with pairs): the pool refuses to serve such a pair (`VariantPool.why_not_pair`).
    """
    names = {v.name: v for v in variants}
    seen: set[str] = set()
    for p in pairs:
        where = f"pair {p.name!r}"
        if p.name in names or p.name in seen:
            raise BundleError(f"{where}: the name is already taken by a variant or another pair; rename it")
        seen.add(p.name)
        if p.verifier not in names:
            raise BundleError(f"{where}: verifier {p.verifier!r} is not a variant of the bundle "
                              f"({sorted(names)}); fix the recipe's [[pair]] table")
        if p.drafter != PROMPT_LOOKUP and p.drafter not in names:
            raise BundleError(f"{where}: drafter {p.drafter!r} is neither {PROMPT_LOOKUP!r} nor a variant of the "
                              f"bundle ({sorted(names)})")
        if p.drafter == p.verifier:
            raise BundleError(f"{where}: the drafter is the verifier; a pair needs a cheaper drafter")
