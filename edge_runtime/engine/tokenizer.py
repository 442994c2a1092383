"""Text in and out: the bundle's `tokenizer.json` and its chat template.

`Tokenizer.from_bundle` loads what the exporter saved; `encode`/`decode` are the usual
pair; `render_chat` turns OpenAI-style messages (and tools) into a prompt through the
model's own Jinja chat template, rendered as transformers' `apply_chat_template` renders
it, and `stream_decoder` turns a growing list of token ids into text deltas without
splitting a multi-byte character across two deltas. Ids and text come from a codec
(`edge_runtime.engine.codec`: llguidance's tokenizer for byte-level BPE, else `tokenizers`).

A bundle without a chat template still serves chat requests through `FALLBACK_TEMPLATE`
(one "role: content" line per message, then "assistant:"), with one warning at load.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge_runtime.bundle import Manifest
from edge_runtime.engine.codec import Stream, open_codec
from edge_runtime.errors import BundleError, RequestError

log = logging.getLogger(__name__)

FALLBACK_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
ROLES = ("system", "user", "assistant", "tool", "developer")


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
            for j, part in enumerate(self.codec.split.split(piece) if self.codec.split else [piece]):
                if j % 2:  # a special token written by the template
                    ids += self._plain("".join(text)) + [self.codec.specials[part]]
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
