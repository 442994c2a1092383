"""Recipes: which variants a bundle holds (TOML, validated before any work starts).

    name = "default"
    [calibration]
    samples = 64          # calibration windows
    seq_len = 512         # tokens per window
    [evaluation]
    ppl_windows = 60      # held-out 512-token windows for the perplexity in the manifest

    [[variant]]
    name = "wanda-50"
    method = "wanda"      # dense | magnitude | wanda | sparsegpt | structured
    sparsity = 0.5        # share of decoder weights zeroed (structured: removed)
    pattern = "2:4"       # optional: semi-structured N:M
    [variant.options]     # optional: passed to export.prune.PruneConfig
    owl = true

    [recovery]            # optional: defaults of every variant's recovery (export.recover.RecoveryConfig)
    tokens = 40000        # loss tokens distilled from the dense parent
    top_k = 32            # shared by all variants: teacher logits cached once

    [[variant]]
    name = "structured-25"
    method = "structured"
    sparsity = 0.25
    recovery = { tokens = 60000 }   # `recovery = {}`: the [recovery] defaults

    [[variant]]
    name = "wanda-50-int8"
    parent = "wanda-50"   # a quantized copy of an earlier fp32 variant
    quantization = "int8" # int8 | int4 | int4-grid (a GGUF Q4_1 model's own blocks, dense parent)

    [[pair]]              # optional: a speculative pair (docs/speculative.md)
    name = "dense+sparsegpt-70"
    verifier = "dense"    # a gated variant: the pair's output is its
    drafter = "sparsegpt-70"  # a variant, or "prompt-lookup"
    k_max = 6             # most drafts per verification

Variants are exported in file order, densest first (the manifest keeps that order). Pairs
are measured (edge_runtime.engine.pairs) after the variants are written.
A variant that recovers needs the dense variant listed before it: the dense graph writes
the chat data and the teacher logits. Quantized copies are made from the recovered parent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edge_runtime.config import check_table, read_toml
from edge_runtime.errors import RecipeError, RecoveryError
from export.quantize import SCHEMES
from export.recover import SHARED_KEYS, RecoveryConfig

RECIPES = Path(__file__).parent / "recipes"
METHODS = ("dense", "magnitude", "wanda", "sparsegpt", "structured")
PATTERNS = ("2:4",)
DTYPES = ("float32", "float16")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class VariantRecipe:
    """One variant to export."""

    name: str
    method: str = "dense"  # inherited from the parent for quantized copies
    sparsity: float = 0.0
    pattern: str | None = None
    quantization: str = "none"
    parent: str | None = None  # fp32 variant this one quantizes
    options: dict[str, Any] = field(default_factory=dict)
    dtype: str = "float32"  # graph float type: float32 (CPUs), float16 (GPUs: half the bytes, tensor cores)
    recovery: RecoveryConfig | None = None  # distillation from the dense parent after pruning

    @property
    def pruned(self) -> bool:
        return self.method != "dense"

    @property
    def structured(self) -> bool:
        return self.method == "structured"

    @property
    def manifest_method(self) -> str:
        """The manifest's `method`: semi-structured variants are `2:4` (docs/DESIGN.md)."""
        return self.pattern if self.pattern else self.method


@dataclass(frozen=True)
class PairRecipe:
    """One speculative pair to declare (and measure) in the bundle."""

    name: str
    verifier: str  # a variant of this recipe
    drafter: str  # a variant of this recipe, or "prompt-lookup"
    k_max: int = 6  # most drafts per verification
    k_start: int = 3  # k before any acceptance was seen


