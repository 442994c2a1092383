"""The bundle: `manifest.json`, `tokenizer.json`, one ONNX graph per variant, a policy.

Format `edge-bundle/1` (docs/DESIGN.md, section 3). This module is the one reader and
writer of that format; export, evaluation, training and serving all go through it.

    bundle/
      manifest.json
      tokenizer.json
      variants/<name>/model.onnx (+ model.onnx.data)
      controller/policy.onnx       # optional

Readers reject an unknown `format`, a missing file, or a malformed entry with a
`BundleError` that names the key and the fix. Unknown keys are kept (`extra`) so that a
newer writer's additions survive a round trip through an older reader.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from edge_runtime.errors import BundleError, VariantError

FORMAT = "edge-bundle/1"
MANIFEST = "manifest.json"
TOKENIZER = "tokenizer.json"
POLICY = "controller/policy.onnx"

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
    quantization: str  # none | int8 | int4
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
            onnx=_check(d, "onnx", str, where),
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


@dataclass(frozen=True)
class ModelInfo:
    """What the variants were made from."""

    source: str  # "smollm2-135m", a directory, or a .gguf path
    architecture: str  # e.g. "LlamaForCausalLM"
    params: int
    context_length: int
    num_layers: int
    vocab_size: int
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    chat_template: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelInfo:
        where = "manifest 'model'"
        if not isinstance(d, dict):
            raise BundleError(f"{where} must be a JSON object, got {type(d).__name__}")
        eos = d.get("eos_token_ids", [])
        if not isinstance(eos, list) or not all(isinstance(x, int) for x in eos):
            raise BundleError(f"{where}: 'eos_token_ids' must be a list of ints, got {eos!r}")
        tpl = d.get("chat_template")
        if tpl is not None and not isinstance(tpl, str):
            raise BundleError(f"{where}: 'chat_template' must be a string or null")
        _, extra = _split(d, cls)
        return cls(
            source=_check(d, "source", str, where),
            architecture=_check(d, "architecture", str, where),
            params=_check(d, "params", int, where),
            context_length=_check(d, "context_length", int, where),
            num_layers=_check(d, "num_layers", int, where),
            vocab_size=_check(d, "vocab_size", int, where),
            bos_token_id=d.get("bos_token_id"),
            eos_token_ids=tuple(eos),
            chat_template=tpl,
            extra=extra,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "architecture": self.architecture,
            "params": self.params,
            "context_length": self.context_length,
            "num_layers": self.num_layers,
            "vocab_size": self.vocab_size,
            "bos_token_id": self.bos_token_id,
            "eos_token_ids": list(self.eos_token_ids),
            "chat_template": self.chat_template,
            **self.extra,
        }


@dataclass(frozen=True)
class ControllerInfo:
    """The trained policy, if any: `policy` is None when the rule controller decides."""

    policy: str | None = None  # path relative to the bundle root
    observation: tuple[str, ...] = ()  # feature names, in the encoder's order
    actions: tuple[str, ...] = ()  # action index -> variant name
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> ControllerInfo:
        if d is None:
            return cls()
        where = "manifest 'controller'"
        if not isinstance(d, dict):
            raise BundleError(f"{where} must be a JSON object or null, got {type(d).__name__}")
        policy = d.get("policy")
        if policy is not None and not isinstance(policy, str):
            raise BundleError(f"{where}: 'policy' must be a path or null, got {policy!r}")
        obs, acts = d.get("observation", []), d.get("actions", [])
        for key, val in (("observation", obs), ("actions", acts)):
            if not isinstance(val, list) or not all(isinstance(x, str) for x in val):
                raise BundleError(f"{where}: {key!r} must be a list of names, got {val!r}")
        _, extra = _split(d, cls)
        return cls(policy, tuple(obs), tuple(acts), extra)

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "observation": list(self.observation),
            "actions": list(self.actions),
            **self.extra,
        }


@dataclass(frozen=True)
class Manifest:
    """Everything `manifest.json` says about a bundle."""

    model: ModelInfo
    variants: tuple[Variant, ...]  # densest first
    controller: ControllerInfo = field(default_factory=ControllerInfo)
    tokenizer: str = TOKENIZER
    format: str = FORMAT
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any) -> Manifest:
        if not isinstance(d, dict):
            raise BundleError(f"manifest must be a JSON object, got {type(d).__name__}")
        fmt = d.get("format")
        if fmt != FORMAT:
            raise BundleError(
                f"unknown bundle format {fmt!r}: this runtime reads {FORMAT!r}; "
                "re-export the bundle with this version's edge-export"
            )
        raw = d.get("variants")
        if not isinstance(raw, list) or not raw:
            raise BundleError("manifest: 'variants' must be a non-empty list; re-export the bundle")
        variants = tuple(Variant.from_dict(v, f"variant #{i}") for i, v in enumerate(raw))
        names = [v.name for v in variants]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise BundleError(f"manifest: duplicate variant names {dupes}")
        for v in variants:
            if v.parent is not None and v.parent not in names:
                raise BundleError(f"variant {v.name!r}: parent {v.parent!r} is not in the bundle")
        _, extra = _split(d, cls)
        return cls(
            model=ModelInfo.from_dict(d.get("model")),
            variants=variants,
            controller=ControllerInfo.from_dict(d.get("controller")),
            tokenizer=d.get("tokenizer", TOKENIZER),
            format=fmt,
            extra=extra,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "model": self.model.to_dict(),
            "tokenizer": self.tokenizer,
            "variants": [v.to_dict() for v in self.variants],
            "controller": self.controller.to_dict(),
            **self.extra,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    # -- lookups

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.variants)

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise VariantError(f"unknown variant {name!r}; this bundle has {list(self.names)}")

    def index(self, name: str) -> int:
        return self.names.index(self.variant(name).name)

    def replace_variant(self, variant: Variant) -> Manifest:
        """A copy with the variant of the same name swapped for `variant`."""
        self.variant(variant.name)
        return replace(self, variants=tuple(variant if v.name == variant.name else v for v in self.variants))


# --------------------------------------------------------------------------- files


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write `text` to `path` through a temp file in the same directory and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_directory(target: str | os.PathLike[str], force: bool = False) -> Iterator[Path]:
    """Build a directory in a sibling temp dir; move it into place only if the block succeeds.

    On error the temp dir is removed and `target` is untouched. With `force`, an existing
    `target` is replaced (renamed aside first, deleted after the new one is in place).
    """
    target = Path(target)
    if target.exists() and not force:
        raise BundleError(f"output directory {str(target)!r} exists; pass --force to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        yield tmp
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_manifest(bundle_dir: str | os.PathLike[str]) -> Manifest:
    """Parse and validate `bundle_dir/manifest.json` (files are not checked; see `check_files`)."""
    root = Path(bundle_dir)
    if not root.is_dir():
        raise BundleError(f"bundle directory {str(root)!r} does not exist; build one with edge-export")
    path = root / MANIFEST
    if not path.is_file():
        raise BundleError(f"{str(path)!r} is missing: {str(root)!r} is not a bundle; build one with edge-export")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{str(path)!r} is not valid JSON ({e}); re-export the bundle") from e
    return Manifest.from_dict(data)


def write_manifest(bundle_dir: str | os.PathLike[str], manifest: Manifest) -> None:
    """Validate `manifest` by round-tripping it, then write it atomically."""
    text = manifest.to_json()
    Manifest.from_dict(json.loads(text))
    atomic_write_text(Path(bundle_dir) / MANIFEST, text)


def check_files(bundle_dir: str | os.PathLike[str], manifest: Manifest) -> None:
    """Raise `BundleError` naming the first file the manifest points to that is missing."""
    root = Path(bundle_dir)
    wanted = [manifest.tokenizer] + [v.onnx for v in manifest.variants]
    if manifest.controller.policy:
        wanted.append(manifest.controller.policy)
    for rel in wanted:
        if not (root / rel).is_file():
            raise BundleError(f"bundle {str(root)!r} is missing {rel!r}; re-export the bundle with edge-export")


def file_bytes(onnx_path: str | os.PathLike[str]) -> int:
    """Bytes on disk of an ONNX file and every sibling external-data file it owns."""
    p = Path(onnx_path)
    return sum(f.stat().st_size for f in p.parent.iterdir() if f.name.startswith(p.name))
