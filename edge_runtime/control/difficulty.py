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

# Cues are word sets and substrings of the lower-cased prompt: set lookups and `in` run in C,
# where case-insensitive alternation regexes cost a millisecond per few thousand characters.
_FORMAT = ("json", "{", "format", "csv", "table")
_LIST_WORDS = frozenset({"list", "items", "item", "bullet", "bullets", "enumerate"})
_LIST_PHRASES = ("one per line", "one per row", "numbered")
_EXACT_WORDS = frozenset({"exactly", "only"})
_EXACT_PHRASES = ("one word", "single word", "answer with", "just the", "nothing else")
_OPTION_PAIRS = (("a)", "b)"), ("(a)", "(b)"), ("\na.", "\nb."), ("\na:", "\nb:"))
_NEGATION = frozenset({"not", "never", "except", "no", "none", "without"})
_ARITH_WORDS = frozenset({"plus", "minus", "times", "divided", "más", "menos", "mal", "fois", "jumlisha", "toa"})
_ARITH = re.compile(r"\d\s*[-+*/x×]\s*\d")
_FOREIGN = frozenset(
    "le la les des est une et avec pour dans combien quel quelle "  # French
    "el los las es una y qué con para por del cuánto cuál "  # Spanish
    "der die das und ist ein eine nicht mit für auf nur wie "  # German
    "ni na kwa ya wa za katika je nini ngapi gani tu".split())  # Swahili
_WORD = re.compile(r"\w+", re.U)

FEATURES_VERSION = 1  # bump when a feature's meaning or scale changes: models and outcomes record it
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


MAX_CHARS = 2048  # features read at most this much of a prompt (its length comes from the full text)
_PUNCT = np.zeros(128, dtype=bool)
_PUNCT[[ord(c) for c in "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"]] = True


def features(text: str, n_tokens: int) -> np.ndarray:
    """The difficulty features of a prompt, float32 [N_FEATURES], each clipped to [0, 1].

    Character classes are counted on the code points with numpy (no per-character Python
    loop), so a long prompt costs tens of microseconds, not milliseconds.
    """
    head = text[:MAX_CHARS]
    low = head.lower()
    cp = np.frombuffer(head.encode("utf-32-le"), dtype=np.uint32)  # [C] code points
    n = max(cp.size, 1)
    ascii_ = cp < 128
    upper = int(((cp >= 65) & (cp <= 90)).sum())
    letters = upper + int(((cp >= 97) & (cp <= 122)).sum()) + int((~ascii_).sum())
    digits = int(((cp >= 48) & (cp <= 57)).sum())
    words = _WORD.findall(low)
    vocab = set(words)
    nw = max(len(words), 1)
    raw = (
        np.log1p(len(text)) / 8.0,
        n_tokens / 512.0,
        len(text) / max(n_tokens, 1) / 6.0,
        float((~ascii_).sum()) / n,
        digits / n,
        float(_PUNCT[cp[ascii_]].sum()) / n,
        head.count("\n") / 10.0,
        sum(map(len, words)) / nw / 10.0,
        float(any(k in low for k in _FORMAT)),
        float(bool(vocab & _LIST_WORDS) or any(k in low for k in _LIST_PHRASES)),
        float(bool(vocab & _EXACT_WORDS) or any(k in low for k in _EXACT_PHRASES)),
        float("?" in head),
        float(any(a in low and b in low for a, b in _OPTION_PAIRS)),
        float(bool(vocab & _NEGATION)),
        float(bool(vocab & _ARITH_WORDS) or (digits > 1 and bool(_ARITH.search(head)))),
        sum(w in _FOREIGN for w in words) / nw,
        upper / max(letters, 1),
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
