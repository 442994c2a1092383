"""Per-request difficulty, estimated before generation: would a cheaper variant lose this request?

The controller's observation has a `hard` feature (0 easy .. 1 needs the dense model's
quality). A client may set it (`difficulty`); otherwise the runtime estimates it here from
what is known before the first forward pass: the prompt's text and its token count.

    features(text, n_tokens) -> float32 [N_FEATURES]      cheap text statistics, about [0, 1]
    DifficultyModel.load(path).predict(x) -> float         P(dense wins where cheaper variants lose)

The model is trained offline (`harness.difficulty`) on per-case outcomes, dense against the
cheaper variants, on a case set the gate never scores (`harness/data/difficulty.jsonl`), and
ships in the bundle as plain arrays (`controller/difficulty.npz`, read with
`allow_pickle=False`): a standardized logistic regression, or a one-hidden-layer MLP when the
file has `w1`. Its validation AUC is in the manifest (`difficulty.auc`).

The prompt's surprisal under the prefilling model would be a strong feature but costs a
forward pass before the decision; these features cost microseconds.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.bundle import Manifest
from edge_runtime.errors import BundleError

log = logging.getLogger(__name__)

NEUTRAL = 0.5  # what an unusable model answers when the client gave no difficulty

_FORMAT = re.compile(r"json|\{|\bformat\b|\bcsv\b|\btable\b", re.I)
_LIST = re.compile(r"\blist\b|\bitems?\b|\bbullet|\bone per line\b|\bname \w+ \w+s\b", re.I)
_EXACT = re.compile(r"\bexactly\b|\bonly\b|\bone word\b|\bsingle word\b|\banswer with\b|\bjust the\b", re.I)
_OPTIONS = re.compile(r"(^|\s)\(?[A-D][).:]\s", re.M)
_NEGATION = re.compile(r"\b(not|never|except|no|none|without)\b", re.I)
_ARITH = re.compile(r"\d+\s*[-+*/x×]\s*\d+|\b(plus|minus|times|divided|más|plus|mal|fois|jumlisha)\b", re.I)
_FOREIGN = re.compile(
    r"\b(le|la|les|des|est|une|et|avec|pour|dans|combien|quel|quelle|"  # French
    r"el|los|las|es|una|y|qué|con|para|por|del|cuánto|cuál|"  # Spanish
    r"der|die|das|und|ist|ein|eine|nicht|mit|für|auf|nur|wie|"  # German
    r"ni|na|kwa|ya|wa|za|katika|je|nini|ngapi|gani|tu)\b", re.I)  # Swahili
_WORD = re.compile(r"\w+", re.U)

FEATURES: tuple[str, ...] = (
    "log_chars",  # log1p(characters) / 8
    "tokens",  # prompt tokens / 512
    "chars_per_token",  # characters per token / 6: low for rare words and other scripts
    "non_ascii",  # share of characters outside ASCII
    "digits",  # share of digits
    "punctuation",  # share of punctuation
    "lines",  # line breaks / 10
    "mean_word_len",  # mean word length / 10
    "format_cue",  # JSON, braces, a table or a format named
    "list_cue",  # a list of items asked for
    "exact_cue",  # "exactly", "only", "one word", "answer with"
    "question",  # ends with or contains a question mark
    "options",  # lettered options (A) B) ...)
    "negation",  # not / never / except / none
    "arithmetic",  # numbers joined by an operator, or the word for one
    "foreign",  # share of words that are French, Spanish, German or Swahili function words
    "upper",  # share of upper-case letters
)
N_FEATURES = len(FEATURES)


def features(text: str, n_tokens: int) -> np.ndarray:
    """The difficulty features of a prompt, float32 [N_FEATURES], each clipped to [0, 1]."""
    n = max(len(text), 1)
    words = _WORD.findall(text)
    nw = max(len(words), 1)
    letters = sum(c.isalpha() for c in text)
    raw = (
        np.log1p(len(text)) / 8.0,
        n_tokens / 512.0,
        len(text) / max(n_tokens, 1) / 6.0,
        sum(ord(c) > 127 for c in text) / n,
        sum(c.isdigit() for c in text) / n,
        sum(not c.isalnum() and not c.isspace() for c in text) / n,
        text.count("\n") / 10.0,
        sum(len(w) for w in words) / nw / 10.0,
        float(bool(_FORMAT.search(text))),
        float(bool(_LIST.search(text))),
        float(bool(_EXACT.search(text))),
        float("?" in text),
        float(bool(_OPTIONS.search(text))),
        float(bool(_NEGATION.search(text))),
        float(bool(_ARITH.search(text))),
        len(_FOREIGN.findall(text)) / nw,
        sum(c.isupper() for c in text) / max(letters, 1),
    )
    return np.clip(np.asarray(raw, dtype=np.float32), 0.0, 1.0)


@dataclass(frozen=True)
class DifficultyModel:
    """Standardize, then a logistic regression (or a one-hidden-layer tanh MLP), as plain arrays."""

    mean: np.ndarray  # [F] feature means of the training set
    scale: np.ndarray  # [F] feature standard deviations (> 0)
    w: np.ndarray  # [H] output weights over the hidden units, or [F] for a logistic regression
    b: float  # output bias
    w1: np.ndarray | None = None  # [F, H] hidden layer, None for a logistic regression
    b1: np.ndarray | None = None  # [H]
    features: tuple[str, ...] = FEATURES  # the feature names it was trained on, in order

    @property
    def n_inputs(self) -> int:
        return int(self.mean.shape[0])

    def predict(self, x: np.ndarray) -> float | np.ndarray:
        """P(hard) for one feature vector [F] (a float) or a batch [N, F] (an array [N])."""
        z = (np.asarray(x, dtype=np.float64) - self.mean) / self.scale
        if self.w1 is not None:
            z = np.tanh(z @ self.w1 + self.b1)
        p = 1.0 / (1.0 + np.exp(-(z @ self.w + self.b)))
        return float(p) if np.ndim(p) == 0 else p

    def save(self, path: str | Path) -> None:
        """Write the arrays as an .npz that loads without pickle."""
        arrays = {"mean": self.mean, "scale": self.scale, "w": self.w, "b": np.array([self.b]),
                  "features": np.array(self.features, dtype=str)}
        if self.w1 is not None and self.b1 is not None:
            arrays.update(w1=self.w1, b1=self.b1)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> DifficultyModel:
        """Read an .npz written by `save`; `BundleError` naming what is missing or malformed."""
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise BundleError(f"difficulty model {str(path)!r} cannot be read ({e}); retrain it with "
                              "python -m harness.difficulty --bundle DIR") from e
        missing = [k for k in ("mean", "scale", "w", "b") if k not in arrays]
        if missing:
            raise BundleError(f"difficulty model {str(path)!r} lacks arrays {missing}; retrain it with "
                              "python -m harness.difficulty --bundle DIR")
        w1 = arrays.get("w1")
        if arrays["mean"].shape != arrays["scale"].shape or (w1 is None and arrays["w"].shape != arrays["mean"].shape):
            raise BundleError(f"difficulty model {str(path)!r}: array shapes disagree (mean {arrays['mean'].shape}, "
                              f"scale {arrays['scale'].shape}, w {arrays['w'].shape}); retrain it")
        names = tuple(str(x) for x in arrays.get("features", np.array(FEATURES)))
        return cls(arrays["mean"].astype(np.float64), np.maximum(arrays["scale"].astype(np.float64), 1e-9),
                   arrays["w"].astype(np.float64), float(arrays["b"].reshape(-1)[0]),
                   None if w1 is None else w1.astype(np.float64),
                   None if w1 is None else arrays["b1"].astype(np.float64), names)


class DifficultyEstimator:
    """What the runtime asks for each request: the client's value, else the model's, else a default.

    A model whose input size does not match `features` (trained on another feature set) is not
    used: the client's value is, else `NEUTRAL`, with one warning for the runtime's life.
    """

    def __init__(self, model: DifficultyModel | None, default: float = 0.0) -> None:
        self.model = model
        self.default = default  # with no model at all: the old behaviour (the client's default, 0)
        self.usable = model is not None and model.n_inputs == N_FEATURES
        if model is not None and not self.usable:
            log.warning("difficulty model expects %d inputs but the runtime computes %d (%s): using the client's "
                        "difficulty, else %.1f; retrain it with python -m harness.difficulty --bundle DIR",
                        model.n_inputs, N_FEATURES, ", ".join(FEATURES), NEUTRAL)

    def estimate(self, text: str, n_tokens: int, client: float | None = None) -> tuple[float, str]:
        """(difficulty, source): source is "client", "model" or "default"."""
        if client is not None:
            return float(client), "client"
        if self.model is None:
            return self.default, "default"
        if not self.usable:
            return NEUTRAL, "default"
        return float(self.model.predict(features(text, n_tokens))), "model"


def load_estimator(bundle_dir: str | Path, manifest: Manifest) -> DifficultyEstimator:
    """The bundle's difficulty estimator: its model when the manifest names one that loads.

    A bundle without one keeps the old behaviour (difficulty 0 unless the client says); a model
    that cannot be read is logged once and answers `NEUTRAL` like a mismatched one.
    """
    info = manifest.difficulty
    if info is None:
        return DifficultyEstimator(None)
    try:
        model = DifficultyModel.load(Path(bundle_dir) / info["model"])
    except BundleError as e:
        log.warning("%s: using the client's difficulty, else %.1f", e, NEUTRAL)
        return DifficultyEstimator(None, default=NEUTRAL)
    return DifficultyEstimator(model)


def prompt_text(prompt: str | None, messages: Sequence[dict[str, Any]] | None) -> str | None:
    """The text the features read: the prompt, or the messages' contents one per line (None for token ids)."""
    if prompt is not None:
        return prompt
    if messages is not None:
        return "\n".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
    return None
