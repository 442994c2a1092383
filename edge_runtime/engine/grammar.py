"""Constrained decoding: a token mask applied before sampling, so the output follows a grammar.

The grammar engine is llguidance (the one llama.cpp and vLLM use): it has no dependencies
(no torch), reads the bundle's `tokenizer.json` as it is, compiles JSON schemas and Lark
grammars lazily (no ahead-of-time automaton per schema, so a new schema costs
milliseconds) and computes a vocabulary mask in tens of microseconds per token.

`Grammars` belongs to a runtime: it builds llguidance's view of the tokenizer once and
compiles request grammars into `Constraint`s. A `Constraint` is the per-request state:
`allowed()` (the tokens that may come next, bool [V]), `apply(logits)` (the rest set to
-inf), `advance(token)` after a token is chosen, `done` once nothing may follow, and
`rollback(n)` / `copy()` for a verifier that has to try several tokens ahead (speculative
decoding: today a constrained request simply decodes without drafts).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from edge_runtime.errors import RequestError

log = logging.getLogger(__name__)

# Compact JSON: a small model given free whitespace tends to spend its budget on newlines.
JSON_OPTIONS = {"whitespace_flexible": False}


def json_schema_grammar(schema: dict[str, Any]) -> str:
    """The llguidance grammar for JSON documents valid under `schema` (compact whitespace)."""
    import llguidance

    return llguidance.LLMatcher.grammar_from_json_schema(schema, overrides=JSON_OPTIONS)


def lark_grammar(source: str) -> str:
    """The llguidance grammar for a Lark grammar (`%json {schema}` embeds a JSON schema)."""
    import llguidance

    return llguidance.grammar_from("lark", source)


class Grammars:
    """Compiles grammars against one tokenizer (llguidance's view of it is built once, lazily).

    Args:
        tokenizer_json: the bundle's tokenizer.json as text (read into llguidance when first needed).
        vocab_size: the model's vocabulary (the logits' length; may exceed the tokenizer's).
        eos_token_ids: the tokens that end a sequence (allowed once the grammar accepts).
    """

    def __init__(self, tokenizer_json: str, vocab_size: int, eos_token_ids: Sequence[int]) -> None:
        self._json = tokenizer_json
        self.vocab_size = vocab_size
        self.eos_token_ids = sorted(int(i) for i in eos_token_ids)
        self._tok: Any = None
        self._lock = threading.Lock()

    @property
    def lltokenizer(self) -> Any:
        with self._lock:
            if self._tok is None:
                import llguidance

                self._tok = llguidance.LLTokenizer(self._json, n_vocab=self.vocab_size,
                                                   eos_token=self.eos_token_ids or None)
            return self._tok

    def compile(self, grammar: str, where: str) -> Constraint:
        """A fresh `Constraint` for an llguidance grammar (`json_schema_grammar`, `lark_grammar`).

        Raises:
            RequestError: the grammar is invalid or uses an unsupported feature (named by `where`).
        """
        import llguidance

        tok = self.lltokenizer
        is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, tok)
        if is_error:
            raise RequestError(f"{where}: {messages[0]}; fix the schema (JSON Schema draft 2020-12, "
                               "without 'not' or remote $ref)")
        for m in messages:
            log.debug("%s: grammar warning: %s", where, m)
        matcher = llguidance.LLMatcher(tok, grammar, log_level=0)
        if matcher.is_error():
            raise RequestError(f"{where}: {matcher.get_error()}")
        return Constraint(matcher, self.vocab_size)

    def compile_json_schema(self, schema: Any, where: str) -> Constraint:
        """`compile` for a JSON schema given as a dict."""
        if not isinstance(schema, dict):
            raise RequestError(f"{where} must be a JSON schema object, got {type(schema).__name__}")
        try:
            grammar = json_schema_grammar(schema)
        except (ValueError, TypeError) as e:
            raise RequestError(f"{where}: {e}") from e
        return self.compile(grammar, where)

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes one token stands for (a piece of a multi-byte character stays a piece)."""
        return bytes(self.lltokenizer.decode_bytes([int(token_id)]))


class Constraint:
    """One request's position in its grammar; see the module docstring for the protocol."""

    def __init__(self, matcher: Any, vocab_size: int) -> None:
        self._m = matcher
        self.vocab_size = vocab_size
        self._words = (vocab_size + 31) // 32
        self._bitmask = np.zeros(self._words, dtype=np.int32)  # [ceil(V / 32)], bit i = token i allowed

    def bitmask(self) -> np.ndarray:
        """The allowed next tokens as llguidance's packed bitmask, int32 [ceil(V / 32)] (reused buffer)."""
        self._m.unsafe_compute_mask_ptr(self._bitmask.ctypes.data, self._bitmask.nbytes)
        return self._bitmask

    def allowed(self) -> np.ndarray:
        """The allowed next tokens, bool [V]."""
        bits = np.unpackbits(self.bitmask().view(np.uint8), bitorder="little")
        return bits[: self.vocab_size].astype(bool)

    def apply(self, logits: np.ndarray) -> np.ndarray:
        """`logits` [V] with every token the grammar forbids at -inf (a new array)."""
        allowed = self.allowed()
        if not allowed.any():  # llguidance's error state: nothing is allowed
            raise RequestError(f"constrained decoding: the grammar allows no token ({self._m.get_error()})")
        n = min(logits.shape[-1], allowed.shape[0])
        out = np.full(logits.shape, -np.inf, dtype=np.float32)
        out[:n] = np.where(allowed[:n], logits[:n], -np.inf)
        return out

    def advance(self, token: int) -> None:
        """Consume the chosen token (it must have been allowed)."""
        if not self._m.consume_token(int(token)):
            raise RequestError(f"constrained decoding: token {token} broke the grammar ({self._m.get_error()})")

    @property
    def done(self) -> bool:
        """Nothing may follow (the output is complete)."""
        return bool(self._m.is_stopped())

    @property
    def accepting(self) -> bool:
        """What was generated so far is a complete output (more may still follow)."""
        return bool(self._m.is_accepting())

    def rollback(self, n: int) -> None:
        """Undo the last `n` tokens (a verifier rejecting drafted tokens)."""
        if not self._m.rollback(int(n)):
            raise RequestError(f"constrained decoding: cannot roll back {n} tokens ({self._m.get_error()})")

    def reset(self) -> None:
        """Back to the start of the grammar (a request retried on another variant)."""
        self._m.reset()

    def copy(self) -> Constraint:
        return Constraint(self._m.deep_copy(), self.vocab_size)


def schema_text(schema: dict[str, Any]) -> str:
    """`schema` as compact JSON (for embedding into a Lark grammar with `%json`)."""
    return json.dumps(schema, separators=(",", ":"), ensure_ascii=False)
