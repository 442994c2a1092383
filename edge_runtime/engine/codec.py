"""Ids from text and text from ids: the bundle's tokenizer.json, as the `tokenizers` package reads it.

Two codecs, both the Rust `tokenizers` crate underneath (`open_codec` picks):

- `ByteLevelCodec`, for byte-level BPE (SmolLM2, Llama 3, Qwen2): encoding through the
  tokenizer inside llguidance, which the runtime already needs for constrained decoding.
  A token is a byte string (its vocabulary entry spelled in GPT-2's byte alphabet), so
  decoding is joining bytes and reading them as UTF-8 (incrementally when streaming).
  It keeps the base install free of the `tokenizers` package, whose huggingface-hub
  dependency brings 30 MB the device never imports (docs/deployment.md).
- `HFCodec`, for any other tokenizer (SentencePiece-style Llama 2, TinyLlama, Mistral):
  the `tokenizers` package, from the `[tokenizers]` extra.

Both give the ids and text `tokenizers` gives (tests/edge_runtime/engine/test_codec.py
compares them on random text, special tokens included).
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Sequence
from typing import Any, Protocol

from edge_runtime.errors import BundleError


class Stream(Protocol):
    def push(self, token_id: int) -> str:
        """Add one token; the new text it completes (maybe "")."""

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character at the very end, as U+FFFD)."""


class Codec(Protocol):
    """Ids from text and text from ids, as the `tokenizers` package gives them."""

    vocab_size: int
    specials: dict[str, int]  # special tokens' text -> id
    split: re.Pattern[str] | None  # `special_splitter(specials)`

    def encode(self, text: str, specials: bool, template: bool) -> list[int]:
        """Ids of `text`; `specials`: special-token text (`<|im_end|>`) gives its token, else it is
        plain text; `template`: add what the post-processor adds (a BOS token, say)."""

    def decode(self, ids: Sequence[int], skip_special_tokens: bool) -> str: ...

    def stream(self, prompt_ids: Sequence[int]) -> Stream: ...

    def token_to_id(self, text: str) -> int | None: ...

    def id_to_token(self, token_id: int) -> str | None: ...


def open_codec(text: str, eos_token_ids: Sequence[int] = (), source: str = "tokenizer.json") -> Codec:
    """`ByteLevelCodec` where it gives what `tokenizers` gives, else `HFCodec`; `source` names
    the file in messages.

    Raises:
        BundleError: `text` is not a tokenizer.json.
        MissingExtra: the tokenizer needs `tokenizers` and it is not installed.
    """
    try:
        spec = json.loads(text)
        if not isinstance(spec, dict) or not isinstance(spec.get("model"), dict):
            raise ValueError("no 'model' object")
    except ValueError as e:
        raise BundleError(f"cannot read the tokenizer {source!r} (not a tokenizers JSON file: {e}); "
                          "re-export the bundle") from e
    try:
        why = ByteLevelCodec.unsupported(spec)
        if why is None:
            return ByteLevelCodec(spec, eos_token_ids)
        from edge_runtime.extras import require

        require("tokenizers", f"this bundle's tokenizer ({why})")
        return HFCodec(text)
    except (ValueError, KeyError, TypeError, AttributeError) as e:  # a malformed spec, or the crate's message
        raise BundleError(f"cannot read the tokenizer {source!r} ({type(e).__name__}: {e}); "
                          "re-export the bundle") from e


