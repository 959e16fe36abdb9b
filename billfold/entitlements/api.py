"""HTTP routes: may this customer use a feature now, and everything they may use (service
keys and admins for anyone, a user for themself)."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter

from billfold.auth.deps import ServicesDep, WorkDep
from billfold.entitlements import service
from billfold.entitlements.schemas import CheckIn, CheckOut, EntitlementOut, EntitlementsOut
from billfold.kit.envelope import ERROR_RESPONSES, Envelope, ok

router = APIRouter(tags=["entitlements"], responses=ERROR_RESPONSES)


@router.post("/entitlements/check", summary="May the customer use this feature now?")
def check(body: CheckIn, work: WorkDep, services: ServicesDep) -> Envelope[CheckOut]:
    facts, decided = service.check(
        work.session,
        work.caller,
        services.settings,
        customer_id=body.customer_id,
        feature=body.feature,
        amount=body.amount,
    )
    return ok(
        CheckOut(
            customer_id=facts.customer_id, plan=facts.plan, status=facts.status, **asdict(decided)
        )
    )


@router.get("/entitlements/{customer_id}", summary="Everything the customer may use now")
def list_entitlements(
    customer_id: str, work: WorkDep, services: ServicesDep
) -> Envelope[EntitlementsOut]:
    facts, all_of_them = service.list_all(work.session, work.caller, services.settings, customer_id)
    return ok(
        EntitlementsOut(
            customer_id=facts.customer_id,
            plan=facts.plan,
            status=facts.status,
            active=facts.plan_active,
            entitlements=[EntitlementOut(**asdict(e)) for e in all_of_them],
        )
    )