@dataclass(frozen=True)
class Recipe:
    """A validated recipe."""

    name: str
    variants: tuple[VariantRecipe, ...]
    pairs: tuple[PairRecipe, ...] = ()
    calibration_samples: int = 64
    calibration_seq_len: int = 512
    ppl_windows: int = 60
    ppl_seq_len: int = 512
    description: str = ""
    recovery: RecoveryConfig = RecoveryConfig()  # [recovery]: defaults and the shared data settings

    @property
    def recovers(self) -> bool:
        return any(v.recovery is not None for v in self.variants)

    def without_recovery(self) -> Recipe:
        """The same recipe with every recovery off (`--recovery off`)."""
        return replace(self, variants=tuple(replace(v, recovery=None) for v in self.variants))

    def with_recovery(self, overrides: dict[str, Any]) -> Recipe:
        """Every recovering variant with `overrides` applied (`--recovery tokens=20000`)."""
        base = self.recovery.updated(overrides, where="--recovery")
        variants = tuple(replace(v, recovery=v.recovery.updated(overrides, where="--recovery"))
                         if v.recovery is not None else v for v in self.variants)
        return replace(self, recovery=base, variants=variants)

    @property
    def needs_calibration(self) -> bool:
        return any(v.method in ("wanda", "sparsegpt", "structured") and not v.parent for v in self.variants)

    def variant(self, name: str) -> VariantRecipe:
        return next(v for v in self.variants if v.name == name)

    def children(self, name: str) -> list[VariantRecipe]:
        """Quantized copies of the fp32 variant `name`."""
        return [v for v in self.variants if v.parent == name]

    @classmethod
    def from_toml(cls, path: str | Path) -> Recipe:
        known = ", ".join(sorted(p.stem for p in RECIPES.glob("*.toml")))
        data = read_toml(path, "recipe", RecipeError, missing=f"bundled recipes: {known}")
        return cls.from_dict(data, where=str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "recipe") -> Recipe:
        d = check_table(_RecipeFile, data, where, RecipeError)
        if not d.get("variant"):
            raise RecipeError(f"{where}: needs at least one [[variant]] table")
        defaults = _recovery(d.get("recovery", {}), f"{where}.recovery")
        variants: list[VariantRecipe] = []
        for i, v in enumerate(d["variant"]):
            variants.append(_variant(v, f"{where}.variant[{i}]", {x.name: x for x in variants}, defaults))
        cal, ev = d.get("calibration", {}), d.get("evaluation", {})
        names = {v.name for v in variants}
        pairs = tuple(PairRecipe(**p) for p in d.get("pair", ()))
        for i, p in enumerate(pairs):
            at = f"{where}.pair[{i}]"
            if p.verifier not in names or p.drafter not in names | {"prompt-lookup"}:
                raise RecipeError(f"{at}: verifier {p.verifier!r} and drafter {p.drafter!r} must be variants of the "
                                  "recipe (the drafter may also be 'prompt-lookup')")
            if not 0 <= p.k_start <= p.k_max or p.k_max < 1:
                raise RecipeError(f"{at}: k_max must be a positive integer and k_start in [0, k_max], got "
                                  f"{p.k_max}, {p.k_start}")
        return cls(
            pairs=pairs,
            name=d.get("name", "recipe"),
            description=d.get("description", ""),
            variants=tuple(variants),
            calibration_samples=_at_least(cal, "samples", f"{where}.calibration", 64),
            calibration_seq_len=_at_least(cal, "seq_len", f"{where}.calibration", 512),
            ppl_windows=_at_least(ev, "ppl_windows", f"{where}.evaluation", 60, minimum=0),
            ppl_seq_len=_at_least(ev, "ppl_seq_len", f"{where}.evaluation", 512),
            recovery=defaults,
        )


@dataclass(frozen=True)
class _Calibration:
    """[calibration]: the text the pruners' statistics are collected on."""

    samples: int = 64  # calibration windows
    seq_len: int = 512  # tokens per window


@dataclass(frozen=True)
class _Evaluation:
    """[evaluation]: the held-out perplexity written into the manifest."""

    ppl_windows: int = 60  # held-out windows (0: skip the perplexity)
    ppl_seq_len: int = 512  # tokens per window


@dataclass(frozen=True)
class _RecipeFile:
    """The shape of a recipe file, checked by `edge_runtime.config.check_table`."""

    name: str = "recipe"
    description: str = ""
    calibration: _Calibration = _Calibration()
    evaluation: _Evaluation = _Evaluation()
    recovery: RecoveryConfig = RecoveryConfig()  # defaults of every variant's recovery
    variant: tuple[VariantRecipe, ...] = ()  # [[variant]] tables, in export order
    pair: tuple[PairRecipe, ...] = ()  # [[pair]] tables: speculative pairs


def bundled(name: str) -> Recipe:
    """A recipe shipped in export/recipes/ by name (`default`, `quick`)."""
    return Recipe.from_toml(RECIPES / f"{name}.toml")


def load(spec: str | None) -> Recipe:
    """`spec` is a path to a TOML file or the name of a bundled recipe (None: default)."""
    if spec is None:
        return bundled("default")
    if (RECIPES / f"{spec}.toml").is_file() and not Path(spec).exists():
        return bundled(spec)
    return Recipe.from_toml(spec)


# --------------------------------------------------------------------------- validation


def _at_least(d: dict[str, int], key: str, where: str, default: int, minimum: int = 1) -> int:
    v = d.get(key, default)
    if v < minimum:
        raise RecipeError(f"{where}.{key} must be >= {minimum}, got {v}")
    return v


_RECOVERY_DEFAULTS = RecoveryConfig()


