"""Deployment floors, the gate, and per-profile gating of the whole system.

Floors live in a versioned TOML file (`edge-floors/1`) that `edge-eval --set-floors` writes
from the **dense** variant alone, before any pruned result exists. The rule (`FloorRule`):

- quality dimensions (the slices, `format`, `instruction`):
  `floor = min(dense, max(chance, dense - margin))`, `margin = max(min_margin, z * sqrt(p(1-p)/n))`
  with p the dense score and n the number of cases: a variant fails a dimension only if it
  drops by more than the suite can resolve (about two standard errors) or `min_margin`,
  whichever is larger. Defaults: `min_margin` 0.05, z 2.0.
- `ppl_retention` (dense perplexity / variant perplexity): a fixed floor, 0.5 by default,
  i.e. held-out perplexity at most twice the dense model's.
- cost dimensions (`latency`, `size`, variant / dense): ceilings, 1.10 and 1.05 by default:
  a variant slower or larger than dense beyond measurement noise has no reason to ship.
- tiers (`normal`, `saver`, `critical`, `edge_runtime.control.tiers.TIERS`): the same rule with
  a margin widened by `FloorRule.tier_widen` per tier (0, 0.05, 0.15 by default) and a lower
  `ppl_retention` floor (`tier_ppl`: 0.5, 0.4, 0.3), so `normal` is exactly [floors] and each
  later tier accepts a larger, declared drop when the device is short of power or heat.
  Ceilings apply to every tier. The gate records the tiers a variant clears (`gate.tiers`).
- per-profile floors on the controller's delivered per-slice quality:
  `max(chance, dense - profile_margin)`, profile_margin 0.15 by default, in
  `[profiles.default]`; add `[profiles.<name>]` tables by hand for stricter profiles.

A variant passes only if every floored dimension is at or above its floor and every
ceilinged one at or below its ceiling; the gate lists the dimensions that failed.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_runtime.bundle import Gate, atomic_write_text
from edge_runtime.config import check_table, read_toml
from edge_runtime.control import tiers as _tiers
from edge_runtime.control.tiers import TIERS
from edge_runtime.errors import EvalError
from harness.suite import SLICES

log = logging.getLogger(__name__)

FLOORS_FORMAT = "edge-floors/1"
_EPS = 1e-9  # scores are ratios of small integers: compare with a hair of slack


@dataclass(frozen=True)
class Dimension:
    """One gated dimension of a variant's scores."""

    name: str
    kind: str  # "floor" (higher is better, 0-1) | "ceiling" (a cost relative to dense)
    description: str


DIMENSIONS: dict[str, Dimension] = {
    d.name: d
    for d in (
        Dimension("common", "floor", "accuracy on everyday completions and questions"),
        Dimension("edge", "floor", "accuracy on rare entities, multi-step and long prompts"),
        Dimension("adversarial", "floor", "accuracy with distractors, near-miss options, format traps"),
        Dimension("multilingual", "floor", "accuracy in French, Spanish, German and Swahili"),
        Dimension("format", "floor", "share of outputs in the asked-for form (JSON, N items, ...)"),
        Dimension("instruction", "floor", "share of instruction-tagged cases whose instruction was followed"),
        Dimension("ppl_retention", "floor", "dense held-out perplexity / variant perplexity (capped at 1)"),
        Dimension("latency", "ceiling", "ms per token of a reference request, variant / dense"),
        Dimension("size", "ceiling", "bytes on disk, variant / dense"),
    )
}
QUALITY = tuple(n for n, d in DIMENSIONS.items() if d.kind == "floor" and n != "ppl_retention")


