"""`POST /webhooks/stripe` answered without the framework in between.

Once the events were stored in batches, profiled under load most of the server's CPU per
delivery was FastAPI's: matching the route against every route of the app, resolving its
parameters, the response's plumbing. This ASGI middleware answers Stripe's deliveries
directly: the same batcher (`webhooks/batching.py`: signature checked, event and job stored,
committed before the answer), the same envelope and the same refusals as the FastAPI route,
which stays declared (and documented in the OpenAPI schema). A delivery carrying an
`Idempotency-Key` header (Stripe sends none) falls through to it, where the generic
idempotency middleware handles it, as everywhere else.
"""

from __future__ import annotations

from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from billfold.kit.envelope import ok
from billfold.kit.hot_path import plain_post, read_body, refusal
from billfold.webhooks.api import ReceivedOut
from billfold.webhooks.batching import InboxBatcher

PATH = "/webhooks/stripe"


async def answer_delivery(batcher: InboxBatcher, raw_body: bytes, signature: str | None) -> bytes:
    """The delivery stored (in a batch, committed) and its answer, serialised once."""
    stored = await batcher.accept(raw_body, signature)
    return (
        ok(ReceivedOut(id=stored.id, duplicate=not stored.new))
        .model_dump_json(by_alias=True)
        .encode()
    )


class WebhookHotPath:
    def __init__(self, app: ASGIApp, batcher: InboxBatcher) -> None:
        self._app = app
        self._batcher = batcher

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not plain_post(scope, PATH):
            await self._app(scope, receive, send)
            return
        signature = None
        for name, value in scope["headers"]:
            if name == b"stripe-signature" and signature is None:  # the first, as FastAPI
                signature = value.decode("latin-1")
            elif name == b"idempotency-key":
                await self._app(scope, receive, send)
                return
        try:
            raw_body = await read_body(receive)
        except ClientDisconnect:
            return  # Stripe hung up before the body ended: nothing is stored, as in FastAPI
        try:
            answer = await answer_delivery(self._batcher, raw_body, signature)
        except Exception as exc:
            await refusal(exc)(scope, receive, send)
            return
        await Response(answer, media_type="application/json")(scope, receive, send)
