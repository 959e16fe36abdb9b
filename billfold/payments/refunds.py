"""Refunds: full or partial, never more than what is left, each recorded and audited.

The amount is reserved on the payment before Stripe is asked, so concurrent refunds can
never together exceed it; a refund Stripe refuses gives its reservation back. Refunds made
in Stripe's dashboard arrive by `charge.refunded` and are recorded the same way.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from billfold.jobs.queue import enqueue
from billfold.kit import audit
from billfold.kit.db import utcnow
from billfold.kit.errors import Conflict, NotFound
from billfold.kit.observability import REFUNDED_AMOUNT, REFUNDS
from billfold.payments.fulfilment import purpose_of, refunded_total
from billfold.payments.models import Payment, PaymentStatus, Refund, RefundStatus
from billfold.payments.receipts import queue_refund_notice
from billfold.services import Services
from billfold.stripe_gateway import StripeFailure, StripeNotFound, StripeRefund
from billfold.webhooks.outbound.notify import payment_refunded

log = structlog.get_logger("billfold.payments")

REFUND_JOB = "payments.refund"
# The reasons Stripe itself knows; anything else stays in our notes only.
STRIPE_REASONS = frozenset({"duplicate", "fraudulent", "requested_by_customer"})
_SETTLED = {RefundStatus.FAILED, RefundStatus.CANCELED}


class RefundTooLarge(Conflict):
    code = "refund_exceeds_remaining"


class NotRefundable(Conflict):
    code = "payment_not_refundable"


def request_refund(
    services: Services,
    payment_id: str,
    *,
    amount: int | None,
    reason: str | None,
    notes: str | None,
    actor: str,
) -> Refund:
    """Reserve and record a refund, then ask Stripe (the job retries if Stripe is away)."""
    with services.db.transaction() as session:
        payment = session.get(Payment, payment_id)
        if payment is None:
            raise NotFound("No such payment")
        if payment.status != PaymentStatus.SUCCEEDED:
            raise NotRefundable(f"A {payment.status} payment cannot be refunded")
        remaining = payment.amount - payment.amount_refunded
        if remaining <= 0:
            raise NotRefundable("This payment is already fully refunded", code="already_refunded")
        amount = remaining if amount is None else amount
        reserved = session.execute(
            update(Payment)
            .where(Payment.id == payment_id, Payment.amount - Payment.amount_refunded >= amount)
            .values(amount_refunded=Payment.amount_refunded + amount)
        ).rowcount  # type: ignore[attr-defined]
        if not reserved:
            raise RefundTooLarge(f"At most {remaining} can still be refunded", remaining=remaining)
        refund = Refund(
            payment_id=payment_id, amount=amount, reason=reason, notes=notes, created_by=actor
        )
        session.add(refund)
        session.flush()
        delay = timedelta(seconds=2 * services.settings.stripe_inline_timeout_seconds)
        enqueue(session, REFUND_JOB, {"refund_id": refund.id}, run_at=utcnow() + delay)
        audit.record(
            session,
            actor,
            "refund.request",
            refund.id,
            payment_id=payment_id,
            amount=amount,
            currency=payment.currency,
            reason=reason,
        )
        refund_id = refund.id
    try:
        execute_refund(services, refund_id, inline=True)
    except StripeFailure as exc:
        if not exc.retryable:
            raise  # the refund is failed and its reservation given back
        log.info("refund.deferred", refund_id=refund_id, reason=exc.code)
    except Exception:
        # Reserved and recorded, with its job: answer it pending rather than invite a retry
        # that would reserve the amount a second time.
        log.exception("refund.inline_error", refund_id=refund_id)
    with services.db.transaction() as session:
        fresh = session.get(Refund, refund_id)
        assert fresh is not None
        return fresh


def refund_automatically(session: Session, payment: Payment, *, note: str) -> Refund | None:
    """Give back what is left of a payment nobody wanted (its order was canceled before the
    money arrived); made by the refund job, in the caller's transaction."""
    remaining = payment.amount - payment.amount_refunded
    if remaining <= 0:
        return None
    session.execute(
        update(Payment)
        .where(Payment.id == payment.id)
        .values(amount_refunded=Payment.amount_refunded + remaining)
    )
    refund = Refund(payment_id=payment.id, amount=remaining, notes=note, created_by="billfold")
    session.add(refund)
    session.flush()
    enqueue(session, REFUND_JOB, {"refund_id": refund.id})
    audit.record(
        session,
        "billfold",
        "refund.automatic",
        refund.id,
        payment_id=payment.id,
        amount=remaining,
        currency=payment.currency,
        reason=note,
    )
    log.warning("refund.automatic", refund_id=refund.id, payment_id=payment.id, note=note)
    return refund


def reconcile_refund(services: Services, refund_id: str) -> None:
    """Settle a refund still pending: ask Stripe where it stands, or make it (once)."""
    with services.db.transaction() as session:
        refund = session.get(Refund, refund_id)
        if refund is None or refund.status != RefundStatus.PENDING:
            return
        stripe_refund_id = refund.stripe_refund_id
    if stripe_refund_id is None:
        try:
            execute_refund(services, refund_id)
        except StripeFailure as exc:
            if exc.retryable:
                raise
        return
    try:
        stripe_refund = services.stripe.retrieve_refund(stripe_refund_id)
    except StripeNotFound:
        with services.db.transaction() as session:
            _transition(
                session,
                refund_id,
                RefundStatus.FAILED,
                services,
                failure=f"{stripe_refund_id} is unknown to Stripe",
            )
        return
    with services.db.transaction() as session:
        settle(session, refund_id, stripe_refund, services)


