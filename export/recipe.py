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

    [[variant]]
    name = "wanda-50-int8"
    parent = "wanda-50"   # a quantized copy of an earlier fp32 variant
    quantization = "int8" # int8 | int4

Variants are exported in file order, densest first (the manifest keeps that order).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_runtime.errors import RecipeError
from export.quantize import SCHEMES

RECIPES = Path(__file__).parent / "recipes"
METHODS = ("dense", "magnitude", "wanda", "sparsegpt", "structured")
PATTERNS = ("2:4",)
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_TOP_KEYS = {"name", "description", "calibration", "evaluation", "variant"}
_VARIANT_KEYS = {"name", "method", "sparsity", "pattern", "quantization", "parent", "options"}


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
class Recipe:
    """A validated recipe."""

    name: str
    variants: tuple[VariantRecipe, ...]
    calibration_samples: int = 64
    calibration_seq_len: int = 512
    ppl_windows: int = 60
    ppl_seq_len: int = 512
    description: str = ""

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
        path = Path(path)
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in RECIPES.glob("*.toml")))
            raise RecipeError(f"recipe {str(path)!r} does not exist (bundled recipes: {known})")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise RecipeError(f"recipe {str(path)!r} is not valid TOML: {e}") from e
        return cls.from_dict(data, where=str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "recipe") -> Recipe:
        unknown = set(data) - _TOP_KEYS
        if unknown:
            raise RecipeError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_TOP_KEYS)}")
        cal = _table(data, "calibration", where, {"samples", "seq_len"})
        ev = _table(data, "evaluation", where, {"ppl_windows", "ppl_seq_len"})
        raw = data.get("variant")
        if not isinstance(raw, list) or not raw:
            raise RecipeError(f"{where}: needs at least one [[variant]] table")
        variants: list[VariantRecipe] = []
        for i, v in enumerate(raw):
            variants.append(_variant(v, f"{where}: variant #{i + 1}", {x.name: x for x in variants}))
        recipe = cls(
            name=_typed(data, "name", str, where, "recipe"),
            description=_typed(data, "description", str, where, ""),
            variants=tuple(variants),
            calibration_samples=_positive(cal, "samples", where, 64),
            calibration_seq_len=_positive(cal, "seq_len", where, 512),
            ppl_windows=_positive(ev, "ppl_windows", where, 60, minimum=0),
            ppl_seq_len=_positive(ev, "ppl_seq_len", where, 512),
        )
        return recipe


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


def _typed(d: dict[str, Any], key: str, typ: type, where: str, default: Any) -> Any:
    if key not in d:
        return default
    v = d[key]
    if typ is float and isinstance(v, int) and not isinstance(v, bool):
        v = float(v)
    if not isinstance(v, typ) or (typ is not bool and isinstance(v, bool)):
        raise RecipeError(f"{where}: {key!r} must be {typ.__name__}, got {type(v).__name__} {v!r}")
    return v


def _positive(d: dict[str, Any], key: str, where: str, default: int, minimum: int = 1) -> int:
    v = _typed(d, key, int, where, default)
    if v < minimum:
        raise RecipeError(f"{where}: {key!r} must be >= {minimum}, got {v}")
    return v


def _table(d: dict[str, Any], key: str, where: str, allowed: set[str]) -> dict[str, Any]:
    t = d.get(key, {})
    if not isinstance(t, dict):
        raise RecipeError(f"{where}: [{key}] must be a table")
    unknown = set(t) - allowed
    if unknown:
        raise RecipeError(f"{where}: unknown key(s) {sorted(unknown)} in [{key}]; allowed: {sorted(allowed)}")
    return t


def _variant(v: Any, where: str, earlier: dict[str, VariantRecipe]) -> VariantRecipe:
    if not isinstance(v, dict):
        raise RecipeError(f"{where}: must be a table")
    unknown = set(v) - _VARIANT_KEYS
    if unknown:
        raise RecipeError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_VARIANT_KEYS)}")
    name = _typed(v, "name", str, where, None)
    if name is None or not _NAME.match(name):
        raise RecipeError(f"{where}: name {name!r} must match {_NAME.pattern} (it becomes a directory name)")
    where = f"{where} {name!r}"
    if name in earlier:
        raise RecipeError(f"{where}: duplicate variant name")
    quant = _typed(v, "quantization", str, where, "none")
    if quant != "none" and quant not in SCHEMES:
        raise RecipeError(f"{where}: unknown quantization {quant!r}; known: none, {', '.join(sorted(SCHEMES))}")
    parent = _typed(v, "parent", str, where, None)
    options = _typed(v, "options", dict, where, {})
    if parent is not None:
        if parent not in earlier:
            raise RecipeError(f"{where}: parent {parent!r} must be an fp32 variant listed before it")
        base = earlier[parent]
        if base.parent is not None or base.quantization != "none":
            raise RecipeError(f"{where}: parent {parent!r} is itself quantized; name its fp32 parent")
        if quant == "none":
            raise RecipeError(f"{where}: a variant with a parent is a quantized copy: set quantization")
        if set(v) & {"method", "sparsity", "pattern", "options"}:
            raise RecipeError(f"{where}: a quantized copy inherits method and sparsity from {parent!r}; drop them")
        return VariantRecipe(name, base.method, base.sparsity, base.pattern, quant, parent, base.options)
    method = _typed(v, "method", str, where, None)
    if method not in METHODS:
        raise RecipeError(f"{where}: unknown method {method!r}; known: {', '.join(METHODS)}")
    pattern = _typed(v, "pattern", str, where, None)
    if pattern is not None:
        if pattern not in PATTERNS:
            raise RecipeError(f"{where}: unknown pattern {pattern!r}; known: {', '.join(PATTERNS)}")
        if method not in ("magnitude", "wanda", "sparsegpt"):
            raise RecipeError(f"{where}: pattern {pattern!r} needs an unstructured method, not {method!r}")
        sparsity = 0.5
        if "sparsity" in v and _typed(v, "sparsity", float, where, 0.5) != 0.5:
            raise RecipeError(f"{where}: pattern 2:4 fixes sparsity at 0.5; drop 'sparsity'")
    elif method == "dense":
        sparsity = 0.0
        if "sparsity" in v:
            raise RecipeError(f"{where}: a dense variant takes no sparsity")
    else:
        sparsity = _typed(v, "sparsity", float, where, None)
        if sparsity is None:
            raise RecipeError(f"{where}: method {method!r} needs a sparsity level in (0, 1)")
        if not 0.0 < sparsity < 1.0:
            raise RecipeError(f"{where}: sparsity must be in (0, 1), got {sparsity}")
    return VariantRecipe(name, method, sparsity, pattern, quant, None, options)