@dataclass(frozen=True)
class FloorRule:
    """The margins `set_floors` applies to the dense scores (see the module docstring)."""

    min_margin: float = 0.05  # smallest drop from dense a quality floor tolerates
    z: float = 2.0  # standard errors of the dense score a quality floor tolerates
    ppl_retention: float = 0.5  # floor on dense_ppl / variant_ppl
    latency: float = 1.10  # ceiling on variant / dense latency
    size: float = 1.05  # ceiling on variant / dense bytes
    profile_margin: float = 0.15  # drop from dense the delivered per-slice quality may show
    tier_widen: tuple[float, ...] = (0.0, 0.05, 0.15)  # extra quality margin per tier, in TIERS order
    tier_ppl: tuple[float, ...] = (0.5, 0.4, 0.3)  # ppl_retention floor per tier, in TIERS order

    def margin(self, p: float, n: int) -> float:
        return max(self.min_margin, self.z * math.sqrt(max(p * (1 - p), 0.0) / max(n, 1)))

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else float(v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class Floors:
    """A parsed floors file."""

    floors: dict[str, float]  # dimension -> minimum score
    ceilings: dict[str, float] = field(default_factory=dict)  # dimension -> maximum relative cost
    profiles: dict[str, dict[str, float]] = field(default_factory=dict)  # profile -> slice -> floor
    tiers: dict[str, dict[str, float]] = field(default_factory=dict)  # tier -> dimension -> floor
    version: int = 1  # bumped each time --set-floors rewrites the file
    suite_version: str = ""  # the suite these floors were measured on
    model: str = ""  # the model source the dense scores came from
    created: str = ""
    dense: dict[str, float] = field(default_factory=dict)  # the dense scores the floors came from
    margins: dict[str, float] = field(default_factory=dict)  # dense - floor, per dimension
    rule: dict[str, Any] = field(default_factory=dict)  # the FloorRule used
    path: str = ""

    def profile(self, name: str) -> dict[str, float]:
        """Per-slice floors for a resource profile: its own table, else `default`, else none."""
        return self.profiles.get(name, self.profiles.get("default", {}))

    def tier(self, name: str) -> dict[str, float]:
        """Floors of tier `name`; EvalError for a tier the file does not declare."""
        if name not in self.tiers:
            raise EvalError(f"{self.path}: no [tiers.{name}] table (declared: {list(self.tiers)}); "
                            "set floors again with edge-eval --set-floors")
        return self.tiers[name]

    @property
    def dimensions(self) -> tuple[str, ...]:
        return tuple(self.floors) + tuple(self.ceilings)

    # -- files

    @classmethod
    def from_toml(cls, path: str | Path) -> Floors:
        data = read_toml(path, "floors file", EvalError, missing="write one with edge-eval --bundle DIR --set-floors")
        return cls.from_dict(data, str(path))

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "floors") -> Floors:
        d = check_table(cls, d, where, EvalError, skip=("path",), extra={"format": str})
        if d.get("format") != FLOORS_FORMAT:
            raise EvalError(f"{where}: format must be {FLOORS_FORMAT!r}, got {d.get('format')!r}; rewrite it with --set-floors")
        version = d.get("version", 1)
        if version < 1:
            raise EvalError(f"{where}.version must be a positive integer, got {version!r}")
        floors = _table(d, "floors", where, "floor")
        ceilings = _table(d, "ceilings", where, "ceiling")
        if not floors and not ceilings:
            raise EvalError(f"{where}: no [floors] or [ceilings]: nothing to gate on")
        profiles: dict[str, dict[str, float]] = {}
        for name, tbl in d.get("profiles", {}).items():
            bad = sorted(set(tbl) - set(SLICES))
            if bad:
                raise EvalError(f"{where}: [profiles.{name}] names unknown slices {bad}; use {list(SLICES)}")
            profiles[name] = {k: _unit(v, f"{where}: [profiles.{name}] {k}") for k, v in tbl.items()}
        tiers = _tier_tables(d.get("tiers", {}), floors, where)
        return cls(
            floors=floors, ceilings=ceilings, profiles=profiles, tiers=tiers, version=version,
            suite_version=d.get("suite_version", ""), model=d.get("model", ""), created=d.get("created", ""),
            dense=d.get("dense", {}), margins=d.get("margins", {}), rule=d.get("rule", {}), path=where,
        )

    def to_toml(self) -> str:
        lines = [
            "# Deployment floors for edge-eval. Written by `edge-eval --set-floors` from the dense",
            "# variant only (never from pruned results); see harness/floors.py for the rule.",
            "# A variant passes if every [floors] score is >= its floor and every [ceilings] cost",
            "# (relative to dense) is <= its ceiling.",
            f'format = "{FLOORS_FORMAT}"',
            f"version = {self.version}",
            f"suite_version = {_q(self.suite_version)}",
            f"model = {_q(self.model)}",
            f"created = {_q(self.created)}",
        ]
        for name, tbl, note in (
            ("rule", self.rule, "the FloorRule that produced these floors"),
            ("dense", self.dense, "dense scores the floors were derived from"),
            ("margins", self.margins, "dense - floor"),
            ("floors", self.floors, "minimum score per dimension"),
            ("ceilings", self.ceilings, "maximum cost relative to dense"),
        ):
            if tbl:
                lines += ["", f"[{name}]  # {note}"] + [f"{k} = {_num(v)}" for k, v in tbl.items()]
        for tier, tbl in self.tiers.items():
            lines += ["", f"[tiers.{tier}]  # floors a variant must clear to be offered in this tier"]
            lines += [f"{k} = {_num(v)}" for k, v in tbl.items()]
        for prof, tbl in self.profiles.items():
            lines += ["", f"[profiles.{_key(prof)}]  # delivered per-slice quality under this profile"]
            lines += [f"{k} = {_num(v)}" for k, v in tbl.items()]
        return "\n".join(lines) + "\n"

    def write(self, path: str | Path) -> None:
        """Validate by parsing back, then write atomically."""
        text = self.to_toml()
        Floors.from_dict(tomllib.loads(text), str(path))
        atomic_write_text(path, text)


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _key(s: str) -> str:
    return s if all(c.isalnum() or c in "-_" for c in s) else _q(s)


