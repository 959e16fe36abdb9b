"""HTTP routes: may this customer use a feature now, and everything they may use (service
keys and admins for anyone, a user for themself).

Usually answered before FastAPI by entitlements/hot_path.py; these routes take the rest (a
query string, an `Idempotency-Key` header, a body not sent as JSON) and document the calls.
Both ask the same reader, which answers the questions arriving together from one read."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from billfold.auth.deps import CredentialDep
from billfold.entitlements.hot_path import answer_check, answer_listing
from billfold.entitlements.schemas import CheckIn, CheckOut, EntitlementsOut
from billfold.kit.envelope import ERROR_RESPONSES, Envelope

router = APIRouter(tags=["entitlements"], responses=ERROR_RESPONSES)


@router.post(
    "/entitlements/check",
    summary="May the customer use this feature now?",
    response_model=Envelope[CheckOut],
)
async def check(body: CheckIn, credential: CredentialDep, request: Request) -> Response:
    answer = await answer_check(request.app.state.entitlement_reader, credential, body)
    return Response(answer, media_type="application/json")


@router.get(
    "/entitlements/{customer_id}",
    summary="Everything the customer may use now",
    response_model=Envelope[EntitlementsOut],
)
async def list_entitlements(
    customer_id: str, credential: CredentialDep, request: Request
) -> Response:
    answer = await answer_listing(request.app.state.entitlement_reader, credential, customer_id)
    return Response(answer, media_type="application/json")
