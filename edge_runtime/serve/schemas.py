"""The HTTP schemas of `edge-serve`: OpenAI-compatible requests and responses, plus the native ones.

Validation is strict (a string is not a number, `true` is not an integer), so a wrong
type is a 400 with the field's name rather than a silent coercion. Fields an OpenAI
client may send that change nothing in the answer (`user`, `service_tier`, ...) are
accepted and ignored; the ones whose meaning it cannot honour (`n` > 1, `echo`, and every
field in `UNSUPPORTED_FIELDS`: `logit_bias`, `modalities`, ...) are refused with 400 naming
the field. `response_format`, `tools` / `tool_choice` and `logprobs` / `top_logprobs` are
honoured (see `edge_runtime.serve.structured`).

Extensions to OpenAI's request bodies (all optional): `top_k`, `priority` (higher is
served first), `deadline_s` (seconds from arrival by which generation must start),
`difficulty` (0 easy .. 1 needs the dense model's quality; what the controller calls
`hard`), `ignore_eos`. Responses add `edge` (the variant that served the request and
why) and `timings` (llama.cpp's names, plus queue, decision and load times).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

if TYPE_CHECKING:
    from edge_runtime.request import Result

MAX_STOP = 4

# OpenAI request fields whose meaning this server does not honour (yet): a request that sets one
# gets 400 naming it, never a silently different answer. Delete a name here when it is implemented.
UNSUPPORTED_FIELDS: dict[str, str] = {
    "functions": "function calling (deprecated by OpenAI: send `tools`)",
    "function_call": "function calling (deprecated by OpenAI: send `tool_choice`)",
    "logit_bias": "logit bias",
    "modalities": "audio output",
    "audio": "audio output",
    "prediction": "predicted outputs",
    "web_search_options": "web search",
}


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class StreamOptions(_Strict):
    include_usage: bool = False  # one last chunk with `usage` and no choices


# Honoured by the chat route only (edge_runtime.serve.structured): refused on /v1/completions.
CHAT_ONLY_FIELDS: dict[str, str] = {
    "tools": "tool calling (on /v1/chat/completions only)",
    "tool_choice": "tool calling (on /v1/chat/completions only)",
    "parallel_tool_calls": "tool calling (on /v1/chat/completions only)",
    "response_format": "structured output (on /v1/chat/completions only)",
    "top_logprobs": "top_logprobs (on /v1/completions, `logprobs` is the number of alternatives)",
}


class _Sampling(_Strict):
    _unsupported: ClassVar[dict[str, str]] = {**UNSUPPORTED_FIELDS, **CHAT_ONLY_FIELDS}

    @model_validator(mode="before")
    @classmethod
    def _refuse_unsupported(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, what in cls._unsupported.items():
                if data.get(name) not in (None, [], {}):
                    raise PydanticCustomError(
                        "unsupported_field", "{field}: {what} is not supported by this server; leave the field out",
                        {"field": name, "what": what})
        return data

    model: str | None = Field(None, description="the bundle's name (the controller chooses) or a variant's name (pinned)")
    temperature: float | None = Field(None, ge=0.0, le=2.0, description="0 = greedy")
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0, description="extension: keep the k most likely tokens; 0 = off")
    n: int = Field(1, ge=1, le=1, description="only one choice per request")
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = Field(None, description=f"up to {MAX_STOP} stop strings")
    seed: int | None = Field(None, ge=0)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    user: str | None = None
    priority: int = Field(0, ge=-1000, le=1000, description="extension: higher is served first")
    deadline_s: float | None = Field(None, gt=0.0, le=86400.0,
                                     description="extension: seconds from arrival by which generation must start")
    difficulty: float | None = Field(None, ge=0.0, le=1.0,
                                     description="extension: 0 easy .. 1 needs the dense model's quality; "
                                                 "default: the bundle's difficulty model estimates it")
    ignore_eos: bool = Field(False, description="extension: generate past end-of-sequence tokens")


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[int] = Field(..., description="a string, a one-string list, or token ids")
    max_tokens: int | None = Field(None, ge=1, description="default: the server's --default-max-tokens")
    echo: Literal[False] = False
    logprobs: int | None = Field(None, ge=0, le=5, description="log-probabilities of the chosen tokens and "
                                 "this many alternatives per position")
    best_of: int | None = Field(None, ge=1, le=1)
    suffix: None = None


class ChatMessage(_Strict):
    model_config = ConfigDict(strict=True, extra="allow")
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = None


class JsonSchemaFormat(_Strict):
    model_config = ConfigDict(strict=True, extra="ignore", populate_by_name=True)
    name: str = Field(..., min_length=1, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema", description="the JSON schema the answer follows")
    strict: bool | None = None  # the output always follows the schema, strict or not


class ResponseFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class FunctionDefinition(_Strict):
    name: str = Field(..., pattern=r"^[A-Za-z0-9_-]{1,64}$", description="letters, digits, _ and -, at most 64")
    description: str | None = None
    parameters: dict[str, Any] | None = Field(None, description="a JSON schema for the arguments object")
    strict: bool | None = None


class Tool(_Strict):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(_Strict):
    name: str


class NamedToolChoice(_Strict):
    type: Literal["function"]
    function: NamedFunction


class ChatCompletionRequest(_Sampling):
    _unsupported: ClassVar[dict[str, str]] = UNSUPPORTED_FIELDS
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1, description="OpenAI's newer name for max_tokens")
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None  # at most one call per answer either way


# ---------------------------------------------------------------------------- responses


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class EdgeInfo(BaseModel):
    """Which variant served the request and why."""

    variant: str
    reason: str  # for people
    source: str = ""  # for code: policy | rule | static | fallback | pinned | retry | oracle
    cold_start: bool = False  # the variant was loaded for this request
    retried_from: str | None = None  # a variant that failed first


class Timings(BaseModel):
    """Milliseconds; llama.cpp's field names, plus the runtime's own steps."""

    queue_ms: float
    decide_ms: float
    load_ms: float
    prompt_n: int
    prompt_ms: float
    prompt_per_second: float
    predicted_n: int
    predicted_ms: float
    predicted_per_token_ms: float
    predicted_per_second: float
    total_ms: float
    energy_j: float | None = None  # measured joules of the request; absent where the board reports no power
    drafted_n: int = 0  # speculative pairs: tokens the drafter proposed
    accepted_n: int = 0  # of them, kept by the verifier


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: str | None = None
    logprobs: dict[str, Any] | None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    edge: EdgeInfo | None = None
    timings: Timings | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[dict[str, Any]] | None = None


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str | None = None
    logprobs: dict[str, Any] | None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    edge: EdgeInfo
    timings: Timings


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "edge-runtime"
    edge: dict[str, Any] = Field(default_factory=dict, description="variant facts: sparsity, gate, loaded, ...")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    code: int
    message: str
    type: str


class ErrorResponse(BaseModel):
    """Every failure, on every route."""

    error: ErrorBody


class Health(BaseModel):
    status: Literal["ok", "loading", "error", "shutting_down"]
    detail: str | None = None


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI documentation of the error envelope for `codes`."""
    text = {400: "invalid request", 401: "missing or wrong API key", 404: "unknown model or route",
            408: "the request's deadline passed before it could start", 413: "request body too large",
            429: "the queue is full; see Retry-After", 500: "internal error",
            503: "loading, shutting down, or no variant can run; see Retry-After"}
    return {c: {"model": ErrorResponse, "description": text.get(c, "error")} for c in codes}


