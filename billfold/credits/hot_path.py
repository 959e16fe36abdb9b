"""`POST /credits/consume` answered without the framework in between.

The host application calls consume on every billable action, so what this one route costs
per request is what Billfold costs its users. Profiled under load, FastAPI's route matching,
dependency resolution and response plumbing took more of the server's time than the debit
itself. This ASGI middleware answers the common shape of the call directly: the same
`ConsumeIn` validation, the same credential rule, the same batcher and the same envelope and
error codes as the FastAPI route, through the same functions.

Anything unusual falls through to the FastAPI route, which stays declared (and documented
in the OpenAPI schema): a body that is not sent as JSON, and a request carrying an
`Idempotency-Key` header, which the generic idempotency middleware handles.
"""

from __future__ import annotations

import json

from pydantic import ValidationError
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from billfold.auth.service import credential_from_header
from billfold.credits.batching import ConsumeBatcher
from billfold.credits.consume import Debit
from billfold.credits.schemas import ConsumeIn, ConsumeOut
from billfold.kit.envelope import ok
from billfold.kit.http_errors import error_response, invalid_request, response_for, unparsable_json

PATH = "/credits/consume"


async def answer_consume(batcher: ConsumeBatcher, credential: str, body: ConsumeIn) -> bytes:
    """The debit applied (in a batch) and its answer, serialised once."""
    posted = await batcher.submit(
        credential, Debit(body.customer_id, body.amount, body.idempotency_key, body.reason)
    )
    answer = ok(
        ConsumeOut(
            transaction_id=posted.id,
            amount=-posted.amount,
            balance=posted.balance_after,
            idempotency_key=body.idempotency_key,
            replayed=posted.replayed,
        )
    )
    return answer.model_dump_json(by_alias=True).encode()


class ConsumeHotPath:
    def __init__(self, app: ASGIApp, batcher: ConsumeBatcher) -> None:
        self._app = app
        self._batcher = batcher

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not (
            scope["type"] == "http"
            and scope["path"] == PATH
            and scope["method"] == "POST"
            and not scope.get("query_string")
        ):
            await self._app(scope, receive, send)
            return
        authorization = content_type = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"idempotency-key":
                content_type = None  # the generic middleware owns the header: fall through
                break
        if (content_type or "").split(";")[0].strip().lower() != "application/json":
            await self._app(scope, receive, send)
            return
        await self._answer(scope, receive, send, authorization)

    async def _answer(
        self, scope: Scope, receive: Receive, send: Send, authorization: str | None
    ) -> None:
        try:
            raw = await _read_body(receive)
        except ClientDisconnect:
            return  # the caller hung up before the body ended: nothing is done, as in FastAPI
        try:
            credential = credential_from_header(authorization)
            if not raw:
                raise _NoBody
            body = ConsumeIn.model_validate(json.loads(raw))
            answer = await answer_consume(self._batcher, credential, body)
        except Exception as exc:
            await _refusal(exc)(scope, receive, send)
            return
        await Response(answer, media_type="application/json")(scope, receive, send)


class _NoBody(Exception):
    pass


def _refusal(exc: Exception) -> Response:
    """The answer FastAPI's handlers give for the same failure."""
    if isinstance(exc, _NoBody):
        return invalid_request([{"loc": (), "msg": "Field required"}], ("body",))
    if isinstance(exc, json.JSONDecodeError):
        return invalid_request([{"loc": (exc.pos,), "msg": "JSON decode error"}], ("body",))
    if isinstance(exc, ValidationError):
        return invalid_request(exc.errors(), ("body",))
    if isinstance(exc, UnicodeDecodeError):
        return error_response(400, "http_error", "There was an error parsing the body")
    return unparsable_json(exc) or response_for(exc)


async def _read_body(receive: Receive) -> bytes:
    """The whole request body (`RequestGuard`, outside, refuses one past its limit)."""
    chunks: list[bytes] = []
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
