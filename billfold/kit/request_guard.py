"""What every request passes before any route (or the consume hot path) reads it: a body no
larger than its limit, and no NUL character in the path, the query or a header.

An oversized body is refused with 413 from its `Content-Length` before a byte of it is read,
and a body sent without one (chunked) is counted while it streams and refused as soon as it
passes the limit, so no request can make the server hold more than the limit in memory.
PostgreSQL cannot store a NUL in text, so one in any input would fail deep in a query; it is
refused here (and in JSON bodies by `InputModel`) as a 422 like any other bad input.
"""

from __future__ import annotations

from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from billfold.kit.http_errors import error_response, invalid_request

WEBHOOK_PATH = "/webhooks/stripe"
NUL_PROBLEM = "NUL characters are not allowed"


class BodyTooLarge(HTTPException):
    """Raised from `receive` once a streamed body passes its limit.

    An `HTTPException`, so that FastAPI, which turns any other error while reading a body
    into a 400, lets it through to the app's handler (and `RequestGuard` answers it when it
    escapes a middleware that reads bodies itself)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The request body is larger than {limit} bytes")
        self.limit = limit


class RequestGuard:
    """Pure ASGI and outermost, so nothing inside it ever sees an oversized body."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_webhook_body_bytes: int) -> None:
        self._app = app
        self._max_body = max_body_bytes
        self._max_webhook_body = max_webhook_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        nul_in = _nul_in(scope)
        if nul_in is not None:
            await invalid_request([{"loc": (nul_in,), "msg": NUL_PROBLEM}])(scope, receive, send)
            return
        limit = self._max_webhook_body if scope["path"] == WEBHOOK_PATH else self._max_body
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await too_large(limit)(scope, receive, send)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self._app(scope, limited_receive, watched_send)
        except BodyTooLarge:
            if started:  # the route answered before reading on; nothing more to say
                return
            await too_large(limit)(scope, receive, send)


def too_large(limit: int) -> JSONResponse:
    """The 413 answer, the same from here and from a route that was reading its body."""
    return error_response(
        413,
        "body_too_large",
        f"The request body is larger than {limit} bytes",
        {"limitBytes": limit},
    )


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


def _nul_in(scope: Scope) -> str | None:
    """Where a NUL character is, if anywhere: "path", "query" or "header"."""
    if "\x00" in scope["path"]:
        return "path"
    query: bytes = scope.get("query_string", b"")
    if b"\x00" in query or b"%00" in query:
        return "query"
    if any(b"\x00" in value for _name, value in scope["headers"]):
        return "header"
    return None
