"""The janitor: settles payments and refunds left open past a lease by asking Stripe.

A webhook lost while the process that was waiting for Stripe's answer died leaves a payment
`creating` (or `processing`, `requires_action`…) or a refund `pending` for ever. The janitor
is a recurring job: it finds such records, reads where Stripe has them (by the stored ID, or
by our payment ID in the intent's metadata), and records that through the same code the
webhooks and the confirm call use (`apply_intent`, `settle`), so nothing is recorded twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import or_, select, update

from billfold.customers.models import Customer
from billfold.kit.db import utcnow
from billfold.payments.intents import CANCELABLE, fail_without_intent, record
from billfold.payments.models import (
    TERMINAL,
    Order,
    OrderStatus,
    Payment,
    PaymentStatus,
    Refund,
    RefundStatus,
)
from billfold.payments.orders import CANCEL_INTENT_JOB
from billfold.payments.refunds import reconcile_refund
from billfold.services import Services
from billfold.stripe_gateway import StripeFailure, StripePaymentIntent, StripeRejected

log = structlog.get_logger("billfold.payments")

JANITOR_JOB = "payments.janitor"
# Records looked at per run; the oldest-checked first, so a large backlog rotates.
BATCH = 200
# An open intent older than this is an abandoned checkout: no longer re-read (a `creating`
# payment is settled whatever its age).
OPEN_INTENT_HORIZON = timedelta(days=7)

__all__ = ["CANCEL_INTENT_JOB", "JANITOR_JOB", "cancel_intent_job", "janitor_job", "sweep"]


@dataclass(frozen=True)
class Swept:
    payments: int
    refunds: int


def reconcile_payment(services: Services, payment_id: str, *, give_up: bool) -> None:
    """Bring one open payment in line with Stripe; cancel the intent of a canceled order.

    With `give_up`, a `creating` payment for which Stripe holds no intent is `failed`: only
    the janitor passes it, for payments older than its lease (no live call is making one).
    """
    with services.db.transaction() as session:
        payment = session.get(Payment, payment_id)
        if payment is None or payment.status in TERMINAL:
            return
        customer = session.get(Customer, payment.customer_id)
        stripe_customer_id = customer.stripe_customer_id if customer else None
        order = session.get(Order, payment.order_id) if payment.order_id else None
        order_canceled = order is not None and order.status == OrderStatus.CANCELED
        intent_id, status = payment.stripe_payment_intent_id, payment.status
    intent = _intent_of(services, payment_id, intent_id, stripe_customer_id)
    if intent is None:
        if give_up and status == PaymentStatus.CREATING:
            with services.db.transaction() as session:
                fail_without_intent(session, payment_id, services)
        return
    if order_canceled and intent.status in CANCELABLE:
        try:
            intent = services.stripe.cancel_payment_intent(intent.id, payment_id=payment_id)
        except StripeRejected:  # it moved on meanwhile (paid): record what it is now
            intent = services.stripe.retrieve_payment_intent(intent.id)
    record(services, payment_id, intent, attempted=False)


def _intent_of(
    services: Services, payment_id: str, intent_id: str | None, stripe_customer_id: str | None
) -> StripePaymentIntent | None:
    if intent_id is not None:
        return services.stripe.retrieve_payment_intent(intent_id)
    if stripe_customer_id is None:
        return None  # no Stripe customer: no intent can have been made
    return services.stripe.find_payment_intent(stripe_customer_id, payment_id)


def cancel_intent_job(services: Services, payload: dict[str, Any]) -> None:
    """A canceled order's intent: canceled in Stripe, or (paid meanwhile) refunded."""
    reconcile_payment(services, payload["payment_id"], give_up=False)


def sweep(services: Services) -> Swept:
    """Settle every payment and refund left open past the janitor's lease (one batch)."""
    now = utcnow()
    stale = now - timedelta(seconds=services.settings.payment_janitor_lease_seconds)
    with services.db.transaction() as session:
        payment_ids = list(
            session.scalars(
                select(Payment.id)
                .where(
                    Payment.status.not_in([s.value for s in TERMINAL]),
                    Payment.updated_at < stale,
                    or_(
                        Payment.status == PaymentStatus.CREATING,
                        Payment.created_at > now - OPEN_INTENT_HORIZON,
                    ),
                )
                .order_by(Payment.updated_at)
                .limit(BATCH)
            )
        )
        refund_ids = list(
            session.scalars(
                select(Refund.id)
                .where(Refund.status == RefundStatus.PENDING, Refund.updated_at < stale)
                .order_by(Refund.updated_at)
                .limit(BATCH)
            )
        )
    for payment_id in payment_ids:
        try:
            reconcile_payment(services, payment_id, give_up=True)
        except StripeFailure as exc:
            log.warning("janitor.payment_unsettled", payment_id=payment_id, error=exc.code)
        _touch(services, Payment, payment_id)
    for refund_id in refund_ids:
        try:
            reconcile_refund(services, refund_id)
        except StripeFailure as exc:
            log.warning("janitor.refund_unsettled", refund_id=refund_id, error=exc.code)
        _touch(services, Refund, refund_id)
    if payment_ids or refund_ids:
        log.info("janitor.swept", payments=len(payment_ids), refunds=len(refund_ids))
    return Swept(len(payment_ids), len(refund_ids))


def _touch(services: Services, table: type[Payment] | type[Refund], record_id: str) -> None:
    """Mark a record checked now, so the next runs look at the others first."""
    with services.db.transaction() as session:
        session.execute(update(table).where(table.id == record_id).values(updated_at=utcnow()))


def janitor_job(services: Services, _payload: dict[str, Any]) -> None:
    sweep(services)
