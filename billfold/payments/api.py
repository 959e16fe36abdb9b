"""HTTP routes for saved cards, one-off payments, their history and refunds."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from billfold.auth.deps import AdminDep, CallerDep, PrivilegedWorkDep, ServicesDep, WorkDep
from billfold.customers.service import acting_customer
from billfold.kit.envelope import ERROR_RESPONSES, Envelope, ok
from billfold.kit.paging import (
    CreatedFromQuery,
    CreatedToQuery,
    LimitQuery,
    OffsetQuery,
    Paged,
    Period,
    paged,
)
from billfold.payments import intents, listing, methods, refunds
from billfold.payments.models import PaymentStatus, RefundStatus
from billfold.payments.schemas import (
    CardOut,
    ConfigOut,
    ConfirmIn,
    IntentIn,
    IntentOut,
    PaymentMethodIn,
    PaymentOut,
    RefundIn,
    RefundListedOut,
    RefundOut,
    SetupIntentOut,
)
from billfold.services import Services

router = APIRouter(responses=ERROR_RESPONSES)
CustomerQuery = Annotated[str | None, Query(alias="customerId", max_length=40)]


@router.get("/payments/config", tags=["payments"], summary="Stripe.js configuration")
def config(services: ServicesDep) -> Envelope[ConfigOut]:
    s = services.settings
    return ok(ConfigOut(publishable_key=s.stripe_publishable_key, currency=s.stripe_currency))


@router.get("/payments/customer/payment-methods", tags=["payment methods"])
def list_cards(
    caller: CallerDep, services: ServicesDep, customer_id: CustomerQuery = None
) -> Envelope[list[CardOut]]:
    return ok([CardOut.of(v) for v in methods.list_cards(services, caller, customer_id)])


@router.post("/payments/customer/payment-methods", tags=["payment methods"])
def attach_card(
    body: PaymentMethodIn,
    caller: CallerDep,
    services: ServicesDep,
    customer_id: CustomerQuery = None,
) -> Envelope[CardOut]:
    return ok(CardOut.of(methods.attach(services, caller, body.payment_method_id, customer_id)))


@router.delete("/payments/customer/payment-methods/{payment_method_id}", tags=["payment methods"])
def detach_card(
    payment_method_id: str,
    caller: CallerDep,
    services: ServicesDep,
    customer_id: CustomerQuery = None,
) -> Envelope[dict[str, str | bool]]:
    methods.detach(services, caller, payment_method_id, customer_id)
    return ok({"id": payment_method_id, "detached": True})


@router.patch("/payments/customer/default-payment-method", tags=["payment methods"])
def set_default_card(
    body: PaymentMethodIn,
    caller: CallerDep,
    services: ServicesDep,
    customer_id: CustomerQuery = None,
) -> Envelope[CardOut]:
    return ok(
        CardOut.of(methods.set_default(services, caller, body.payment_method_id, customer_id))
    )


@router.post("/payments/customer/setup-intent", tags=["payment methods"])
def setup_intent(
    caller: CallerDep, services: ServicesDep, customer_id: CustomerQuery = None
) -> Envelope[SetupIntentOut]:
    intent_id, secret = methods.setup_intent(services, caller, customer_id)
    return ok(SetupIntentOut(setup_intent_id=intent_id, client_secret=secret))


@router.post("/payments/create-intent", tags=["payments"])
def create_intent(body: IntentIn, caller: CallerDep, services: ServicesDep) -> Envelope[IntentOut]:
    request = intents.IntentRequest(**body.model_dump())
    return ok(_answer(services, intents.create_intent(services, caller, request)))


@router.post("/payments/confirm", tags=["payments"])
def confirm(body: ConfirmIn, caller: CallerDep, services: ServicesDep) -> Envelope[IntentOut]:
    return ok(_answer(services, intents.confirm(services, caller, body.payment_intent_id)))


def _answer(services: Services, outcome: intents.IntentOutcome) -> IntentOut:
    outcome.raise_if_declined()
    outcome.raise_if_order_canceled()
    payment, intent = outcome.payment, outcome.intent
    return IntentOut(
        payment_id=payment.id,
        order_id=payment.order_id,
        status=payment.status,
        client_secret=outcome.client_secret,
        payment_intent_id=intent.id,
        publishable_key=services.settings.stripe_publishable_key,
        amount=payment.amount,
        currency=payment.currency,
        next_action=outcome.next_action,
    )


@router.get("/payments", tags=["payments"], summary="Payment history")
def list_payments(
    work: WorkDep,
    customer_id: CustomerQuery = None,
    status: PaymentStatus | None = None,
    purpose: Annotated[str | None, Query(max_length=16)] = None,
    created_from: CreatedFromQuery = None,
    created_to: CreatedToQuery = None,
    limit: LimitQuery = 50,
    offset: OffsetQuery = 0,
) -> Paged[PaymentOut]:
    """A user's own payments; admins and service keys see everyone's (or one customer's)."""
    if not (work.caller.is_privileged and customer_id is None):
        customer_id = acting_customer(work.session, work.caller, customer_id).id
    where = listing.PaymentFilter(
        customer_id=customer_id,
        status=status,
        purpose=purpose,
        created=Period.of(created_from, created_to),
    )
    page = listing.list_payments(work.session, where, limit=limit, offset=offset)
    return paged(page, [PaymentOut.model_validate(p) for p in page.items])


@router.get("/refunds", tags=["payments"], summary="Refunds (admin, service)")
def list_refunds(
    work: PrivilegedWorkDep,
    customer_id: CustomerQuery = None,
    payment_id: Annotated[str | None, Query(alias="paymentId", max_length=40)] = None,
    status: RefundStatus | None = None,
    created_from: CreatedFromQuery = None,
    created_to: CreatedToQuery = None,
    limit: LimitQuery = 50,
    offset: OffsetQuery = 0,
) -> Paged[RefundListedOut]:
    where = listing.RefundFilter(
        customer_id=customer_id,
        payment_id=payment_id,
        status=status,
        created=Period.of(created_from, created_to),
    )
    page = listing.list_refunds(work.session, where, limit=limit, offset=offset)
    return paged(page, [RefundListedOut.of(r) for r in page.items])


@router.get("/payments/{payment_id}", tags=["payments"])
def get_payment(payment_id: str, work: WorkDep) -> Envelope[PaymentOut]:
    return ok(PaymentOut.model_validate(listing.get_payment(work.session, work.caller, payment_id)))


@router.post("/payments/{payment_id}/refund", status_code=201, tags=["payments"])
def refund(
    payment_id: str, body: RefundIn, caller: AdminDep, services: ServicesDep
) -> Envelope[RefundOut]:
    made = refunds.request_refund(
        services,
        payment_id,
        amount=body.amount,
        reason=body.reason,
        notes=body.notes,
        actor=caller.actor,
    )
    return ok(RefundOut.model_validate(made))
