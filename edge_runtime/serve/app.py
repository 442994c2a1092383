"""The `edge-serve` app: the runtime behind an OpenAI-compatible HTTP API (FastAPI).

Routes. OpenAI-compatible: `POST /v1/completions`, `POST /v1/chat/completions` (both
with SSE streaming, `usage`, `stream_options.include_usage`), `GET /v1/models` (the
bundle's name, which lets the controller choose, then every variant with its sparsity
and gate). Native: `GET /health` (503 while loading, 200 when ready), `GET /metrics`
(Prometheus), `GET /status` (signals, queue, loaded variants). The OpenAPI schema is at
`/openapi.json`.

Every failure answers `{"error": {"code", "message", "type"}}` with a 4xx/5xx status; a
full queue answers 429 and a loading or stopping server 503, both with `Retry-After`.
Every completion says which variant served it and why: headers `X-Edge-Variant` and
`X-Edge-Reason`, body fields `model`, `edge` and `timings`.

The command line (flags, EDGE_* variables, uvicorn, signals) is `edge_runtime.serve.cli`.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from edge_runtime.bundle import Manifest
from edge_runtime.errors import (
    EdgeError,
    RequestError,
    Unavailable,
)
from edge_runtime.request import Event, Handle
from edge_runtime.runtime import Runtime, RuntimeConfig
from edge_runtime.serve import schemas, structured
from edge_runtime.serve.http import (
    HTTP_TYPES,
    BodyLimit,
    HttpMetrics,
    edge_error_response,
    error_response,
    validation_message,
)

log = logging.getLogger("edge_runtime.serve.app")

AUTO_MODEL = "auto"  # besides the bundle's name and --alias: let the controller choose
_HEADER = {"schema": {"type": "string"}}
OK_COMPLETION: dict[str, Any] = {
    "content": {"text/event-stream": {}},
    "description": "JSON, or server-sent events when `stream` is true",
    "headers": {"X-Edge-Variant": {**_HEADER, "description": "the variant that served the request"},
                "X-Edge-Reason": {**_HEADER, "description": "why the controller chose it"},
                "X-Request-Id": _HEADER},
}


@dataclass(frozen=True)
class ServerConfig:
    """`edge-serve`'s settings (flags / EDGE_* variables); the runtime's own are in `runtime`."""

    bundle: str
    host: str = "127.0.0.1"  # loopback only unless told otherwise
    port: int = 8080
    api_key: str | None = None  # require `Authorization: Bearer KEY` on everything but /health
    alias: str | None = None  # another model name meaning "the controller chooses"
    max_body_bytes: int = 1 << 20  # larger request bodies get 413
    grace_s: float = 30.0  # on SIGTERM, how long accepted requests may take to finish
    timeout_s: float = 30.0  # a client gets this long to send a request's headers, and each piece of its body
    max_connections: int = 64  # open connections at most; more get 503 from uvicorn (EDGE_MAX_CONNECTIONS)
    log_level: str = "info"
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)


class State:
    """What the routes share: the config, the runtime once it is open, and the server's status."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.runtime: Runtime | None = None
        self.owns_runtime = True  # opened (and so closed) by the app, not handed in by the caller
        self.status = "loading"
        self.error: str | None = None
        self.exit_code = 0  # what edge-serve exits with: 2 for a bad bundle (an EdgeError), 1 for anything else
        self.on_fatal: Callable[[], None] = lambda: None
        self._stopping = threading.Lock()

    def public(self, message: str) -> str:
        """`message` with the bundle's location on this machine replaced by the bundle's name: what a
        client may read (`ORT cannot load 'smollm2-135m/variants/...'`)."""
        bundle = Path(self.config.bundle)
        for path in sorted({str(bundle.resolve()), str(bundle.absolute()), str(bundle)}, key=len, reverse=True):
            message = message.replace(path, bundle.resolve().name)
        return message

    def fail(self, e: BaseException) -> None:
        """The bundle cannot be served: say why (without the machine's paths) and stop the server."""
        self.status, self.error = "error", self.public(str(e))
        self.exit_code = 2 if isinstance(e, EdgeError) else 1
        self.on_fatal()

    def stop(self, grace_s: float) -> None:
        """Refuse new requests, give accepted ones `grace_s` to finish, close the runtime (idempotent;
        a second caller waits for the first). A failed server keeps its "error" status."""
        with self._stopping:
            if self.status != "error":
                self.status = "shutting_down"
            if self.owns_runtime and self.runtime is not None:
                self.runtime.close(grace_s)

    def ready(self) -> Runtime:
        if self.status == "shutting_down":
            raise Unavailable("the server is shutting down", retry_after_s=5.0)
        if self.runtime is None or self.status != "ok":
            raise Unavailable(f"the model is {self.status}" + (f": {self.error}" if self.error else ""),
                              retry_after_s=2.0)
        return self.runtime