def execute_refund(services: Services, refund_id: str, *, inline: bool = False) -> None:
    """Create the refund in Stripe once (looking first for one a lost try made)."""
    with services.db.transaction() as session:
        refund = session.get(Refund, refund_id)
        if refund is None or refund.status != RefundStatus.PENDING or refund.stripe_refund_id:
            return
        payment = refund.payment
        intent_id, amount, payment_id = payment.stripe_payment_intent_id, refund.amount, payment.id
        reason = refund.reason if refund.reason in STRIPE_REASONS else None
    assert intent_id is not None
    gateway = services.stripe_inline if inline else services.stripe
    try:
        made = [
            r for r in gateway.list_refunds(intent_id) if r.metadata.get("refund_id") == refund_id
        ]
        stripe_refund = (
            made[0]
            if made
            else gateway.create_refund(
                refund_id=refund_id,
                payment_id=payment_id,
                payment_intent_id=intent_id,
                amount=amount,
                reason=reason,
            )
        )
    except StripeFailure as exc:
        if not exc.retryable:
            # Stripe refused it (or no longer knows the payment): trying again cannot help,
            # so the refund fails and its amount is free to refund again.
            with services.db.transaction() as session:
                _transition(
                    session,
                    refund_id,
                    RefundStatus.FAILED,
                    services,
                    failure=f"{exc.code}: {exc.message}",
                )
        raise
    with services.db.transaction() as session:
        settle(session, refund_id, stripe_refund, services)


def refund_job(services: Services, payload: dict[str, Any]) -> None:
    try:
        execute_refund(services, payload["refund_id"])
    except StripeFailure as exc:
        if exc.retryable:
            raise
        log.warning("refund.refused", refund_id=payload["refund_id"], error=exc.code)


def settle(
    session: Session, refund_id: str, stripe_refund: StripeRefund, services: Services
) -> None:
    """Record Stripe's view of one of our refunds."""
    session.execute(
        update(Refund)
        .where(Refund.id == refund_id, Refund.stripe_refund_id.is_(None))
        .values(stripe_refund_id=stripe_refund.id)
    )
    _transition(session, refund_id, _status(stripe_refund.status), services)


def sync_refunds(
    session: Session, payment: Payment, stripe_refunds: list[StripeRefund], services: Services
) -> None:
    """Bring every refund Stripe has for this payment into our records (charge.refunded)."""
    for stripe_refund in stripe_refunds:
        ours = session.scalar(
            select(Refund).where(Refund.stripe_refund_id == stripe_refund.id)
        ) or session.get(Refund, stripe_refund.metadata.get("refund_id", ""))
        if ours is None:
            _record_external(session, payment, stripe_refund, services)
        else:
            settle(session, ours.id, stripe_refund, services)


def _record_external(
    session: Session, payment: Payment, stripe_refund: StripeRefund, services: Services
) -> None:
    """A refund made outside Billfold (e.g. in Stripe's dashboard)."""
    status = _status(stripe_refund.status)
    refund = Refund(
        payment_id=payment.id,
        stripe_refund_id=stripe_refund.id,
        amount=stripe_refund.amount,
        reason=stripe_refund.reason,
        status=RefundStatus.PENDING,
        created_by="stripe",
    )
    session.add(refund)
    session.execute(
        update(Payment)
        .where(Payment.id == payment.id)
        .values(amount_refunded=Payment.amount_refunded + stripe_refund.amount)
    )
    session.flush()
    audit.record(
        session, "stripe", "refund.external", refund.id, payment_id=payment.id, amount=refund.amount
    )
    _transition(session, refund.id, status, services)


def _transition(
    session: Session,
    refund_id: str,
    status: RefundStatus,
    services: Services,
    *,
    failure: str | None = None,
) -> None:
    refund = session.get(Refund, refund_id)
    assert refund is not None
    old = refund.status
    if old == status or old in _SETTLED:
        return
    moved = session.execute(
        update(Refund)
        .where(Refund.id == refund_id, Refund.status == old)
        .values(status=status, failure=failure)
    ).rowcount  # type: ignore[attr-defined]
    if not moved:
        return  # another path recorded it first
    payment = refund.payment
    if status in _SETTLED:
        # Give the reservation back: this money was not refunded after all.
        session.execute(
            update(Payment)
            .where(Payment.id == payment.id)
            .values(amount_refunded=Payment.amount_refunded - refund.amount)
        )
    if status == RefundStatus.SUCCEEDED:
        REFUNDED_AMOUNT.labels(currency=payment.currency).inc(refund.amount)
    REFUNDS.labels(status=str(status)).inc()
    session.expire_all()
    if status == RefundStatus.SUCCEEDED:
        purpose_of(services.wiring, payment).refunded(
            session, payment, refunded_total(session, payment.id), services.settings
        )
        refund = session.get(Refund, refund_id)
        assert refund is not None
        queue_refund_notice(session, refund)
        payment_refunded(session, payment, refund, refunded_total(session, payment.id))
    log.info("refund.status", refund_id=refund_id, status=str(status))


def _status(stripe_status: str) -> RefundStatus:
    return {
        "succeeded": RefundStatus.SUCCEEDED,
        "failed": RefundStatus.FAILED,
        "canceled": RefundStatus.CANCELED,
    }.get(stripe_status, RefundStatus.PENDING)
