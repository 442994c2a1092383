"""`ShadowConfig`: what shadow scoring samples, when it may run, and what capture may keep."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ShadowConfig:
    """Shadow scoring and capture settings; off unless `enabled` (edge-serve: --shadow, EDGE_SHADOW).

    Shadow work runs only when the queue is empty and nothing is generating, and only on mains
    power or above `min_battery`; a live request preempts it at the next token.
    """

    enabled: bool = False  # re-run served requests on the dense variant in idle time
    sample: float = 0.1  # share of served requests shadow-scored (0-1); more: faster drift signal, more idle work
    all_non_dense: bool = False  # also score every request a non-dense variant served (over `sample`)
    min_battery: float = 0.5  # on battery, shadow work only above this charge (0-1); on mains always
    window: int = 50  # rolling window per variant and dimension (shadow-scored requests)
    min_samples: int = 10  # a window reports below-floor only once it holds this many scores
    agreement_floor: float = 0.5  # token F1 with dense below which a variant is reported as drifting
    fence: bool = False  # fence a variant whose own drift crosses a floor (not when dense drifted too)
    max_tokens: int = 128  # shadow re-runs generate at most this many tokens (and the served answer is cut there)
    backlog: int = 64  # served requests waiting for idle time at most (the oldest is dropped beyond)
    max_preemptions: int = 3  # a shadow job preempted this often is dropped (busy devices stay busy)
    seed: int = 0  # of the sampling draw, for reproducible runs
    capture_dir: Path | None = None  # opt-in: write regression cases (suite JSON Lines) here; None: never
    capture_max_bytes: int = 1_048_576  # the capture file never grows past this (oldest cases leave first)
    capture_max_age_s: float = 7 * 24 * 3600.0  # captured cases older than this are dropped
    redact: Path | None = None  # file of regular expressions, one a line; matches become [REDACTED] before writing

    def __post_init__(self) -> None:
        for name in ("sample", "min_battery", "agreement_floor"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise ValueError(f"ShadowConfig.{name} must be a number in [0, 1], got {v!r}")
        for name in ("window", "min_samples", "max_tokens", "backlog", "capture_max_bytes"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"ShadowConfig.{name} must be an integer >= 1, got {v!r}")
        if self.min_samples > self.window:
            raise ValueError(f"ShadowConfig.min_samples ({self.min_samples}) must be <= window ({self.window})")
        if isinstance(self.max_preemptions, bool) or not isinstance(self.max_preemptions, int) \
                or self.max_preemptions < 0:
            raise ValueError(f"ShadowConfig.max_preemptions must be an integer >= 0, got {self.max_preemptions!r}")
        if not self.capture_max_age_s > 0:
            raise ValueError(f"ShadowConfig.capture_max_age_s must be > 0, got {self.capture_max_age_s!r}")
