"""Text in and out: the bundle's `tokenizer.json` and its chat template.

`Tokenizer.from_bundle` loads what the exporter saved; `encode`/`decode` are the usual
pair; `render_chat` turns OpenAI-style messages (and tools) into a prompt through the
model's own Jinja chat template, rendered as transformers' `apply_chat_template` renders
it, and `stream_decoder` turns a growing list of token ids into text deltas without
splitting a multi-byte character across two deltas.

Two codecs read `tokenizer.json`, both the Rust `tokenizers` crate underneath:

- `ByteLevelCodec`, for byte-level BPE (SmolLM2, Llama 3, Qwen2): encoding through the
  tokenizer inside llguidance, which the runtime already needs for constrained decoding.
  A token is a byte string (its vocabulary entry spelled in GPT-2's byte alphabet), so
  decoding is joining bytes and reading them as UTF-8 (incrementally when streaming). It keeps the base install free of the `tokenizers` package, whose
  huggingface-hub dependency brings 30 MB the device never imports (docs/deployment.md).
- `HFCodec`, for any other tokenizer (SentencePiece-style Llama 2, TinyLlama, Mistral):
  the `tokenizers` package, from the `[tokenizers]` extra.

Both give the ids and text `tokenizers` gives (tests/edge_runtime/engine/test_tokenizer.py
compares them on random text, special tokens included).

A bundle without a chat template still serves chat requests through `FALLBACK_TEMPLATE`
(one "role: content" line per message, then "assistant:"), with one warning at load.
"""

from __future__ import annotations

import codecs
import json
import logging
import os
import re
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from edge_runtime.bundle import Manifest
from edge_runtime.errors import BundleError, RequestError

log = logging.getLogger(__name__)

FALLBACK_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
ROLES = ("system", "user", "assistant", "tool", "developer")


class Stream(Protocol):
    def push(self, token_id: int) -> str:
        """Add one token; the new text it completes (maybe "")."""

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character at the very end, as U+FFFD)."""


class Codec(Protocol):
    """Ids from text and text from ids, as the `tokenizers` package gives them."""

    vocab_size: int
    specials: dict[str, int]  # special tokens' text -> id

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
        self._split = special_splitter(self.specials)
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
        for j, part in enumerate(self._split.split(text) if specials and self._split else [text]):
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


class Tokenizer:
    """The bundle's tokenizer and chat template.

    Args:
        tokenizer_json: the text of the bundle's tokenizer.json.
        chat_template: the model's Jinja chat template (None: `FALLBACK_TEMPLATE`).
        bos_token_id, eos_token_ids: from the manifest's `model`.
        source: the file the tokenizer came from, for messages.

    Raises:
        BundleError: the tokenizer cannot be read, or the template does not compile.
        MissingExtra: the tokenizer needs the `[tokenizers]` extra (`open_codec`).
    """

    def __init__(self, tokenizer_json: str, chat_template: str | None = None,
                 bos_token_id: int | None = None, eos_token_ids: Sequence[int] = (),
                 source: str = "tokenizer.json") -> None:
        self.json = tokenizer_json
        self.eos_token_ids = frozenset(int(i) for i in eos_token_ids)
        self.bos_token_id = bos_token_id
        self.codec = open_codec(tokenizer_json, sorted(self.eos_token_ids), source)
        if chat_template is None:
            log.warning("the bundle has no chat template: chat requests use a plain 'role: content' prompt")
        self.chat_template = chat_template or FALLBACK_TEMPLATE
        self._template = _compile(self.chat_template)
        self._special_ids = self.codec.specials
        self._specials = special_splitter(self._special_ids)

    @classmethod
    def from_bundle(cls, bundle_dir: str | os.PathLike[str], manifest: Manifest) -> Tokenizer:
        path = Path(bundle_dir) / manifest.tokenizer
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise BundleError(f"cannot read the tokenizer {str(path)!r} ({e}); re-export the bundle") from e
        m = manifest.model
        return cls(text, m.chat_template, m.bos_token_id, m.eos_token_ids, str(path))

    @property
    def vocab_size(self) -> int:
        return self.codec.vocab_size

    def token_id(self, text: str) -> int | None:
        """The id of the token spelled `text` (`<|im_end|>`), if there is one."""
        return self.codec.token_to_id(text)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of `text`; special tokens written in the text (`<|im_start|>`) are recognized;
        `add_special_tokens`: what the tokenizer's post-processor adds (a BOS token, say)."""
        return self.codec.encode(text, specials=True, template=add_special_tokens)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.codec.decode(ids, skip_special_tokens)

    def render_chat(self, messages: Sequence[dict[str, Any]], add_generation_prompt: bool = True,
                    tools: Sequence[dict[str, Any]] | None = None) -> str:
        """The prompt for `messages` ([{"role", "content"}, ...]) through the chat template, as text.

        Rendered as transformers' `apply_chat_template` renders it: the same Jinja
        environment (`_compile`), `tools` (OpenAI tool objects, as given) and
        `add_generation_prompt` passed through, and the special tokens the bundle defines.

        Raises:
            RequestError: a message is malformed or the template refuses it.
        """
        return self._render([_check_message(m, i) for i, m in enumerate(messages)], add_generation_prompt, tools)

    def _render(self, msgs: list[dict[str, Any]], add_generation_prompt: bool = True,
                tools: Sequence[dict[str, Any]] | None = None) -> str:
        if not msgs:
            raise RequestError("messages must hold at least one message")
        special = {name: self._special(i) for name, i in (
            ("bos_token", self.bos_token_id), ("eos_token", min(self.eos_token_ids) if self.eos_token_ids else None))
            if i is not None}
        try:
            return self._template.render(messages=msgs, tools=list(tools) if tools is not None else None,
                                         documents=None, add_generation_prompt=add_generation_prompt, **special)
        except RequestError:
            raise
        except Exception as e:  # jinja2 raises TemplateError subclasses, templates raise anything
            raise RequestError(f"the chat template cannot render these messages ({type(e).__name__}: {e})") from e

    def encode_chat(self, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]] | None = None) -> list[int]:
        """Token ids of the chat prompt: the template's markup may give special tokens, the contents never.

        The template is rendered with a placeholder in place of each message's content. Special
        tokens are then taken from the markup only (`<|im_start|>`), and the text between them,
        markup and contents alike, is encoded with special-token text treated as plain text: so
        `<|im_end|>` typed by a user is ordinary text and cannot close its turn or forge a role,
        while an honest prompt gets exactly the ids of encoding the rendered text in one piece.
        A template that alters contents (trims them, say) alters the placeholders, not the text.
        """
        msgs = [_check_message(m, i) for i, m in enumerate(messages)]
        tag = f"\x00edge-{secrets.token_hex(6)}-"
        rendered = check_text(self._render([{**m, "content": f"{tag}{i}\x00"} for i, m in enumerate(msgs)],
                                           tools=tools), "messages")  # other message fields (`name`) reach the markup
        ids: list[int] = []
        text: list[str] = []  # the run of text since the last special token
        for i, piece in enumerate(re.split(re.escape(tag) + r"(\d+)\x00", rendered)):
            if i % 2:  # a message's content: text, whatever it holds
                text.append(msgs[int(piece)]["content"])
                continue
            for j, part in enumerate(self._specials.split(piece) if self._specials else [piece]):
                if j % 2:  # a special token written by the template
                    ids += self._plain("".join(text)) + [self._special_ids[part]]
                    text = []
                else:
                    text.append(part)
        return ids + self._plain("".join(text))

    def _plain(self, text: str) -> list[int]:
        """Token ids of `text` with special-token strings in it encoded as ordinary text."""
        return self.codec.encode(text, specials=False, template=False) if text else []

    def _special(self, token_id: int) -> str:
        return self.codec.id_to_token(token_id) or ""

    def stream_decoder(self, prompt_ids: Sequence[int] = ()) -> Stream:
        """Text deltas for the tokens generated after `prompt_ids`: `push(id)` each, then `flush()`."""
        return self.codec.stream(prompt_ids)