# ------------------------------------------------------------------------------ the app


def create_app(config: ServerConfig, runtime: Runtime | None = None, *,
               manifest: Manifest | None = None) -> FastAPI:
    """The FastAPI app. With `runtime`, serve it (the caller closes it); else open the bundle in the
    background (with `manifest`, already read and checked by the CLI, it is not parsed again)."""
    state = State(config)
    if runtime is not None:
        state.runtime, state.status, state.owns_runtime = runtime, "ok", False

    def load() -> None:
        try:
            state.runtime = Runtime.open(config.bundle, config.runtime, manifest=manifest)
            state.status = "ok"
            log.info("ready: serving %s", config.bundle)
        except Exception as e:
            log.error("cannot open the bundle: %s", e)
            state.fail(e)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if runtime is None:
            threading.Thread(target=load, name="edge-serve-load", daemon=True).start()
        yield
        await run_in_threadpool(state.stop, config.grace_s)

    # no /docs or /redoc: they load their UI from a CDN, which an offline device cannot reach
    app = FastAPI(title="edge-serve", version=_version(), lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="OpenAI-compatible API over an adaptive-sparsity bundle; see edge_runtime.serve.app")
    app.state.edge = state
    _error_handlers(app, _auth(config), state.public)
    guarded = [Depends(_auth(config))]
    _native_routes(app, state, guarded)
    _openai_routes(app, state, guarded)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    # the last added runs first: count every response, the 413s and 408s of BodyLimit included
    app.add_middleware(BodyLimit, limit=config.max_body_bytes, read_timeout_s=config.timeout_s)
    app.add_middleware(HttpMetrics, state=state)
    return app


