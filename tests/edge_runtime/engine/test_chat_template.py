"""The chat template renders byte-identical to transformers' `apply_chat_template`.

A PreTrainedTokenizerFast is built from the tiny bundle's own tokenizer.json; each template
below exercises one thing transformers' Jinja environment does differently from plain Jinja.
"""

from __future__ import annotations

import pytest

from edge_runtime.bundle import read_manifest
from edge_runtime.engine.tokenizer import Tokenizer

CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
          "'<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
TEMPLATES = {
    "loop_controls": (
        "{% for m in messages %}{% if m.role == 'system' %}{% continue %}{% endif %}"
        "{% if loop.index > 4 %}{% break %}{% endif %}\n  [{{ loop.index }}] {{ m.role }}: {{ m.content }}\n"
        "{% endfor %}{% if add_generation_prompt %}>{% endif %}"),
    "tojson_non_ascii": (
        "{{ messages | tojson }}|{{ messages[-1].content | tojson(indent=2) }}|{{ {'k': 'ü<>&'} | tojson }}"),
    "tools": (  # Hermes/Qwen style: the tool list as JSON lines, calls and tool results in the conversation
        "{% if tools %}<|im_start|>system\nYou may call:\n<tools>\n{% for t in tools %}{{ t | tojson }}\n"
        "{% endfor %}</tools><|im_end|>\n{% endif %}"
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.tool_calls %}{% for c in m.tool_calls %}"
        "<tool_call>{\"name\": {{ c.function.name | tojson }}, \"arguments\": {{ c.function.arguments }}}"
        "</tool_call>{% endfor %}{% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"),
    "namespace_dict_generation": (
        "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}"
        "{{ eos_token }}{{ ns.n }}{{ dict(a=1) | tojson }}{% for m in messages %}{% if m.role == 'assistant' %}"
        "{% generation %}{{ m.content }}{% endgeneration %}{% endif %}{% endfor %}"
        "{{ strftime_now('%Y') }}"),
    "chatml": CHATML,
}
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Météo d'une ville — 天気",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
MESSAGES = [
    {"role": "system", "content": "Sois bref."},
    {"role": "user", "content": "Quel temps à Zürich? 日本語 \"quoted\" <tag> & more"},
    {"role": "assistant", "content": "", "tool_calls": [{"id": "call_1", "type": "function", "function": {
        "name": "get_weather", "arguments": "{\"city\": \"Zürich\"}"}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp_c\": 21}"},
    {"role": "assistant", "content": "Il fait 21 °C."},
    {"role": "user", "content": "Merci\n  !"},
]


@pytest.fixture(scope="module")
def both(tiny_bundle):
    """(ours, transformers') for the tiny bundle's tokenizer."""
    transformers = pytest.importorskip("transformers")
    ours = Tokenizer.from_bundle(tiny_bundle, read_manifest(tiny_bundle))
    eos = ours.codec.id_to_token(min(ours.eos_token_ids))
    hf = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tiny_bundle / "tokenizer.json"), eos_token=eos)
    return ours, hf


@pytest.mark.parametrize("name", sorted(TEMPLATES))
@pytest.mark.parametrize("add_generation_prompt", [True, False])
@pytest.mark.parametrize("tools", [None, TOOLS])
def test_renders_as_transformers(both, name, add_generation_prompt, tools):
    ours, hf = both
    template = TEMPLATES[name]
    mine = Tokenizer(ours.json, template, ours.bos_token_id, sorted(ours.eos_token_ids))
    got = mine.render_chat(MESSAGES, add_generation_prompt=add_generation_prompt, tools=tools)
    want = hf.apply_chat_template(MESSAGES, tools=tools, chat_template=template, tokenize=False,
                                  add_generation_prompt=add_generation_prompt)
    assert got == want
    assert got.encode() == want.encode()


def test_tojson_keeps_non_ascii(both):
    ours, _ = both
    mine = Tokenizer(ours.json, TEMPLATES["tojson_non_ascii"], None, sorted(ours.eos_token_ids))
    text = mine.render_chat(MESSAGES)
    assert "日本語" in text and "\\u" not in text and "&amp;" not in text
