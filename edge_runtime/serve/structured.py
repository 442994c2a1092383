"""Structured output for the OpenAI routes: `response_format`, `tools` / `tool_choice`, `logprobs`.

A request's `Plan` says which grammar its output must follow (compiled by the runtime's
`engine.grammar.Grammars` into a per-request `Constraint`) and how to read the output back.

Tool calls are written by the model in a constrained envelope, the Hermes / Qwen format:

    <tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>

where the JSON is forced to name one of the request's functions and to give arguments
valid under that function's `parameters` schema. `tool_choice`:

- `"none"` (or no tools): free text (or `response_format`); the tools still go to the template.
- `"auto"` (the default with tools): either an answer that does not begin with "<" (free
  text, or JSON under `response_format`) or one call.
- `"required"`: one call to any of the functions; a named function: one call to it.

The envelope is turned back into OpenAI's `tool_calls` (arguments as a JSON string) with
`finish_reason: "tool_calls"`. One call per answer (`parallel_tool_calls` may be either).
The chat template receives the tools as transformers passes them (`tools=` in its
context); a template that ignores them (SmolLM2's does) still gets valid calls, because the
grammar, not the prompt, guarantees their form.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from edge_runtime.engine.grammar import (
    Constraint,
    Grammars,
    json_schema_grammar,
    lark_grammar,
    schema_text,
)
from edge_runtime.engine.sampling import TokenLogprob
from edge_runtime.errors import RequestError

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
ANY_OBJECT: dict[str, Any] = {"type": "object"}


@dataclass(frozen=True)
class Plan:
    """How one chat request's output is constrained and read back."""

    grammar: str | None = None  # llguidance grammar; None: free text
    where: str = ""  # the request field the grammar comes from (for error messages)
    tool_mode: str = "none"  # none | auto | call
    tools: tuple[dict[str, Any], ...] | None = None  # OpenAI tool objects, for the chat template

    def constraint(self, grammars: Grammars) -> Constraint | None:
        """A fresh per-request `Constraint` (RequestError naming the field when the grammar is bad)."""
        return None if self.grammar is None else grammars.compile(self.grammar, self.where)


def plan_chat(body: Any) -> Plan:
    """The `Plan` for a `schemas.ChatCompletionRequest`; RequestError (400) naming the bad field."""
    answer = _answer_schema(body.response_format)
    tools = [t.model_dump(by_alias=True, exclude_none=True) for t in body.tools] if body.tools else None
    choice = body.tool_choice
    if tools is None and choice not in (None, "none"):
        raise RequestError("tool_choice: give tools to choose from, or leave tool_choice out")
    mode = "none" if tools is None or choice == "none" else ("auto" if choice in (None, "auto") else "call")
    if body.stop and (answer is not None or mode != "none"):
        raise RequestError("stop cannot be combined with response_format or tools (a stop string would cut the "
                           "structured output short); leave stop out")
    if mode == "none":
        grammar = None if answer is None else _json(answer)
        return Plan(grammar, "response_format", "none", tuple(tools) if tools else None)
    functions = [t["function"] for t in tools or []]
    if not isinstance(choice, str) and choice is not None:
        named = [f for f in functions if f["name"] == choice.function.name]
        if not named:
            raise RequestError(f"tool_choice.function.name: {choice.function.name!r} is not one of the tools "
                               f"{[f['name'] for f in functions]}")
        functions = named
    call = {"anyOf": [_envelope(f, i) for i, f in enumerate(functions)], "x-guidance": {"whitespace_flexible": False}}
    rules = [f'call: "{CALL_OPEN}" call_json "{CALL_CLOSE}"', f"call_json: %json {schema_text(call)}"]
    if mode == "auto":
        text = (f"answer: %json {schema_text({**answer, 'x-guidance': {'whitespace_flexible': False}})}"
                if answer is not None else "answer: /[^<][\\s\\S]*/")
        rules = ["start: answer | call", text, *rules]
    else:
        rules = ["start: call", *rules]
    return Plan(_lark("\n".join(rules), "tools"), "tools", mode, tuple(tools or ()))


def _answer_schema(fmt: Any) -> dict[str, Any] | None:
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return dict(ANY_OBJECT)
    if fmt.json_schema is None or fmt.json_schema.schema_ is None:
        raise RequestError("response_format.json_schema.schema is required with type 'json_schema'")
    return fmt.json_schema.schema_


def _envelope(function: dict[str, Any], i: int) -> dict[str, Any]:
    params = function.get("parameters") or ANY_OBJECT
    if not isinstance(params, dict):
        raise RequestError(f"tools[{i}].function.parameters must be a JSON schema object")
    return {"type": "object", "properties": {"name": {"const": function["name"]}, "arguments": params},
            "required": ["name", "arguments"], "additionalProperties": False}


def _json(schema: dict[str, Any]) -> str:
    try:
        return json_schema_grammar(schema)
    except (ValueError, TypeError) as e:
        raise RequestError(f"response_format.json_schema.schema: {e}") from e


def _lark(source: str, where: str) -> str:
    try:
        return lark_grammar(source)
    except (ValueError, TypeError) as e:
        raise RequestError(f"{where}: {e}") from e


def read_answer(text: str, finish: str, plan: Plan) -> tuple[dict[str, Any], str]:
    """The assistant message and finish_reason for the generated `text` under `plan`.

    A call cut short by max_tokens is returned as the raw text with "length", never as a call.
    """
    if plan.tool_mode != "none" and text.startswith(CALL_OPEN) and finish == "stop":
        calls = []
        for part in text.split(CALL_CLOSE):
            if part.startswith(CALL_OPEN):
                env = json.loads(part[len(CALL_OPEN) :])
                calls.append({"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function", "function": {
                    "name": env["name"], "arguments": json.dumps(env["arguments"], ensure_ascii=False)}})
        return {"role": "assistant", "content": None, "tool_calls": calls}, "tool_calls"
    return {"role": "assistant", "content": text}, finish


def chat_logprobs(lps: Sequence[TokenLogprob], token_bytes: Callable[[int], bytes]) -> dict[str, Any]:
    """OpenAI's chat `logprobs`: {"content": [{token, logprob, bytes, top_logprobs}, ...]}."""

    def one(token: int, logprob: float) -> dict[str, Any]:
        b = token_bytes(token)
        return {"token": b.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(b)}

    return {"content": [{**one(lp.token, lp.logprob), "top_logprobs": [one(t, v) for t, v in lp.top]}
                        for lp in lps]}


def completion_logprobs(lps: Sequence[TokenLogprob], token_bytes: Callable[[int], bytes],
                        offset: int = 0) -> dict[str, Any]:
    """OpenAI's legacy completions `logprobs`: tokens, token_logprobs, top_logprobs, text_offset."""
    tokens = [token_bytes(lp.token).decode("utf-8", errors="replace") for lp in lps]
    offsets = []
    for t in tokens:
        offsets.append(offset)
        offset += len(t)
    return {"tokens": tokens, "token_logprobs": [lp.logprob for lp in lps],
            "top_logprobs": [{token_bytes(t).decode("utf-8", errors="replace"): v for t, v in lp.top} for lp in lps],
            "text_offset": offsets}