def _num(v: float | list[float]) -> str:
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_num(x) for x in v) + "]"
    return repr(round(float(v), 4))


def _unit(v: float, where: str) -> float:
    if not 0.0 <= v <= 1.0:
        raise EvalError(f"{where} must be a number in [0, 1], got {v!r}")
    return v


def _table(d: dict[str, Any], key: str, where: str, kind: str) -> dict[str, float]:
    """The dimensions of [floors] or [ceilings] (`d` is type-checked: values are floats)."""
    tbl = d.get(key, {})
    out: dict[str, float] = {}
    for name, v in tbl.items():
        dim = DIMENSIONS.get(name)
        if dim is None:
            raise EvalError(f"{where}: [{key}] names unknown dimension {name!r}; known: {list(DIMENSIONS)}")
        if dim.kind != kind:
            other = "ceilings" if kind == "floor" else "floors"
            raise EvalError(f"{where}: {name!r} is a {dim.kind} dimension; move it from [{key}] to [{other}]")
        if kind == "floor":
            out[name] = _unit(v, f"{where}: [{key}] {name}")
        elif v <= 0:
            raise EvalError(f"{where}: [{key}] {name} must be a positive number, got {v!r}")
        else:
            out[name] = v
    return out


def _tier_tables(raw: Any, floors: dict[str, float], where: str) -> dict[str, dict[str, float]]:
    """[tiers.<tier>] tables: known tiers only, each flooring exactly the dimensions [floors] does."""
    if not isinstance(raw, dict):
        raise EvalError(f"{where}: 'tiers' must be tables [tiers.<name>], got {raw!r}")
    out: dict[str, dict[str, float]] = {}
    for name, tbl in raw.items():
        _tiers.check_tier(name, f"{where}: [tiers.{name}]", allow_auto=False)
        if not isinstance(tbl, dict):
            raise EvalError(f"{where}: [tiers.{name}] must be a table of dimension = floor, got {tbl!r}")
        unknown = sorted(set(tbl) - set(floors))
        if unknown:
            raise EvalError(f"{where}: [tiers.{name}] names unknown dimensions {unknown}; a tier floors the "
                            f"dimensions of [floors]: {list(floors)}")
        missing = [k for k in floors if k not in tbl]
        if missing:
            raise EvalError(f"{where}: [tiers.{name}] lacks dimensions {missing}; give every dimension of [floors] "
                            "a floor in each tier (or set floors again with edge-eval --set-floors)")
        out[name] = {k: _unit(float(v), f"{where}: [tiers.{name}] {k}") for k, v in tbl.items()}
    return {t: out[t] for t in TIERS if t in out}


# --------------------------------------------------------------------------- setting floors