# ---------------------------------------------------------------------------- response bodies


def sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def finish_reason(r: Result) -> str:
    return "length" if r.finish_reason == "length" else "stop"


def usage(r: Result) -> dict[str, int]:
    return {"prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
            "total_tokens": r.prompt_tokens + r.completion_tokens}


def edge(r: Result) -> dict[str, Any]:
    return {"variant": r.variant, "reason": r.reason, "source": r.source, "cold_start": r.cold_start, "retried_from": r.retried_from}


def timings(r: Result) -> dict[str, float]:
    t = r.timings
    return {"queue_ms": 1e3 * t.queue_s, "decide_ms": 1e3 * t.decide_s, "load_ms": 1e3 * t.load_s,
            "prompt_n": t.prompt_tokens, "prompt_ms": 1e3 * t.prefill_s, "prompt_per_second": t.prefill_tokens_per_s,
            "predicted_n": t.completion_tokens, "predicted_ms": 1e3 * (t.prefill_s + t.decode_s),
            "predicted_per_token_ms": t.decode_ms_per_token, "predicted_per_second": t.decode_tokens_per_s,
            "total_ms": 1e3 * t.total_s, "drafted_n": t.drafted_tokens, "accepted_n": t.accepted_tokens,
            **({"energy_j": t.energy_j} if t.energy_j is not None else {})}


def completion_body(r: Result, rid: str, created: int, chat: bool) -> dict[str, Any]:
    if chat:
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": r.text},
                                  "finish_reason": finish_reason(r), "logprobs": None}
    else:
        choice = {"index": 0, "text": r.text, "finish_reason": finish_reason(r), "logprobs": None}
    return {"id": rid, "object": "chat.completion" if chat else "text_completion", "created": created,
            "model": r.variant, "choices": [choice], "usage": usage(r), "edge": edge(r), "timings": timings(r)}