class ByteLevelCodec:
    """A byte-level BPE through llguidance's tokenizer (the `tokenizers` crate).

    llguidance gets the tokenizer without its special tokens, so their text is always plain
    text to it; `encode` splits special-token text out first where it should give the token,
    which is what `tokenizers` does (its added vocabulary splits the text, then encodes the
    pieces one by one).
    """

    def __init__(self, spec: dict[str, Any], eos_token_ids: Sequence[int] = ()) -> None:
        import llguidance

        added = spec.get("added_tokens") or []
        self.specials = {t["content"]: int(t["id"]) for t in added if t.get("special")}
        self._special_ids = frozenset(self.specials.values())
        self.split = special_splitter(self.specials)
        plain = {**spec, "added_tokens": [t for t in added if not t.get("special")]}
        # slices=[]: no token-mask precomputation (this instance only tokenizes)
        self._ll = llguidance.LLTokenizer(json.dumps(plain), eos_token=list(eos_token_ids) or [0], slices=[])
        self.vocab_size = int(self._ll.vocab_size)
        self._prefix, self._suffix = _template_ids(spec.get("post_processor"))
        self._added = {t["content"]: int(t["id"]) for t in added}
        self._bytes = [b""] * self.vocab_size  # each token's bytes (b"": no such token); names are spelled from them
        for name, i in [*spec["model"].get("vocab", {}).items(), *self._added.items()]:
            if 0 <= int(i) < self.vocab_size:
                self._bytes[int(i)] = _byte_level(name)

    @staticmethod
    def unsupported(spec: dict[str, Any]) -> str | None:
        """Why this codec cannot give what `tokenizers` gives for `spec` (None: it can)."""
        decoder = spec.get("decoder") or {}
        kinds = [d.get("type") for d in decoder.get("decoders", [])] if decoder.get("type") == "Sequence" \
            else [decoder.get("type")]
        if spec["model"].get("type") != "BPE" or kinds != ["ByteLevel"]:
            return f"{spec['model'].get('type')} with a {'+'.join(map(str, kinds))} decoder, not byte-level BPE"
        odd = [t["content"] for t in spec.get("added_tokens") or [] if t.get("special") and any(
            t.get(k) for k in ("lstrip", "rstrip", "single_word", "normalized"))]
        if odd:
            return f"special tokens {odd[:3]} strip or normalize the text around them"
        try:
            _template_ids(spec.get("post_processor"))
        except ValueError as e:
            return str(e)
        return None

    def encode(self, text: str, specials: bool, template: bool) -> list[int]:
        ids: list[int] = []
        for j, part in enumerate(self.split.split(text) if specials and self.split else [text]):
            if j % 2:
                ids.append(self.specials[part])
            elif part:
                ids += self._ll.tokenize_str(part)
        return self._prefix + ids + self._suffix if template else ids

    def token_bytes(self, token_id: int, skip_special_tokens: bool = True) -> bytes:
        if skip_special_tokens and token_id in self._special_ids:
            return b""
        return self._bytes[token_id] if 0 <= token_id < self.vocab_size else b""  # tokenizers skips unknown ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool) -> str:
        return b"".join(self.token_bytes(int(i), skip_special_tokens) for i in ids).decode("utf-8", "replace")

    def stream(self, prompt_ids: Sequence[int]) -> Stream:
        return _ByteStream(self)

    def token_to_id(self, text: str) -> int | None:
        if text in self._added:
            return self._added[text]
        try:  # a search, not a second table: the runtime asks for a few special tokens, once
            return self._bytes.index(bytes(_BYTES[c] for c in text)) if text else None
        except (KeyError, ValueError):  # not spelled in the byte alphabet, or no such token
            return None

    def id_to_token(self, token_id: int) -> str | None:
        for name, i in self._added.items():
            if i == token_id:
                return name
        spelled = self._bytes[token_id] if 0 <= token_id < self.vocab_size else b""
        return "".join(_CHARS[b] for b in spelled) or None


def special_splitter(specials: dict[str, int]) -> re.Pattern[str] | None:
    """A pattern whose `split` keeps each special token's text as its own piece (the longest
    first where one is a prefix of another); None without special tokens."""
    if not specials:
        return None
    return re.compile("(" + "|".join(re.escape(t) for t in sorted(specials, key=len, reverse=True)) + ")")