def check_text(text: str, where: str) -> str:
    """`text` if it is valid Unicode; a lone surrogate (JSON allows "\\ud800") cannot be tokenized."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise RequestError(f"{where} holds an unpaired surrogate ({text[e.start]!r} at character {e.start}), "
                           "which is not text; send valid UTF-8") from None
    return text


def _check_message(m: Any, i: int) -> dict[str, Any]:
    if not isinstance(m, dict):
        raise RequestError(f"messages[{i}] must be an object with 'role' and 'content', got {type(m).__name__}")
    role, content = m.get("role"), m.get("content")
    if role not in ROLES:
        raise RequestError(f"messages[{i}].role must be one of {list(ROLES)}, got {role!r}")
    if isinstance(content, list):  # OpenAI content parts: keep the text ones
        texts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        if len(texts) != len(content) or not all(isinstance(t, str) for t in texts):
            raise RequestError(f"messages[{i}].content: only text parts are supported")
        content = "".join(texts)
    if content is None:
        content = ""
    if not isinstance(content, str):
        raise RequestError(f"messages[{i}].content must be a string, got {type(content).__name__}")
    return {**m, "role": role, "content": check_text(content, f"messages[{i}].content")}


def _compile(source: str) -> Any:
    """The template compiled in transformers' chat-template environment (`_cached_compile_jinja_template`).

    A sandbox that cannot mutate its inputs, `trim_blocks` and `lstrip_blocks`, the loop
    controls extension (`break`, `continue`), a `{% generation %}` block that renders its body,
    `tojson` that keeps non-ASCII text (json.dumps, not Jinja's HTML-escaping filter),
    `strftime_now`, `raise_exception` and a `dict` constructor.
    """
    import json
    from datetime import datetime

    import jinja2.ext
    from jinja2 import TemplateError, nodes
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(jinja2.ext.Extension):  # transformers tracks assistant spans here; rendering is the body
        tags = {"generation"}

        def parse(self, parser: Any) -> nodes.Node:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller: Any) -> str:
            return caller()

    def raise_exception(message: str) -> None:
        raise RequestError(f"the chat template refused the messages: {message}")

    def tojson(x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None,
               sort_keys: bool = False) -> str:
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[Generation, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda format: datetime.now().strftime(format)
    env.globals["dict"] = dict
    try:
        return env.from_string(source)
    except TemplateError as e:
        raise BundleError(f"the bundle's chat template does not compile ({e}); fix model.chat_template") from e
