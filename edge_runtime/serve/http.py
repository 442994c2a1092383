"""HTTP plumbing of edge-serve: the one error envelope and the ASGI middleware.

Every failure answers `{"error": {"code", "message", "type"}}` (llama.cpp's and OpenAI's
shape, `code` being the HTTP status). `EdgeError` subclasses map to statuses here, once:

| error | status | type |
|---|---|---|
| `RequestError`, `VariantError` | 400 | invalid_request_error |
| `Overloaded` | 429 + Retry-After | rate_limit_error |
| `DeadlineExceeded` | 408 | timeout_error |
| `Unavailable` | 503 + Retry-After | unavailable_error |
| any other `EdgeError` | 500 | server_error |
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from uvicorn.protocols.http.h11_impl import H11Protocol

from edge_runtime.errors import (
    DeadlineExceeded,
    EdgeError,
    Overloaded,
    RequestError,
    Unavailable,
    VariantError,
)

# ------------------------------------------------------------------------------ errors


_ERRORS: tuple[tuple[type[EdgeError], int, str], ...] = (
    (RequestError, 400, "invalid_request_error"),
    (VariantError, 400, "invalid_request_error"),
    (Overloaded, 429, "rate_limit_error"),
    (DeadlineExceeded, 408, "timeout_error"),
    (Unavailable, 503, "unavailable_error"),
    (EdgeError, 500, "server_error"),
)
HTTP_TYPES = {401: "authentication_error", 404: "not_found_error", 405: "invalid_request_error",
               413: "invalid_request_error"}


def error_response(code: int, message: str, kind: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "type": kind}}, status_code=code,
                        headers=headers)


def edge_error_response(e: EdgeError, public: Callable[[str], str] = str) -> JSONResponse:
    """The envelope for `e`; `public` rewrites its message for clients (the app hides file paths)."""
    code, kind = next((c, k) for cls, c, k in _ERRORS if isinstance(e, cls))
    retry = getattr(e, "retry_after_s", None)
    headers = {"Retry-After": str(max(1, round(retry)))} if retry is not None else None
    return error_response(code, public(str(e)), kind, headers)


def validation_message(e: RequestValidationError) -> str:
    parts = []
    for err in e.errors()[:5]:
        loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
        if err.get("type") == "json_invalid":
            return f"the request body is not valid JSON ({err.get('ctx', {}).get('error', 'parse error')})"
        if err.get("type") == "unsupported_field":  # the message names the field itself
            parts.append(str(err.get("msg")))
        else:
            parts.append(f"{loc or 'body'}: {err.get('msg')}")
    return "; ".join(parts) or "invalid request"


# ------------------------------------------------------------------------------ middleware


class BodyLimit:
    """ASGI middleware: refuse bodies over `limit` bytes with 413 before the route sees them, and
    bodies whose next piece takes more than `read_timeout_s` to arrive with 408 (slow clients)."""

    def __init__(self, app: Any, limit: int, read_timeout_s: float = 30.0) -> None:
        self.app, self.limit, self.read_timeout_s = app, limit, read_timeout_s

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_big = JSONResponse({"error": {"code": 413, "message": f"request body larger than {self.limit} bytes; "
                                          "shorten the prompt", "type": "invalid_request_error"}}, status_code=413)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await too_big(scope, receive, send)
        chunks, size = [], 0
        while True:  # buffer the body (at most `limit` bytes), then replay it
            try:
                msg = await asyncio.wait_for(receive(), self.read_timeout_s)
            except TimeoutError:
                slow = error_response(408, f"the request body did not arrive within {self.read_timeout_s:g} s; "
                                           "send it at once", "timeout_error", {"Connection": "close"})
                return await slow(scope, receive, send)
            if msg["type"] != "http.request":
                return
            chunks.append(msg.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await too_big(scope, receive, send)
            if not msg.get("more_body", False):
                break
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class HeaderTimeoutH11(H11Protocol):
    """uvicorn's h11 protocol plus a header timeout: a connection that has not sent a whole request
    head within `header_timeout_s` seconds of opening (or of its last response) is closed.

    uvicorn's own keep-alive timer stops at the first byte, so a client trickling a header byte at a
    time (slowloris) would hold its connection for ever. Set the timeout with `with_timeout`."""

    header_timeout_s: float = 30.0

    @classmethod
    def with_timeout(cls, seconds: float) -> type[HeaderTimeoutH11]:
        return type(cls.__name__, (cls,), {"header_timeout_s": seconds})

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timeout)

    def _header_timeout(self) -> None:
        waiting = self.cycle is None or self.cycle.response_complete  # no request head received yet
        if waiting and not self.transport.is_closing():
            self.transport.close()


class HttpMetrics:
    """ASGI middleware: count responses by route and status."""

    ROUTES = {"/v1/completions", "/v1/chat/completions", "/v1/models", "/health", "/metrics", "/status"}

    def __init__(self, app: Any, state: Any) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = {"code": 500}

        async def wrapped(msg: dict) -> None:
            if msg["type"] == "http.response.start":
                status["code"] = msg["status"]
            await send(msg)

        try:
            await self.app(scope, receive, wrapped)
        finally:
            rt = self.state.runtime
            if rt is not None:
                route = scope["path"] if scope["path"] in self.ROUTES else "other"
                rt.metrics.http.labels(route, str(status["code"])).inc()