def _byte_alphabet() -> dict[str, int]:
    """GPT-2's byte alphabet: the printable character that spells each byte in a vocabulary."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    return {chr(b if b in keep else next(extra)): b for b in range(256)}


_BYTES = _byte_alphabet()
_CHARS = {b: c for c, b in _BYTES.items()}


def _byte_level(name: str) -> bytes:
    """A token's bytes, as `tokenizers`' ByteLevel decoder reads it (a name outside the byte
    alphabet, like an added token with a space in it, stands for its own UTF-8)."""
    try:
        return bytes(_BYTES[c] for c in name)
    except KeyError:
        return name.encode("utf-8")


def _template_ids(post: dict[str, Any] | None) -> tuple[list[int], list[int]]:
    """The ids a post-processor puts before and after a single sequence (Llama 3's BOS)."""
    kind = (post or {}).get("type")
    if kind in (None, "ByteLevel"):  # ByteLevel only adjusts offsets
        return [], []
    if kind == "Sequence":
        before: list[int] = []
        after: list[int] = []
        for p in post.get("processors", []):  # type: ignore[union-attr]
            b, a = _template_ids(p)
            before, after = b + before, after + a
        return before, after
    if kind == "TemplateProcessing":
        pieces: tuple[list[int], list[int]] = ([], [])
        seen = 0
        for piece in post["single"]:  # type: ignore[index]
            if "Sequence" in piece:
                seen = 1
            else:
                pieces[seen].extend(post["special_tokens"][piece["SpecialToken"]["id"]]["ids"])  # type: ignore[index]
        return pieces
    raise ValueError(f"a {kind} post-processor")


class _ByteStream:
    """Text deltas of a byte-level BPE: its tokens' bytes through an incremental UTF-8 decoder,
    which holds back a character's first bytes until the rest arrive."""

    def __init__(self, codec: ByteLevelCodec) -> None:
        self._codec = codec
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")

    def push(self, token_id: int) -> str:
        return self._utf8.decode(self._codec.token_bytes(int(token_id)))

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)


class HFCodec:
    """Any tokenizer.json through the `tokenizers` package (the `[tokenizers]` extra)."""

    def __init__(self, text: str) -> None:
        from tokenizers import Tokenizer as HFTokenizer

        try:
            self._tok = HFTokenizer.from_str(text)
        except Exception as e:  # tokenizers raises a bare Exception for unreadable files
            raise ValueError(str(e)) from e
        # a copy that splits special-token text like any other (`encode_special_tokens`): a copy
        # rather than a toggle, because requests are encoded on several threads at once
        self._plain = HFTokenizer.from_str(text)
        self._plain.encode_special_tokens = True
        self.vocab_size = self._tok.get_vocab_size()
        self.specials = {t.content: i for i, t in self._tok.get_added_tokens_decoder().items() if t.special}
        self.split = special_splitter(self.specials)

    def encode(self, text: str, specials: bool, template: bool) -> list[int]:
        return (self._tok if specials else self._plain).encode(text, add_special_tokens=template).ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def stream(self, prompt_ids: Sequence[int]) -> Stream:
        return _HFStream(self, prompt_ids)

    def token_to_id(self, text: str) -> int | None:
        return self._tok.token_to_id(text)

    def id_to_token(self, token_id: int) -> str | None:
        return self._tok.id_to_token(token_id)


class _HFStream:
    """Text deltas through the tokenizers library's own `DecodeStream`: it decodes each token in
    the context of the ones before it (so a leading space some decoders attach to a token is
    kept; the last prompt tokens seed that context) and holds back an incomplete character."""

    def __init__(self, codec: HFCodec, prompt_ids: Sequence[int] = ()) -> None:
        from tokenizers.decoders import DecodeStream

        self._codec = codec
        self._stream = DecodeStream(ids=list(prompt_ids[-4:]), skip_special_tokens=True)
        self._held: list[int] = []  # tokens pushed since the last text (an incomplete character)

    def push(self, token_id: int) -> str:
        text = self._stream.step(self._codec._tok, int(token_id))
        if text is None:
            self._held.append(int(token_id))
            return ""
        self._held.clear()
        return text

    def flush(self) -> str:
        text = self._codec.decode(self._held, True) if self._held else ""
        self._held.clear()
        return text