def _recovery(table: dict[str, Any], where: str, base: RecoveryConfig | None = None) -> RecoveryConfig:
    try:
        return (base or RecoveryConfig()).updated(table, where=where)
    except RecoveryError as e:
        raise RecipeError(str(e)) from e


def _variant_recovery(v: dict[str, Any], where: str, earlier: dict[str, VariantRecipe],
                      defaults: RecoveryConfig) -> RecoveryConfig | None:
    """The variant's `recovery` table (checked keys) over the [recovery] defaults; None when absent."""
    table = v.get("recovery")
    if table is None:
        return None
    if v.get("method") == "dense":
        raise RecipeError(f"{where}: a dense variant has nothing to recover; drop 'recovery'")
    if not any(e.method == "dense" and e.quantization == "none" for e in earlier.values()):
        raise RecipeError(f"{where}: recovery distils from the dense parent, but no dense variant is listed "
                          "before it; add a [[variant]] with method = \"dense\" first")
    shared = sorted(set(table) & SHARED_KEYS)
    if shared:
        raise RecipeError(f"{where}.recovery: {shared} are shared by every variant (one teacher cache); "
                          "set them in [recovery]")
    return _recovery(table, f"{where}.recovery", defaults)


def _variant(v: dict[str, Any], where: str, earlier: dict[str, VariantRecipe],
             defaults: RecoveryConfig = _RECOVERY_DEFAULTS) -> VariantRecipe:
    """One [[variant]] table (keys and types already checked) against the variants before it."""
    name = v.get("name")
    if name is None or not _NAME.match(name):
        raise RecipeError(f"{where}.name {name!r} must match {_NAME.pattern} (it becomes a directory name)")
    where = f"{where} {name!r}"
    if name in earlier:
        raise RecipeError(f"{where}: duplicate variant name; give each variant its own name")
    quant = v.get("quantization", "none")
    if quant != "none" and quant not in SCHEMES:
        raise RecipeError(f"{where}: unknown quantization {quant!r}; known: none, {', '.join(sorted(SCHEMES))}")
    dtype = v.get("dtype", "float32")
    if dtype not in DTYPES:
        raise RecipeError(f"{where}: unknown dtype {dtype!r}; known: {', '.join(DTYPES)}")
    parent = v.get("parent")
    options = v.get("options", {})
    if parent is not None:
        if parent not in earlier:
            raise RecipeError(f"{where}: parent {parent!r} must be an fp32 variant listed before it")
        base = earlier[parent]
        if base.parent is not None or base.quantization != "none":
            raise RecipeError(f"{where}: parent {parent!r} is itself quantized; name its fp32 parent")
        if quant == "none":
            raise RecipeError(f"{where}: a variant with a parent is a quantized copy: set quantization")
        if set(v) & {"method", "sparsity", "pattern", "options", "recovery"}:
            raise RecipeError(f"{where}: a quantized copy inherits method, sparsity and recovery from {parent!r}; "
                              "drop them")
        if SCHEMES[quant].grid and (base.method != "dense" or dtype != "float32"):
            raise RecipeError(f"{where}: {quant!r} reads GGUF blocks back from dense float32 weights, not from "
                              f"{base.method} ones in {dtype}; quantize it with 'int4' or 'int8'")
        return VariantRecipe(name, base.method, base.sparsity, base.pattern, quant, parent, base.options, dtype)
    method = v.get("method")
    if method not in METHODS:
        raise RecipeError(f"{where}: unknown method {method!r}; known: {', '.join(METHODS)}")
    pattern = v.get("pattern")
    if pattern is not None:
        if pattern not in PATTERNS:
            raise RecipeError(f"{where}: unknown pattern {pattern!r}; known: {', '.join(PATTERNS)}")
        if method not in ("magnitude", "wanda", "sparsegpt"):
            raise RecipeError(f"{where}: pattern {pattern!r} needs an unstructured method, not {method!r}")
        sparsity = 0.5
        if v.get("sparsity", 0.5) != 0.5:
            raise RecipeError(f"{where}: pattern 2:4 fixes sparsity at 0.5; drop 'sparsity'")
    elif method == "dense":
        sparsity = 0.0
        if "sparsity" in v:
            raise RecipeError(f"{where}: a dense variant takes no sparsity; drop 'sparsity'")
    else:
        sparsity = v.get("sparsity")
        if sparsity is None:
            raise RecipeError(f"{where}: method {method!r} needs a sparsity level in (0, 1)")
        if not 0.0 < sparsity < 1.0:
            raise RecipeError(f"{where}: sparsity must be in (0, 1), got {sparsity}")
    return VariantRecipe(name, method, sparsity, pattern, quant, None, options, dtype,
                         _variant_recovery(v, where, earlier, defaults))
