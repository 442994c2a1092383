"""The manifest: the model, the controller, and the variants and pairs it describes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from edge_runtime.bundle.records import (
    FORMAT,
    TOKENIZER,
    Pair,
    Variant,
    _check,
    _inside,
    _split,
    check_pairs,
)
from edge_runtime.errors import BundleError, VariantError


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
        sizes = {k: _check(d, k, int, where) for k in ("context_length", "num_layers", "vocab_size")}
        problems = [f"{k!r} must be a positive integer, got {v}" for k, v in sizes.items() if v < 1] + [
            f"token ids 'bos_token_id' and 'eos_token_ids' must be integers in [0, {sizes['vocab_size']}) or null, "
            f"got {t!r}" for t in (d.get("bos_token_id"), *eos)  # a bad id would fail every chat request later
            if t is not None and (isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < sizes["vocab_size"])]
        if problems:
            raise BundleError(f"{where}: {problems[0]}; re-export the bundle")
        return cls(
            source=_check(d, "source", str, where),
            architecture=_check(d, "architecture", str, where),
            params=_check(d, "params", int, where),
            **sizes,
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
        policy = None if d.get("policy") is None else _inside(d["policy"], where, "policy")
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
    pairs: tuple[Pair, ...] = ()  # speculative pairs (optional; older manifests have none)
    difficulty: dict[str, Any] | None = None  # the difficulty model: control.difficulty.DifficultyInfo reads it
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
        raw_pairs = d.get("pairs", [])
        if not isinstance(raw_pairs, list):
            raise BundleError(f"manifest: 'pairs' must be a list, got {type(raw_pairs).__name__}")
        pairs = tuple(Pair.from_dict(p, f"pair #{i}") for i, p in enumerate(raw_pairs))
        check_pairs(pairs, variants)
        _, extra = _split(d, cls)
        diff = d.get("difficulty")
        if diff is not None and not (isinstance(diff, dict) and isinstance(diff.get("model"), str)):
            raise BundleError(f"manifest: 'difficulty' must be an object with a 'model' path, got {diff!r}")
        return cls(
            model=ModelInfo.from_dict(d.get("model")),
            variants=variants,
            controller=ControllerInfo.from_dict(d.get("controller")),
            pairs=pairs,
            difficulty=diff,
            tokenizer=_inside(d.get("tokenizer", TOKENIZER), "manifest", "tokenizer"),
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
            **({"pairs": [p.to_dict() for p in self.pairs]} if self.pairs else {}),
            **({"difficulty": self.difficulty} if self.difficulty is not None else {}),
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

    @property
    def actions(self) -> tuple[str, ...]:
        """What a controller chooses among: every variant, then every speculative pair (manifest order)."""
        return self.names + tuple(p.name for p in self.pairs)

    def action_index(self, name: str) -> int:
        """Index of variant or pair `name` in `actions` (VariantError naming both lists for an unknown one)."""
        if name in self.actions:
            return self.actions.index(name)
        if not self.pairs:
            self.variant(name)  # raises the plain "unknown variant" error
        raise VariantError(f"unknown variant or pair {name!r}; this bundle has variants {list(self.names)} and "
                           f"pairs {[p.name for p in self.pairs]}")

    def slice_scores(self) -> dict[str, dict[str, float]]:
        """Action -> the harness's slice scores, for every scored variant and every pair whose
        verifier was scored (a pair's output, hence its quality, is its verifier's)."""
        scores = {v.name: dict(v.quality.scores) for v in self.variants if v.quality.scores}
        return scores | {p.name: scores[p.verifier] for p in self.pairs if p.verifier in scores}

    def pair(self, name: str) -> Pair | None:
        """The pair called `name`, or None."""
        return next((p for p in self.pairs if p.name == name), None)

    def index(self, name: str) -> int:
        return self.names.index(self.variant(name).name)

    def replace_variant(self, variant: Variant) -> Manifest:
        """A copy with the variant of the same name swapped for `variant`."""
        self.variant(variant.name)
        return replace(self, variants=tuple(variant if v.name == variant.name else v for v in self.variants))
