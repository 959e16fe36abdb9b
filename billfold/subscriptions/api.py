"""HTTP routes for plans, the caller's subscription, and licenses (with the public key)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from billfold.auth.deps import (
    AdminDep,
    AnonymousWorkDep,
    CallerDep,
    PrivilegedWorkDep,
    ServicesDep,
    WorkDep,
)
from billfold.config import ChangeTiming, ProrationBehavior
from billfold.customers.service import acting_customer
from billfold.kit.envelope import ERROR_RESPONSES, Envelope, ok
from billfold.kit.errors import NotFound
from billfold.kit.paging import (
    CreatedFromQuery,
    CreatedToQuery,
    LimitQuery,
    OffsetQuery,
    Paged,
    Period,
    paged,
)
from billfold.kit.signing_keys import public_pem
from billfold.subscriptions import (
    cancellation,
    change_plan,
    invoices,
    licenses,
    lifecycle,
    listing,
    plans,
    revocations,
    scheduled_changes,
)
from billfold.subscriptions.models import SubscriptionStatus
from billfold.subscriptions.schemas import (
    CancelIn,
    ChangePlanIn,
    CheckoutIn,
    CheckoutOut,
    InvoiceOut,
    LicenseOut,
    PauseIn,
    PendingChangeCancelIn,
    PlanChangePreviewOut,
    PlanIn,
    PlanOut,
    PlanPatch,
    PortalIn,
    PortalOut,
    PublicKeyOut,
    ResumeIn,
    RevocationsOut,
    SubscriptionOut,
    VerifyIn,
    VerifyOut,
)

router = APIRouter(responses=ERROR_RESPONSES)
CustomerQuery = Annotated[str | None, Query(alias="customerId", max_length=40)]


@router.get("/plans", tags=["plans"])
def list_plans(work: WorkDep) -> Envelope[list[PlanOut]]:
    found = plans.list_plans(work.session, include_inactive=work.caller.is_privileged)
    return ok([PlanOut.model_validate(p) for p in found])


@router.post("/plans", status_code=201, tags=["plans"])
def create_plan(body: PlanIn, caller: AdminDep, services: ServicesDep) -> Envelope[PlanOut]:
    made = plans.create_plan(services, body.model_dump(), actor=caller.actor)
    return ok(PlanOut.model_validate(made))


@router.patch("/plans/{code}", tags=["plans"])
def update_plan(
    code: str, body: PlanPatch, caller: AdminDep, services: ServicesDep
) -> Envelope[PlanOut]:
    changes = {
        k: v
        for k, v in body.model_dump(exclude_unset=True).items()
        if v is not None or k == "stripe_price_id"
    }
    changed = plans.update_plan(services, code, changes, actor=caller.actor)
    return ok(PlanOut.model_validate(changed))


@router.get("/subscriptions", tags=["subscriptions"], summary="Subscriptions (admin, service)")
def list_subscriptions(
    work: PrivilegedWorkDep,
    customer_id: CustomerQuery = None,
    status: SubscriptionStatus | None = None,
    plan: Annotated[str | None, Query(max_length=50)] = None,
    created_from: CreatedFromQuery = None,
    created_to: CreatedToQuery = None,
    limit: LimitQuery = 50,
    offset: OffsetQuery = 0,
) -> Paged[SubscriptionOut]:
    where = listing.SubscriptionFilter(
        customer_id=customer_id,
        status=status,
        plan=plan,
        created=Period.of(created_from, created_to),
    )
    page = listing.list_subscriptions(work.session, where, limit=limit, offset=offset)
    return paged(page, [SubscriptionOut.of(s) for s in page.items])


@router.get("/subscriptions/me", tags=["subscriptions"])
def my_subscription(work: WorkDep, customer_id: CustomerQuery = None) -> Envelope[SubscriptionOut]:
    customer = acting_customer(work.session, work.caller, customer_id)
    return ok(SubscriptionOut.of(lifecycle.subscription_of(work.session, customer.id)))


@router.post("/subscriptions/checkout", tags=["subscriptions"])
def checkout(body: CheckoutIn, caller: CallerDep, services: ServicesDep) -> Envelope[CheckoutOut]:
    url = lifecycle.checkout(
        services,
        caller,
        plan_code=body.plan,
        success_url=str(body.success_url),
        cancel_url=str(body.cancel_url),
        customer_id=body.customer_id,
    )
    return ok(CheckoutOut(checkout_url=url))


@router.post("/subscriptions/cancel", tags=["subscriptions"])
def cancel(body: CancelIn, caller: CallerDep, services: ServicesDep) -> Envelope[SubscriptionOut]:
    done = cancellation.cancel(
        services, caller, at_period_end=body.at_period_end, customer_id=body.customer_id
    )
    return ok(SubscriptionOut.of(done))


@router.post("/subscriptions/resume", tags=["subscriptions"])
def resume(body: ResumeIn, caller: CallerDep, services: ServicesDep) -> Envelope[SubscriptionOut]:
    resumed = cancellation.resume(services, caller, customer_id=body.customer_id)
    return ok(SubscriptionOut.of(resumed))


@router.post("/subscriptions/pause", tags=["subscriptions"])
def pause(body: PauseIn, caller: CallerDep, services: ServicesDep) -> Envelope[SubscriptionOut]:
    paused = cancellation.pause(
        services,
        caller,
        behavior=body.behavior,
        resumes_at=body.resumes_at,
        customer_id=body.customer_id,
    )
    return ok(SubscriptionOut.of(paused))


@router.get("/subscriptions/change-plan/preview", tags=["subscriptions"])
def preview_plan_change(
    caller: CallerDep,
    services: ServicesDep,
    plan: Annotated[str, Query(min_length=1, max_length=50, pattern=r"^[a-z0-9_-]+$")],
    proration_behavior: Annotated[
        ProrationBehavior | None, Query(alias="prorationBehavior")
    ] = None,
    when: ChangeTiming | None = None,
    customer_id: CustomerQuery = None,
) -> Envelope[PlanChangePreviewOut]:
    found = change_plan.preview(
        services,
        caller,
        plan_code=plan,
        proration_behavior=proration_behavior,
        when=when,
        customer_id=customer_id,
    )
    return ok(PlanChangePreviewOut.of(found))


@router.post("/subscriptions/change-plan", tags=["subscriptions"])
def change_subscription_plan(
    body: ChangePlanIn, caller: CallerDep, services: ServicesDep
) -> Envelope[SubscriptionOut]:
    changed = change_plan.change_plan(
        services,
        caller,
        plan_code=body.plan,
        proration_behavior=body.proration_behavior,
        proration_date=body.proration_date,
        when=body.when,
        customer_id=body.customer_id,
    )
    return ok(SubscriptionOut.of(changed))


@router.post("/subscriptions/change-plan/cancel", tags=["subscriptions"])
def cancel_pending_plan_change(
    body: PendingChangeCancelIn, caller: CallerDep, services: ServicesDep
) -> Envelope[SubscriptionOut]:
    """Drop the plan change set for the period end: the subscription renews as it is."""
    kept = scheduled_changes.cancel(services, caller, customer_id=body.customer_id)
    return ok(SubscriptionOut.of(kept))


@router.post("/subscriptions/portal", tags=["subscriptions"])
def portal(body: PortalIn, caller: CallerDep, services: ServicesDep) -> Envelope[PortalOut]:
    url = lifecycle.portal(
        services, caller, return_url=str(body.return_url), customer_id=body.customer_id
    )
    return ok(PortalOut(url=url))


@router.get("/licenses/me", tags=["licenses"])
def my_license(work: WorkDep, customer_id: CustomerQuery = None) -> Envelope[LicenseOut]:
    customer = acting_customer(work.session, work.caller, customer_id)
    found = licenses.current(work.session, customer.id)
    if found is None:
        raise NotFound("No license yet", code="no_license")
    return ok(
        LicenseOut(
            id=found.id,
            token=found.token,
            plan=found.plan_code,
            status=found.status,
            key_id=found.key_id,
            issued_at=found.issued_at,
            expires_at=found.expires_at,
        )
    )


@router.get("/licenses/public-key", tags=["licenses"], summary="Verify licenses offline")
def public_key(services: ServicesDep) -> Envelope[PublicKeyOut]:
    keys = services.licenses
    return ok(PublicKeyOut(key_id=keys.kid, public_key_pem=public_pem(keys.private.public_key())))


@router.get("/.well-known/jwks.json", tags=["licenses"], summary="License keys as a JWKS")
def jwks(services: ServicesDep) -> dict[str, Any]:
    return services.licenses.jwks()


@router.post("/licenses/verify", tags=["licenses"])
def verify(body: VerifyIn, session: AnonymousWorkDep, services: ServicesDep) -> Envelope[VerifyOut]:
    claims = licenses.verify(body.token, services.licenses.public_keys())
    superseded = revocations.is_superseded(session, str(claims.get("jti", "")))
    return ok(VerifyOut(valid=True, claims=claims, superseded=superseded))


@router.get(
    "/licenses/revocations", tags=["licenses"], summary="Superseded licenses (a signed list)"
)
def revocation_list(session: AnonymousWorkDep, services: ServicesDep) -> Envelope[RevocationsOut]:
    found = revocations.current(session, services.licenses, services.memo)
    return ok(
        RevocationsOut(
            revoked=found.revoked,
            issued_at=found.issued_at,
            expires_at=found.expires_at,
            token=found.token,
        )
    )


@router.get("/invoices", tags=["subscriptions"], summary="Invoices (own; admins any customer)")
def list_invoices(
    work: WorkDep,
    customer_id: CustomerQuery = None,
    status: Annotated[str | None, Query(max_length=24)] = None,
    limit: LimitQuery = 50,
    offset: OffsetQuery = 0,
) -> Paged[InvoiceOut]:
    where = invoices.InvoiceFilter(customer_id=customer_id, status=status)
    page = invoices.list_invoices(work.session, work.caller, where, limit=limit, offset=offset)
    return paged(page, [InvoiceOut.model_validate(i) for i in page.items])
