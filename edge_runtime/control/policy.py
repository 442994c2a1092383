"""Controller policies on the device: which variant serves this request.

numpy and onnxruntime only. Every policy answers one question,

    decide(obs: float32[observation.SIZE], allowed: bool[n_variants]) -> Decision

where `obs` is `edge_runtime.control.observation.encode(...)` and `allowed[i]` is False for
variants that may not run (gate failed, failed to load). `Decision.variant` indexes the
manifest's variant list.

* `StaticPolicy(i)`: always variant `i` (baselines, pinning a variant).
* `RulePolicy(catalog)`: documented thresholds on battery, thermal headroom, queue depth and
  deadline slack (`RuleConfig`); the densest variant that resources allow.
* `OnnxPolicy(path, n_actions)`: a trained policy exported by `edge-train`. Contract: input
  `observation` float32 [N, observation.SIZE], output `logits` float32 [N, n_actions]; the
  action is the argmax of the logits over allowed variants.
* `FallbackPolicy(primary, fallback)`: the primary, unless it is missing, raises, or returns
  an index that is out of range or not allowed; then the fallback (the rule policy), counted.

`load_policy(bundle_dir)` assembles what the runtime uses: the bundle's ONNX policy behind
a `FallbackPolicy` over the rule controller.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from edge_runtime.bundle import Manifest, read_manifest
from edge_runtime.control import observation
from edge_runtime.control.catalog import VariantCatalog
from edge_runtime.errors import PolicyError

log = logging.getLogger(__name__)

# Feature positions, resolved once from the encoder's names (never hard-coded numbers).
_F = {name: i for i, name in enumerate(observation.FEATURES)}


# Where a decision came from: the trained policy, the rule controller (the bundle names no
# policy), one fixed variant, the rule controller standing in for a policy that failed, a
# variant the client named, the next variant after one that failed, or the lookahead oracle.
Source = Literal["policy", "rule", "static", "fallback", "pinned", "retry", "oracle"]


@dataclass(frozen=True)
class Decision:
    """What a policy chose, why (for people), and where the choice came from (for code)."""

    variant: int  # index into the manifest's variants
    reason: str  # "rl", "static", "rule: battery<20%", "fallback: policy raised ..."
    latency_s: float = 0.0  # time spent deciding
    source: Source = "policy"


def valid_choice(d: Any, allowed: np.ndarray) -> bool:
    """True when `d.variant` is an index of an allowed variant: the one check of a policy's answer."""
    v = getattr(d, "variant", None)
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 <= v < len(allowed) and bool(allowed[v])


@runtime_checkable
class Policy(Protocol):
    """Anything that picks a variant from an observation."""

    def decide(self, obs: np.ndarray, allowed: np.ndarray) -> Decision:
        """Pick a variant; `obs` is float32 [SIZE], `allowed` bool [n_variants]."""
        ...


def _allowed_indices(allowed: np.ndarray) -> np.ndarray:
    """Indices of allowed variants; `PolicyError` if there is none."""
    idx = np.flatnonzero(allowed)
    if idx.size == 0:
        raise PolicyError("no variant is allowed (every gate failed or none loaded); re-export the bundle")
    return idx


# --------------------------------------------------------------------------- static


class StaticPolicy:
    """Always the same variant (falls back to the first allowed one if it is not allowed)."""

    def __init__(self, index: int) -> None:
        if index < 0:
            raise PolicyError(f"static policy: variant index must be >= 0, got {index}")
        self.index = index

    def decide(self, obs: np.ndarray, allowed: np.ndarray) -> Decision:
        t0 = time.perf_counter()
        if self.index < len(allowed) and allowed[self.index]:
            return Decision(self.index, "static", time.perf_counter() - t0, "static")
        i = int(_allowed_indices(allowed)[0])
        return Decision(i, f"static: variant {self.index} not allowed", time.perf_counter() - t0, "static")


# --------------------------------------------------------------------------- rule