def set_floors(
    dense: Mapping[str, float],
    counts: Mapping[str, int],
    chance: Mapping[str, float],
    rule: FloorRule = FloorRule(),
    *,
    suite_version: str = "",
    model: str = "",
    previous: Floors | None = None,
) -> Floors:
    """Floors from the dense model's scores (`counts`: cases per dimension; `chance`: per slice).

    `previous` (the file being replaced, if any) only supplies the version to bump and any
    hand-written per-profile tables other than `default`.
    """
    if len(rule.tier_widen) != len(TIERS) or len(rule.tier_ppl) != len(TIERS):
        raise EvalError(f"FloorRule.tier_widen and tier_ppl need one value per tier {list(TIERS)}, got "
                        f"{list(rule.tier_widen)} and {list(rule.tier_ppl)}")
    floors: dict[str, float] = {}
    margins: dict[str, float] = {}
    tiers: dict[str, dict[str, float]] = {t: {} for t in TIERS}
    for name in QUALITY:
        if name not in dense:
            continue  # no cases for it in this suite: nothing to gate
        p = float(dense[name])
        m = rule.margin(p, int(counts.get(name, 0)))
        for t, widen in zip(TIERS, rule.tier_widen, strict=True):
            tiers[t][name] = round(min(p, max(chance.get(name, 0.0), p - m - widen)), 4)
        floors[name] = round(min(p, max(chance.get(name, 0.0), p - m)), 4)
        if p - m <= chance.get(name, 0.0):
            log.warning(
                "dense %s = %.3f is within its margin (%.3f) of chance (%.3f): this floor cannot tell a broken "
                "variant from a working one; make the slice easier or larger", name, p, m, chance.get(name, 0.0),
            )
        margins[name] = round(p - floors[name], 4)
    floors["ppl_retention"] = rule.ppl_retention
    for t, ppl in zip(TIERS, rule.tier_ppl, strict=True):
        tiers[t]["ppl_retention"] = ppl if t != TIERS[0] else rule.ppl_retention
    margins["ppl_retention"] = round(1.0 - rule.ppl_retention, 4)
    profiles = {k: v for k, v in (previous.profiles if previous else {}).items() if k != "default"}
    profiles = {
        "default": {
            s: round(min(dense[s], max(chance.get(s, 0.0), dense[s] - rule.profile_margin)), 4)
            for s in SLICES
            if s in dense
        },
        **profiles,
    }
    return Floors(
        floors=floors,
        ceilings={"latency": rule.latency, "size": rule.size},
        profiles=profiles,
        tiers=tiers,
        version=(previous.version + 1) if previous else 1,
        suite_version=suite_version,
        model=model,
        created=_dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        dense={k: round(float(v), 4) for k, v in dense.items() if k in DIMENSIONS},
        margins=margins,
        rule=rule.to_dict(),
    )


# --------------------------------------------------------------------------- the gate


def gate(scores: Mapping[str, float], floors: Floors) -> Gate:
    """`pass` if every floored score clears its floor and every cost stays under its ceiling.

    A dimension the scores lack counts as failed: absence of evidence is not a pass.
    """
    failed = _failed(scores, floors.floors, floors.ceilings)
    extra: dict[str, Any] = {"floors_version": floors.version}
    if floors.tiers:
        extra["tiers"] = [t for t, fl in floors.tiers.items() if not _failed(scores, fl, floors.ceilings)]
    return Gate("fail" if failed else "pass", tuple(failed), extra)


def _failed(scores: Mapping[str, float], fl: Mapping[str, float], ceilings: Mapping[str, float]) -> list[str]:
    failed = [d for d, f in fl.items() if not scores.get(d, -math.inf) >= f - _EPS]
    return failed + [d for d, c in ceilings.items() if not scores.get(d, math.inf) <= c + _EPS]


# --------------------------------------------------------------------------- whole-system gating


def delivered_quality(
    slice_scores: Mapping[str, Mapping[str, float]],
    mix: Mapping[str, float],
    per_slice_mix: Mapping[str, Mapping[str, float]] | None = None,
) -> dict[str, float]:
    """Per-slice quality delivered by a variant mix (`edge_runtime.control.tiers.delivered_quality`
    over the suite's slices)."""
    return _tiers.delivered_quality(slice_scores, mix, SLICES, per_slice_mix)


def gate_profiles(delivered: Mapping[str, Mapping[str, float]], floors: Floors,
                  tiers: Mapping[str, str] | None = None) -> dict[str, Gate]:
    """Gate each profile's delivered per-slice quality on its floors.

    A profile with a tier (`tiers`: profile -> tier, from the profile's `tier` key) is held to
    that tier's slice floors; others to their [profiles.<name>] (or default) table.
    """
    out = {}
    for prof, q in delivered.items():
        tier = (tiers or {}).get(prof)
        if tier is not None and floors.tiers:
            fl = {s: f for s, f in floors.tier(tier).items() if s in SLICES}
        else:
            fl = floors.profile(prof)
        failed = tuple(s for s, f in fl.items() if not q.get(s, -math.inf) >= f - _EPS)
        out[prof] = Gate("fail" if failed else "pass", failed, {"floors_version": floors.version})
    return out
