"""The project's exception hierarchy.

Every error a user can cause is an `EdgeError`. Messages say what was wrong, the value
seen, and how to fix it; CLIs print them as one line and exit with a non-zero status.
"""

from __future__ import annotations


class EdgeError(Exception):
    """Root of every error this project raises on purpose."""


class BundleError(EdgeError):
    """A bundle or its manifest is missing, malformed, or of an unknown format."""


class VariantError(EdgeError):
    """A variant is unknown, failed its gate, or could not be loaded."""


class ProfileError(EdgeError):
    """A resource profile file is malformed."""


class ExportError(EdgeError):
    """Export cannot proceed: bad model, bad recipe, bad output directory."""


class RecipeError(ExportError):
    """A recipe file names an unknown method or an invalid level."""


class EvalError(EdgeError):
    """The evaluation suite or floors file is malformed."""


class TrainError(EdgeError):
    """Controller training cannot proceed: bad training config, profile split or policy export."""


class PolicyError(EdgeError):
    """A controller policy is missing, malformed, or disagrees with the encoder."""


class ProviderError(EdgeError):
    """An onnxruntime execution provider is unknown, unavailable in this build, or badly optioned."""


class MissingExtra(EdgeError):
    """A tool or option needs an optional extra that is not installed (the message names it)."""


class SensorError(EdgeError):
    """A signal source could not be read."""


class RequestError(EdgeError):
    """A generation request is invalid (empty prompt, too long, bad sampling values)."""


class Overloaded(EdgeError):
    """The request queue is full; retry after `retry_after_s` seconds."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Unavailable(EdgeError):
    """The runtime cannot take requests now (loading, shutting down, no variant left)."""

    def __init__(self, message: str, retry_after_s: float = 5.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DeadlineExceeded(EdgeError):
    """A request's deadline passed before it could start."""


class ShadowError(EdgeError):
    """Shadow scoring or capture is misconfigured (e.g. a redaction pattern that does not compile)."""


class RecoveryError(ExportError):
    """Recovery (distillation of a pruned variant from its dense parent) cannot run as asked."""
