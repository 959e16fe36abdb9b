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

from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from billfold.auth.service import credential_from_header
from billfold.credits.batching import ConsumeBatcher
from billfold.credits.consume import Debit
from billfold.credits.schemas import ConsumeIn, ConsumeOut
from billfold.kit.envelope import Envelope
from billfold.kit.hot_path import answer_json_call, json_content_type, plain_post

PATH = "/credits/consume"


async def answer_consume(batcher: ConsumeBatcher, credential: str, body: ConsumeIn) -> bytes:
    """The debit applied (in a batch) and its answer, serialised once."""
    posted = await batcher.submit(
        credential, Debit(body.customer_id, body.amount, body.idempotency_key, body.reason)
    )
    answer = _ANSWER(
        data=ConsumeOut(
            transaction_id=posted.id,
            amount=-posted.amount,
            balance=posted.balance_after,
            idempotency_key=body.idempotency_key,
            replayed=posted.replayed,
        )
    )
    return answer.model_dump_json(by_alias=True).encode()


# `ok`'s envelope, its type resolved once rather than on every answer.
_ANSWER = Envelope[ConsumeOut]


class ConsumeHotPath:
    def __init__(self, app: ASGIApp, batcher: ConsumeBatcher) -> None:
        self._app = app
        self._batcher = batcher

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not plain_post(scope, PATH):
            await self._app(scope, receive, send)
            return
        if not json_content_type(scope):
            await self._app(scope, receive, send)
            return
        await answer_json_call(scope, receive, send, credential_from_header, self._consume)

    async def _consume(self, credential: str, document: Any) -> bytes:
        return await answer_consume(self._batcher, credential, ConsumeIn.model_validate(document))
