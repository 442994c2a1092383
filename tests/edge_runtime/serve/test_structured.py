"""Structured output, tool calls and logprobs through the official `openai` client.

The tiny model's text is random: only constrained decoding makes its JSON parse, which is
what these tests check.
"""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import openai
import pytest
from pydantic import BaseModel, Field

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 10},
                                                    "days": {"type": "integer", "minimum": 1, "maximum": 7}},
                   "required": ["city", "days"], "additionalProperties": False}}}
TIME_TOOL = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}},
                                       "required": ["zone"], "additionalProperties": False}}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


class Weather(BaseModel):
    city: str = Field(max_length=12)
    temp_c: int = Field(ge=-50, le=60)
    sunny: bool


@pytest.fixture
def oa(live) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.url + "/v1", api_key=live.key, max_retries=0, timeout=60)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_parse_returns_a_validated_object(oa, temperature):
    r = oa.chat.completions.parse(model="tiny", messages=ASK, response_format=Weather, max_tokens=120,
                                  temperature=temperature, seed=3)
    assert r.choices[0].finish_reason == "stop"
    w = r.choices[0].message.parsed
    assert isinstance(w, Weather) and -50 <= w.temp_c <= 60


def test_json_object_and_schema_stream(oa):
    schema = Weather.model_json_schema()
    stream = oa.chat.completions.create(
        model="tiny", messages=ASK, max_tokens=120, temperature=1.0, seed=5, stream=True,
        response_format={"type": "json_schema", "json_schema": {"name": "w", "schema": schema}})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(text), schema)
    r = oa.chat.completions.create(model="tiny", messages=ASK, max_tokens=120, seed=1, temperature=1.0,
                                   response_format={"type": "json_object"})
    if r.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(r.choices[0].message.content), dict)


def test_impossible_within_max_tokens_says_length(oa):
    schema = {"type": "object", "properties": {"essay": {"type": "string", "minLength": 200}}, "required": ["essay"]}
    r = oa.chat.completions.create(model="tiny", messages=ASK, max_tokens=8,
                                   response_format={"type": "json_schema", "json_schema": {"name": "e", "schema": schema}})
    assert r.choices[0].finish_reason == "length"
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.choices[0].message.content)
    with pytest.raises(openai.LengthFinishReasonError):
        oa.chat.completions.parse(model="tiny", messages=ASK, response_format=Weather, max_tokens=4)


def test_tool_call_round_trip(oa):
    r = oa.chat.completions.create(model="tiny", messages=ASK, tools=[WEATHER_TOOL, TIME_TOOL],
                                   tool_choice="required", max_tokens=80, temperature=1.0, seed=2)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    tool = {"get_weather": WEATHER_TOOL, "get_time": TIME_TOOL}[call.function.name]
    jsonschema.validate(json.loads(call.function.arguments), tool["function"]["parameters"])
    messages = [*ASK, choice.message.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 21}'}]
    final = oa.chat.completions.create(model="tiny", messages=messages, tools=[WEATHER_TOOL, TIME_TOOL],
                                       tool_choice="none", max_tokens=8)
    assert final.choices[0].message.tool_calls is None and isinstance(final.choices[0].message.content, str)


def test_named_tool_choice_and_streamed_deltas(oa):
    stream = oa.chat.completions.create(
        model="tiny", messages=ASK, tools=[WEATHER_TOOL, TIME_TOOL], max_tokens=80, stream=True,
        tool_choice={"type": "function", "function": {"name": "get_time"}})
    chunks = [c for c in stream if c.choices]
    deltas = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert deltas[0].function.name == "get_time" and deltas[0].id.startswith("call_")
    args = "".join(d.function.arguments or "" for d in deltas)
    assert json.loads(args)["zone"] in ("UTC", "CET")
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_auto_answers_text_or_a_valid_call(oa):
    for seed in range(3):
        r = oa.chat.completions.create(model="tiny", messages=ASK, tools=[WEATHER_TOOL], max_tokens=40,
                                       temperature=1.0, seed=seed)
        m = r.choices[0].message
        if m.tool_calls:
            jsonschema.validate(json.loads(m.tool_calls[0].function.arguments), WEATHER_TOOL["function"]["parameters"])
        else:
            assert not m.content.startswith("<")


def test_logprobs_match_the_tokens(oa):
    r = oa.chat.completions.create(model="tiny", messages=ASK, max_tokens=12, logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) in (r.usage.completion_tokens, r.usage.completion_tokens - 1)  # a final EOS has none
    assert b"".join(bytes(t.bytes) for t in content).decode() == r.choices[0].message.content
    for t in content:  # greedy: the chosen token is the most likely one
        assert len(t.top_logprobs) == 3 and t.top_logprobs[0].logprob == pytest.approx(t.logprob)
    stream = oa.chat.completions.create(model="tiny", messages=ASK, max_tokens=12, logprobs=True, top_logprobs=3,
                                        stream=True)
    streamed = [t for c in stream if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    assert [t.logprob for t in streamed] == pytest.approx([t.logprob for t in content])
    c = oa.completions.create(model="tiny", prompt="Once upon", max_tokens=6, logprobs=2)
    lp = c.choices[0].logprobs
    assert "".join(lp.tokens) == c.choices[0].text and all(len(d) <= 2 for d in lp.top_logprobs)


@pytest.mark.parametrize("constrained", [False, True])
def test_logprobs_sum_to_the_sequence_log_likelihood(live, constrained):
    """The returned logprobs are the variant's own: teacher-forcing the tokens gives the same sum."""
    rt = live.runtime
    kw = {}
    if constrained:
        kw["constraint"] = rt.grammars.compile_json_schema(Weather.model_json_schema(), "response_format")
    r = rt.chat(ASK, max_tokens=20, temperature=1.0, seed=7, logprobs=True, **kw)
    tokens = [lp.token for lp in r.logprobs]
    assert tokens == r.token_ids[: len(tokens)]
    loaded, _ = rt.pool.get(rt.variant_index(r.variant), 256)
    dec = loaded.decoder
    dec.reset()
    logits = dec.prefill(rt.tokenizer.encode_chat(ASK))
    total = 0.0
    for t in tokens:
        x = logits.astype(np.float64)
        total += x[t] - (x.max() + np.log(np.exp(x - x.max()).sum()))
        logits = dec.step(t)
    assert sum(lp.logprob for lp in r.logprobs) == pytest.approx(total, abs=1e-3)


@pytest.mark.parametrize("extra, field", [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "strin"}}}},
     "response_format"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"not": {"type": "string"}}}}},
     "response_format.*not"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "response_format.json_schema.schema"),
    ({"tools": [{"type": "function", "function": {"parameters": {}}}]}, "tools.0.function.name"),
    ({"tools": [WEATHER_TOOL], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
     "tool_choice.function.name: 'nope'"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ({"response_format": {"type": "json_object"}, "stop": ["}"]}, "stop"),
])
def test_bad_input_names_the_field(oa, extra, field):
    with pytest.raises(openai.BadRequestError, match=field):
        oa.chat.completions.create(model="tiny", messages=ASK, max_tokens=4, **extra)