@dataclass(frozen=True)
class RuleConfig:
    """Thresholds of the rule controller. Each rule caps the *cost level* of the variant.

    Cost level c in [0, 1]: a variant is affordable when its predicted time for this request
    is at most `min + c * (max - min)` over allowed variants (c = 1: any, c = 0: the
    cheapest). The lowest cap of all rules applies; among affordable variants that are
    predicted to meet the deadline, the one with the best quality for this request wins.
    """

    low_battery: float = 0.20  # on battery below this share: cost level 0 (cheapest)
    mid_battery: float = 0.50  # on battery below this share: cost level `mid_level`
    hot_headroom_c: float = 5.0  # fewer degrees C than this below throttling: `mid_level`
    busy_queue: int = 2  # at least this many requests waiting: `mid_level`
    full_queue: int = 6  # at least this many waiting: cost level 0
    mid_level: float = 0.5  # the cost level of the "mid" caps
    deadline_margin: float = 0.8  # a variant must finish within this share of the time left
    throttled_slowdown: float = 2.0  # assumed slowdown while throttled (the observation has no speed)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise PolicyError(f"RuleConfig.{f.name} must be a number >= 0, got {value!r}")


class RulePolicy:
    """The hand-written controller: the densest variant the battery, heat, queue and deadline allow.

    Reads the observation back into physical units (scales in `edge_runtime.control.observation`)
    and predicts each variant's time for this request from the manifest's measured costs
    (catalog C1), slowed by max(1, recent ms per token / dense ms per token) and by
    `throttled_slowdown` while throttled.
    """

    def __init__(self, catalog: VariantCatalog, config: RuleConfig | None = None) -> None:
        self.catalog = catalog
        self.config = config or RuleConfig()

    def decide(self, obs: np.ndarray, allowed: np.ndarray) -> Decision:
        t0 = time.perf_counter()
        cfg, cat = self.config, self.catalog
        obs = np.asarray(obs, dtype=np.float32).reshape(-1)
        battery = float(obs[_F["battery_level"]])
        plugged = obs[_F["plugged_in"]] >= 0.5
        headroom_c = float(obs[_F["thermal_headroom"]]) * observation.HEADROOM_SCALE
        throttled = obs[_F["throttled"]] >= 0.5
        queue = float(obs[_F["queue_depth"]]) * observation.QUEUE_SCALE
        prompt = float(obs[_F["prompt_tokens"]]) * observation.PROMPT_SCALE
        new = float(obs[_F["max_new_tokens"]]) * observation.NEW_TOKENS_SCALE
        time_left = float(obs[_F["deadline"]]) * observation.DEADLINE_SCALE
        hard = float(obs[_F["hard"]])
        recent_ms = float(obs[_F["recent_latency"]]) * observation.LATENCY_SCALE

        level, reasons = 1.0, []
        if not plugged and battery < cfg.low_battery:
            level = 0.0
            reasons.append(f"battery<{cfg.low_battery:.0%}")
        elif not plugged and battery < cfg.mid_battery:
            level = min(level, cfg.mid_level)
            reasons.append(f"battery<{cfg.mid_battery:.0%}")
        if throttled:
            level = 0.0
            reasons.append("throttled")
        elif headroom_c < cfg.hot_headroom_c:
            level = min(level, cfg.mid_level)
            reasons.append(f"headroom<{cfg.hot_headroom_c:g}C")
        if queue >= cfg.full_queue - 0.5:
            level = 0.0
            reasons.append(f"queue>={cfg.full_queue}")
        elif queue >= cfg.busy_queue - 0.5:
            level = min(level, cfg.mid_level)
            reasons.append(f"queue>={cfg.busy_queue}")

        idx = _allowed_indices(allowed[: len(cat)])
        slowdown = max(1.0, recent_ms / cat.decode_ms[cat.dense]) if recent_ms > 0 else 1.0
        if throttled:
            slowdown = max(slowdown, cfg.throttled_slowdown)
        pred = (prompt * cat.prefill_ms[idx] + new * cat.decode_ms[idx]) / 1000.0 * slowdown  # [A] s
        lo, hi = float(pred.min()), float(pred.max())
        affordable = pred <= lo + level * (hi - lo) + 1e-12
        in_time = pred <= cfg.deadline_margin * time_left
        ok = affordable & in_time
        if not ok.any():
            choice = int(idx[int(np.argmin(pred))])
            reasons.append("deadline: fastest")
        else:
            q = (1.0 - hard) * cat.quality_easy[idx] + hard * cat.quality_hard[idx]
            # best quality, then cheapest: lexsort sorts by the last key first
            order = np.lexsort((pred, -q))
            choice = int(idx[next(int(i) for i in order if ok[i])])
            if not in_time[affordable].all():
                reasons.append("deadline")
        reason = "rule: " + (", ".join(reasons) if reasons else "resources ok")
        return Decision(choice, reason, time.perf_counter() - t0, "rule")


