"""`POST /entitlements/check` and `GET /entitlements/{customerId}` answered without the
framework in between, as `POST /credits/consume` is (credits/hot_path.py): a host
application asks before many of its actions, so what one question costs the server is what
Billfold costs its users.

The same validation (`CheckIn`), the same credential rule, the same reader and the same
envelope and error codes as the FastAPI routes, through the same functions. Anything unusual
falls through to those routes, which stay declared (and documented in the OpenAPI schema): a
query string, a body not sent as JSON, and a request carrying an `Idempotency-Key` header,
which the generic idempotency middleware handles.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from billfold.auth.service import credential_from_header
from billfold.entitlements.batching import EntitlementReader
from billfold.entitlements.rules import decide, every
from billfold.entitlements.schemas import CheckIn, CheckOut, EntitlementOut, EntitlementsOut
from billfold.kit.envelope import ok
from billfold.kit.hot_path import answer_json_call, authorization, json_content_type, refusal

CHECK_PATH = "/entitlements/check"
_PREFIX = "/entitlements/"


async def answer_check(reader: EntitlementReader, credential: str, body: CheckIn) -> bytes:
    """May the customer use `body.feature` now: the answer, serialised once."""
    facts = await reader.standing(credential, body.customer_id)
    decided = decide(
        body.feature,
        body.amount,
        features=facts.features,
        plan_active=facts.plan_active,
        balance=facts.balance,
    )
    answer = ok(
        CheckOut(
            customer_id=facts.customer_id, plan=facts.plan, status=facts.status, **asdict(decided)
        )
    )
    return answer.model_dump_json(by_alias=True).encode()


async def answer_listing(reader: EntitlementReader, credential: str, customer_id: str) -> bytes:
    """Everything the customer may use now, serialised once."""
    facts = await reader.standing(credential, customer_id)
    all_of_them = every(facts.features, plan_active=facts.plan_active, balance=facts.balance)
    answer = ok(
        EntitlementsOut(
            customer_id=facts.customer_id,
            plan=facts.plan,
            status=facts.status,
            active=facts.plan_active,
            entitlements=[EntitlementOut(**asdict(e)) for e in all_of_them],
        )
    )
    return answer.model_dump_json(by_alias=True).encode()


class EntitlementsHotPath:
    def __init__(self, app: ASGIApp, reader: EntitlementReader) -> None:
        self._app = app
        self._reader = reader

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("query_string"):
            await self._app(scope, receive, send)
            return
        path: str = scope["path"]
        method = scope["method"]
        if method == "POST" and path == CHECK_PATH and json_content_type(scope):
            await answer_json_call(scope, receive, send, credential_from_header, self._check)
            return
        customer_id = path[len(_PREFIX) :] if path.startswith(_PREFIX) else ""
        if method == "GET" and customer_id and "/" not in customer_id:
            await self._list(scope, receive, send, customer_id)
            return
        await self._app(scope, receive, send)

    async def _check(self, credential: str, document: Any) -> bytes:
        return await answer_check(self._reader, credential, CheckIn.model_validate(document))

    async def _list(self, scope: Scope, receive: Receive, send: Send, customer_id: str) -> None:
        try:
            credential = credential_from_header(authorization(scope))
            document = await answer_listing(self._reader, credential, customer_id)
        except Exception as exc:
            await refusal(exc)(scope, receive, send)
            return
        await Response(document, media_type="application/json")(scope, receive, send)