def _error_handlers(app: FastAPI, auth: Callable[[Request], None], public: Callable[[str], str]) -> None:
    """Every failure leaves as the one error envelope."""

    @app.exception_handler(EdgeError)
    async def _edge(request: Request, e: EdgeError) -> JSONResponse:
        return edge_error_response(e, public)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException) -> JSONResponse:
        return error_response(e.status_code, str(e.detail), HTTP_TYPES.get(e.status_code, "invalid_request_error"),
                              getattr(e, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        try:  # FastAPI reads the body before the dependencies: a caller without the key learns only that
            auth(request)
        except StarletteHTTPException as denied:
            return await _http(request, denied)
        return error_response(400, validation_message(e), "invalid_request_error")

    @app.exception_handler(Exception)
    async def _crash(request: Request, e: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return error_response(500, f"internal error ({type(e).__name__})", "server_error")


def _auth(config: ServerConfig) -> Callable[[Request], None]:
    """The dependency that checks `Authorization: Bearer KEY` when an API key is set."""

    def auth(request: Request) -> None:
        key = config.api_key
        if not key:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
            raise StarletteHTTPException(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                                         headers={"WWW-Authenticate": "Bearer"})

    return auth


def _native_routes(app: FastAPI, state: State, guarded: list[Any]) -> None:
    """/health, /metrics, /status."""

    @app.get("/health", response_model=schemas.Health, tags=["native"],
             responses={503: {"model": schemas.Health, "description": "loading, failed, or shutting down"}})
    async def health() -> Response:
        body = {"status": state.status, "detail": state.error}
        code = 200 if state.status == "ok" else 503
        return JSONResponse(body, status_code=code, headers=None if code == 200 else {"Retry-After": "2"})

    app.head("/health", include_in_schema=False)(health)  # load balancers probe with HEAD

    @app.get("/metrics", tags=["native"], dependencies=guarded, response_class=Response,
             responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"},
                        **schemas.error_responses(401, 503)})
    async def metrics() -> Response:
        rt = state.ready()
        rt.metrics.queue_depth.set(rt.queue.depth)
        return Response(rt.metrics.export(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/status", tags=["native"], dependencies=guarded, responses=schemas.error_responses(401, 503))
    async def status() -> dict[str, Any]:
        return await run_in_threadpool(state.ready().status)


def _openai_routes(app: FastAPI, state: State, guarded: list[Any]) -> None:
    """/v1/models, /v1/completions, /v1/chat/completions."""
    config = state.config
    common = schemas.error_responses(400, 401, 404, 408, 413, 429, 500, 503)

    @app.get("/v1/models", response_model=schemas.ModelList, tags=["openai"], dependencies=guarded,
             responses=schemas.error_responses(401, 503))
    async def models() -> dict[str, Any]:
        return _model_list(state.ready(), config)

    @app.post("/v1/completions", response_model=schemas.CompletionResponse, tags=["openai"], dependencies=guarded,
              responses={200: OK_COMPLETION, **common})
    async def completions(body: schemas.CompletionRequest, request: Request) -> Response:
        state.ready()  # 503 before any work while loading or stopping
        prompt = body.prompt
        if isinstance(prompt, list) and prompt and all(isinstance(x, str) for x in prompt):
            if len(prompt) != 1:
                raise RequestError(f"prompt: one prompt per request is supported, got {len(prompt)}")
            prompt = prompt[0]
        source = {"prompt_ids": prompt} if isinstance(prompt, list) else {"prompt": prompt}
        lp = {"logprobs": True, "top_logprobs": body.logprobs} if body.logprobs is not None else {}
        return await _serve(state, request, body, {**source, **lp}, body.max_tokens, chat=False)

    @app.post("/v1/chat/completions", response_model=schemas.ChatCompletionResponse, tags=["openai"],
              dependencies=guarded, responses={200: OK_COMPLETION, **common})
    async def chat_completions(body: schemas.ChatCompletionRequest, request: Request) -> Response:
        state.ready()  # 503 before any work while loading or stopping
        messages = [m.model_dump(exclude_none=False) for m in body.messages]
        plan = structured.plan_chat(body)
        constraint = await run_in_threadpool(plan.constraint, state.ready().grammars)
        source = {"messages": messages, "tools": list(plan.tools) if plan.tools else None, "constraint": constraint,
                  "logprobs": body.logprobs, "top_logprobs": body.top_logprobs}
        return await _serve(state, request, body, source, body.max_completion_tokens or body.max_tokens,
                            chat=True, plan=plan)


def _model_list(rt: Runtime, config: ServerConfig) -> dict[str, Any]:
    """The bundle's names (the controller chooses), then every variant with its gate and cost."""
    created = int(os.path.getmtime(rt.bundle_dir / "manifest.json"))
    allowed = rt.allowed()
    data = [{"id": n, "object": "model", "created": created, "owned_by": "edge-runtime",
             "edge": {"auto": True, "variants": list(rt.manifest.names)}} for n in _auto_names(rt, config)]
    for i, v in enumerate(rt.manifest.variants):
        data.append({"id": v.name, "object": "model", "created": created, "owned_by": "edge-runtime", "edge": {
            "method": v.method, "sparsity": v.sparsity, "structured": v.structured,
            "quantization": v.quantization, "gate": v.gate.status, "gate_failed": list(v.gate.failed),
            "allowed": bool(allowed[i]), "loaded": i in rt.pool.loaded, "perplexity": v.quality.perplexity,
            "providers": lo.session.providers if (lo := rt.pool.loaded.get(i)) else None,  # what ORT took
            "decode_ms_per_token": v.cost.decode_ms_per_token}})
    for p in rt.manifest.pairs:  # speculative pairs: the verifier's output at (ideally) the drafter's speed
        why = rt.pool.why_not_pair(p.name)
        data.append({"id": p.name, "object": "model", "created": created, "owned_by": "edge-runtime", "edge": {
            "pair": True, "verifier": p.verifier, "drafter": p.drafter, "allowed": why is None, "why_not": why,
            "acceptance": p.acceptance, "decode_ms_per_token": p.cost.decode_ms_per_token,
            "perplexity": rt.manifest.variant(p.verifier).quality.perplexity}})
    return {"object": "list", "data": data}


DISCONNECT_POLL_S = 0.2  # how often a waiting request checks that its client is still there


async def _serve(state: State, request: Request, body: Any, source: dict[str, Any], max_tokens: int | None,
                 chat: bool, plan: structured.Plan | None = None) -> Response:
    """Submit one request and answer it: JSON at the end, or server-sent events as it goes.

    Until the response starts, a watcher cancels the request as soon as its client goes away
    (a queued one leaves the queue at once); once events stream, Starlette notices instead."""
    rt, config = state.ready(), state.config
    variant = _resolve_model(rt, config, body.model)
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[Event] = asyncio.Queue()

    def sink(ev: Event) -> None:
        loop.call_soon_threadsafe(events.put_nowait, ev)

    kw = dict(variant=variant, priority=body.priority, deadline_s=body.deadline_s, difficulty=body.difficulty,
              sink=sink, stream=body.stream, max_tokens=max_tokens, temperature=body.temperature, top_p=body.top_p,
              top_k=body.top_k, seed=body.seed, stop=body.stop, ignore_eos=body.ignore_eos or None,
              presence_penalty=body.presence_penalty, frequency_penalty=body.frequency_penalty)
    handle = await run_in_threadpool(lambda: rt.submit(**source, **kw))
    created = int(time.time())
    watcher = asyncio.create_task(_cancel_when_gone(request, rt, handle))
    try:
        ev = first = await events.get()  # "start" once the first token exists, or the end
        while not body.stream and ev.kind not in ("done", "error"):
            ev = await events.get()
    except BaseException:
        if not handle.done():
            rt.cancel(handle)
        raise
    finally:
        watcher.cancel()
    if ev.kind == "error":
        assert ev.error is not None
        raise ev.error
    headers = {"X-Edge-Variant": _ascii(first.variant), "X-Edge-Reason": _ascii(first.reason),
               "X-Request-Id": handle.id}
    if first.kind == "start" and body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(_sse(rt, handle, events, first, created, chat, include_usage, state, plan,
                                      _wants_logprobs(body)),
                                 media_type="text/event-stream", headers={**headers, "Cache-Control": "no-cache"})
    assert ev.result is not None
    if ev.result.finish_reason == "cancelled" and state.status == "shutting_down":
        raise Unavailable("the server shut down before this request finished; retry it", retry_after_s=5.0)
    body_out = schemas.completion_body(ev.result, handle.id, created, chat)
    choice = body_out["choices"][0]
    if chat and plan is not None:
        choice["message"], choice["finish_reason"] = structured.read_answer(ev.result.text, choice["finish_reason"],
                                                                            plan)
    if _wants_logprobs(body):
        choice["logprobs"] = _logprobs(rt, chat, ev.result.logprobs)
    return JSONResponse(body_out, headers=headers)


def _wants_logprobs(body: Any) -> bool:
    return bool(body.logprobs) if isinstance(body, schemas.ChatCompletionRequest) else body.logprobs is not None


def _logprobs(rt: Runtime, chat: bool, lps: Any, offset: int = 0) -> dict[str, Any]:
    if chat:
        return structured.chat_logprobs(lps, rt.grammars.token_bytes)
    return structured.completion_logprobs(lps, rt.grammars.token_bytes, offset)


async def _cancel_when_gone(request: Request, rt: Runtime, handle: Handle) -> None:
    while not handle.done():
        if await request.is_disconnected():
            log.info("request %s: the client went away; cancelled", handle.id)
            rt.cancel(handle)
            return
        await asyncio.sleep(DISCONNECT_POLL_S)


async def _sse(rt: Runtime, handle: Handle, events: asyncio.Queue[Event], first: Event, created: int,
               chat: bool, include_usage: bool, state: State, plan: structured.Plan | None = None,
               want_logprobs: bool = False) -> AsyncIterator[bytes]:
    """Server-sent events. With tools, text that is (or may still become) a tool call is held
    back and sent at the end as OpenAI's tool-call deltas (name first, then the arguments)."""
    kind = "chat.completion.chunk" if chat else "text_completion"
    base = {"id": handle.id, "object": kind, "created": created, "model": first.variant}
    extra = {"usage": None} if include_usage else {}
    tool_mode = plan.tool_mode if plan is not None else "none"
    held, offset = "", 0  # text held back while it may be a tool call; completions' text offset

    def chunk(delta: dict[str, Any] | str, finish: str | None, lps: Any = None, **more: Any) -> bytes:
        logprobs = _logprobs(rt, chat, lps, offset) if want_logprobs and lps is not None else None
        if chat:
            choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": logprobs}
        else:
            choice = {"index": 0, "text": delta, "finish_reason": finish, "logprobs": logprobs}
        return schemas.sse({**base, "choices": [choice], **extra, **more})

    try:
        if chat:
            yield chunk({"role": "assistant", "content": ""}, None)
        while True:
            ev = await events.get()
            if ev.kind == "text":
                if tool_mode == "call" or (tool_mode == "auto" and (held + ev.text).startswith("<")):
                    held += ev.text  # a tool call: sent whole at the end
                    continue
                yield chunk({"content": ev.text} if chat else ev.text, None, ev.logprobs)
                offset += len(ev.text)
            elif ev.kind == "error":
                assert ev.error is not None
                err = edge_error_response(ev.error, state.public)
                yield schemas.sse({"error": json.loads(err.body)["error"]})
                break
            elif ev.kind == "done" and ev.result is not None and ev.result.finish_reason == "cancelled" \
                    and state.status == "shutting_down":  # stopped by the shutdown past --grace-s
                err = edge_error_response(Unavailable("the server shut down before this request finished; retry "
                                                      "it", retry_after_s=5.0))
                yield schemas.sse({"error": json.loads(err.body)["error"]})
                break
            elif ev.kind == "done":
                r = ev.result
                assert r is not None
                finish = schemas.finish_reason(r)
                if held and plan is not None:
                    message, finish = structured.read_answer(held, finish, plan)
                    for delta in _tool_call_deltas(message):
                        yield chunk(delta, None)
                yield chunk({} if chat else "", finish, edge=schemas.edge(r), timings=schemas.timings(r))
                if include_usage:
                    yield schemas.sse({**base, "choices": [], "usage": schemas.usage(r)})
                break
        yield b"data: [DONE]\n\n"
    finally:
        if not handle.done():  # the client went away: stop generating
            rt.cancel(handle)


def _tool_call_deltas(message: dict[str, Any]) -> list[dict[str, Any]]:
    """OpenAI's streamed form of a finished message: per call, its id and name, then its arguments."""
    if not message.get("tool_calls"):
        return [{"content": message["content"]}]
    out: list[dict[str, Any]] = []
    for i, c in enumerate(message["tool_calls"]):
        out.append({"tool_calls": [{"index": i, "id": c["id"], "type": "function",
                                    "function": {"name": c["function"]["name"], "arguments": ""}}]})
        out.append({"tool_calls": [{"index": i, "function": {"arguments": c["function"]["arguments"]}}]})
    return out


def _auto_names(rt: Runtime, config: ServerConfig) -> list[str]:
    names = [config.alias or rt.name, AUTO_MODEL]
    return [n for i, n in enumerate(names) if n and n not in names[:i] and n not in rt.manifest.names]


def _resolve_model(rt: Runtime, config: ServerConfig, model: str | None) -> str | None:
    """None (the controller chooses) for the bundle's names; the variant for a variant's name."""
    if model is None or model in _auto_names(rt, config) or model == rt.name:
        return None
    if model in rt.manifest.names or model in rt.pool.pairs:
        return model
    raise StarletteHTTPException(
        404, f"model {model!r} not found: use {_auto_names(rt, config)[0]!r} to let the controller choose, or one "
             f"of the servable variants {[n for n, ok in zip(rt.manifest.actions, rt.allowed(), strict=True) if ok]}")


def _ascii(text: str) -> str:
    return text.encode("ascii", "replace").decode()[:200]


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema with its automatic 422 replaced by this server's 400 envelope."""
    if app.openapi_schema:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi

    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    for path in schema.get("paths", {}).values():
        for op in path.values():
            op.get("responses", {}).pop("422", None)
    for name in ("HTTPValidationError", "ValidationError"):
        schema.get("components", {}).get("schemas", {}).pop(name, None)
    app.openapi_schema = schema
    return schema


def _version() -> str:
    from edge_runtime import __version__

    return __version__