# --------------------------------------------------------------------------- ONNX


def _session_options() -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1  # a few-kFLOP MLP: threads only add wake-up latency
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return so


class OnnxPolicy:
    """A policy exported by `edge-train`: argmax of the `logits` over allowed variants.

    Args:
        path: the ONNX file (input `observation` [N, SIZE] float32, output `logits` [N, n_actions]).
        n_actions: number of actions the policy was trained with.
        variant_index: action -> manifest variant index (default: action i is variant i).

    Raises:
        PolicyError: the file is missing or unreadable, or its input or output size does not
            match `observation.SIZE` / `n_actions`.
    """

    INPUT = "observation"
    OUTPUT = "logits"

    def __init__(self, path: str | os.PathLike[str], n_actions: int, variant_index: list[int] | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise PolicyError(f"policy file {str(self.path)!r} does not exist; train one with edge-train")
        self.variant_index = np.asarray(
            list(range(n_actions)) if variant_index is None else variant_index, dtype=np.int64
        )
        if len(self.variant_index) != n_actions:
            raise PolicyError(f"variant_index has {len(self.variant_index)} entries for {n_actions} actions")
        try:
            self.session = ort.InferenceSession(
                str(self.path), sess_options=_session_options(), providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # ORT raises its own exception types for malformed files
            raise PolicyError(
                f"policy file {str(self.path)!r} cannot be loaded by onnxruntime ({e}); re-export it with edge-train"
            ) from e
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name: o for o in self.session.get_outputs()}
        if self.INPUT not in inputs or self.OUTPUT not in outputs:
            raise PolicyError(
                f"policy {str(self.path)!r} has inputs {sorted(inputs)} and outputs {sorted(outputs)}; "
                f"the contract is input {self.INPUT!r} and output {self.OUTPUT!r}: re-export it with edge-train"
            )
        in_shape = inputs[self.INPUT].shape
        if len(in_shape) != 2 or in_shape[1] != observation.SIZE:
            raise PolicyError(
                f"policy {str(self.path)!r} expects observations of shape {in_shape}, but this runtime's "
                f"encoder makes [N, {observation.SIZE}] (observation version "
                f"{observation.OBSERVATION_VERSION}): retrain the policy with edge-train on this version"
            )
        out_shape = outputs[self.OUTPUT].shape
        if len(out_shape) != 2 or (isinstance(out_shape[1], int) and out_shape[1] != n_actions):
            raise PolicyError(
                f"policy {str(self.path)!r} outputs logits of shape {out_shape}, expected [N, {n_actions}] "
                "(one per action in the manifest's controller.actions): retrain it with edge-train"
            )
        self.n_actions = n_actions

    @classmethod
    def from_bundle(cls, bundle_dir: str | os.PathLike[str], manifest: Manifest | None = None) -> OnnxPolicy:
        """The bundle's policy, its actions mapped to variant indices through the manifest."""
        manifest = manifest or read_manifest(bundle_dir)
        info = manifest.controller
        if not info.policy:
            raise PolicyError(f"bundle {str(bundle_dir)!r} has no controller policy; train one with edge-train")
        # the version first: an old policy is told which version it predates, not two lists to compare
        version = info.extra.get("observation_version", observation.OBSERVATION_VERSION)
        if version != observation.OBSERVATION_VERSION:
            raise PolicyError(
                f"the policy was trained on observation version {version!r}, this runtime encodes "
                f"version {observation.OBSERVATION_VERSION}: retrain it with edge-train"
            )
        if tuple(info.observation) != observation.FEATURES:
            raise PolicyError(
                f"the policy was trained on observation features {list(info.observation)}, this runtime "
                f"encodes {list(observation.FEATURES)}: retrain it with edge-train"
            )
        names = manifest.actions
        unknown = [a for a in info.actions if a not in names]
        if unknown or not info.actions:
            raise PolicyError(
                f"the policy's actions {list(info.actions)} name variants not in the bundle "
                f"({unknown or 'none given'}); the bundle has {list(names)}: retrain it with edge-train"
            )
        return cls(Path(bundle_dir) / info.policy, len(info.actions), [names.index(a) for a in info.actions])

    def logits(self, obs: np.ndarray) -> np.ndarray:
        """Raw logits, [N, n_actions] for obs [N, SIZE] (or [n_actions] for [SIZE])."""
        x = np.asarray(obs, dtype=np.float32)
        single = x.ndim == 1
        out = self.session.run([self.OUTPUT], {self.INPUT: x.reshape(-1, observation.SIZE)})[0]
        return out[0] if single else out

    def decide(self, obs: np.ndarray, allowed: np.ndarray) -> Decision:
        t0 = time.perf_counter()
        logits = self.logits(obs)
        if logits.shape != (self.n_actions,) or not np.all(np.isfinite(logits)):
            raise PolicyError(f"policy returned garbage logits {logits!r}")
        return Decision(best_allowed(logits, self.variant_index, allowed), "rl", time.perf_counter() - t0, "policy")


def best_allowed(logits: np.ndarray, variant_index: np.ndarray, allowed: np.ndarray) -> int:
    """The variant of the highest-logit action among those whose variant is allowed.

    Raises:
        PolicyError: no action's variant is allowed.
    """
    allowed = np.asarray(allowed, dtype=bool)
    ok = np.zeros(len(variant_index), dtype=bool)
    in_range = variant_index < len(allowed)
    ok[in_range] = allowed[variant_index[in_range]]
    if not ok.any():
        raise PolicyError("none of the policy's actions is allowed")
    return int(variant_index[int(np.argmax(np.where(ok, logits, -np.inf)))])


# --------------------------------------------------------------------------- fallback


class FallbackPolicy:
    """The primary policy, or the fallback when the primary is missing, raises, or picks garbage.

    Without a primary the fallback decides by design (source "rule": a bundle that names no
    policy), unless `missing` says why an expected primary is absent (source "fallback").
    `decisions` and `fallbacks` count calls; `last_error` keeps the latest reason.
    """

    def __init__(self, primary: Policy | None, fallback: Policy, missing: str | None = None) -> None:
        self.primary = primary
        self.fallback = fallback
        self.missing = missing
        self.decisions = 0
        self.fallbacks = 0
        self.last_error: str | None = None

    def decide(self, obs: np.ndarray, allowed: np.ndarray) -> Decision:
        t0 = time.perf_counter()
        self.decisions += 1
        allowed = np.asarray(allowed, dtype=bool)
        planned = False
        if self.primary is None:
            why, planned = "no policy", self.missing is None
        else:
            try:
                d = self.primary.decide(obs, allowed)
            except Exception as e:  # any failure of the primary is a reason to fall back
                why = f"policy raised {type(e).__name__}: {e}"
            else:
                if valid_choice(d, allowed):
                    return Decision(int(d.variant), d.reason, time.perf_counter() - t0, getattr(d, "source", "policy"))
                why = f"policy chose variant {getattr(d, 'variant', None)!r}, which is not allowed"
        d = self.fallback.decide(obs, allowed)
        if planned:
            return Decision(d.variant, f"fallback: {why} -> {d.reason}", time.perf_counter() - t0, "rule")
        self.fallbacks += 1
        self.last_error = why
        return Decision(d.variant, f"fallback: {why} -> {d.reason}", time.perf_counter() - t0, "fallback")


def load_policy(
    bundle_dir: str | os.PathLike[str], manifest: Manifest | None = None, strict: bool = False
) -> FallbackPolicy:
    """The runtime's controller: the bundle's ONNX policy (if any) over the rule policy.

    Args:
        bundle_dir: the bundle.
        manifest: its manifest, if already read.
        strict: raise `PolicyError` when the bundle names a policy that cannot be used;
            otherwise log a warning and decide with the rule policy alone.
    """
    manifest = manifest or read_manifest(bundle_dir)
    rule = RulePolicy(VariantCatalog.from_manifest(manifest))
    primary: Policy | None = None
    missing = None
    if manifest.controller.policy:
        try:
            primary = OnnxPolicy.from_bundle(bundle_dir, manifest)
        except PolicyError as e:
            if strict:
                raise
            missing = str(e)
            log.warning("controller policy unusable, deciding with the rule policy: %s", e)
    return FallbackPolicy(primary, rule, missing)
