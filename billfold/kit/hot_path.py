"""What the ASGI hot paths (credits/hot_path.py, entitlements/hot_path.py) share: which calls
they may take, reading a whole body, and refusing a call with the very answer FastAPI's
handlers give for the same failure, so a caller cannot tell which way in answered."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from billfold.kit.http_errors import error_response, invalid_request, response_for, unparsable_json


class NoBody(Exception):
    """The request had no body where one is required."""


def refusal(exc: Exception) -> Response:
    """The answer FastAPI's handlers give for the same failure."""
    if isinstance(exc, NoBody):
        return invalid_request([{"loc": (), "msg": "Field required"}], ("body",))
    if isinstance(exc, json.JSONDecodeError):
        return invalid_request([{"loc": (exc.pos,), "msg": "JSON decode error"}], ("body",))
    if isinstance(exc, ValidationError):
        return invalid_request(exc.errors(), ("body",))
    if isinstance(exc, UnicodeDecodeError):
        return error_response(400, "http_error", "There was an error parsing the body")
    return unparsable_json(exc) or response_for(exc)


async def read_body(receive: Receive) -> bytes:
    """The whole request body (`RequestGuard`, outside, refuses one past its limit).
    Raises `ClientDisconnect` when the caller hangs up before it ends."""
    chunks: list[bytes] = []
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def plain_post(scope: Scope, path: str) -> bool:
    """An HTTP POST to exactly `path` with no query string: the one shape a hot path answers
    (anything else goes on to the FastAPI route)."""
    return (
        scope["type"] == "http"
        and scope["path"] == path
        and scope["method"] == "POST"
        and not scope.get("query_string")
    )


def json_content_type(scope: Scope) -> bool:
    """Whether the call is a JSON body a hot path may take: sent as JSON, and without an
    `Idempotency-Key` header (the generic idempotency middleware owns those calls)."""
    content_type = None
    for name, value in scope["headers"]:
        if name == b"content-type":
            content_type = value.decode("latin-1")
        elif name == b"idempotency-key":
            return False
    return (content_type or "").split(";")[0].strip().lower() == "application/json"


def authorization(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            return str(value.decode("latin-1"))
    return None


async def answer_json_call(
    scope: Scope,
    receive: Receive,
    send: Send,
    credential_of: Callable[[str | None], str],
    answer: Callable[[str, Any], Awaitable[bytes]],
) -> None:
    """Read the body, then send what `answer(credential, parsed JSON body)` answers (a JSON
    document), or the refusal FastAPI would give for what went wrong on the way.
    `credential_of` takes the `Authorization` header's value (or None) to a credential."""
    try:
        raw = await read_body(receive)
    except ClientDisconnect:
        return  # the caller hung up before the body ended: nothing is done, as in FastAPI
    try:
        # In FastAPI's order: a body that is not JSON is refused before the credential is
        # looked at, a JSON body that breaks the schema after.
        document = json.loads(raw) if raw else None
        credential = credential_of(authorization(scope))
        if not raw:
            raise NoBody
        answered = await answer(credential, document)
    except Exception as exc:
        await refusal(exc)(scope, receive, send)
        return
    # What Starlette's Response(answered, media_type="application/json") sends, without
    # building one on every call.
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-length", str(len(answered)).encode()),
                (b"content-type", b"application/json"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": answered})
