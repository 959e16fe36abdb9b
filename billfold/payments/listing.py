"""Reading payments and refunds: the paged lists (newest first, with filters) and one payment."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from billfold.auth.service import Caller
from billfold.customers.service import acting_customer
from billfold.kit.errors import NotFound
from billfold.kit.paging import Page, Period, fetch_page
from billfold.payments.models import Payment, PaymentStatus, Refund, RefundStatus


@dataclass(frozen=True)
class PaymentFilter:
    customer_id: str | None = None
    status: PaymentStatus | None = None
    purpose: str | None = None
    created: Period = field(default_factory=Period)


def list_payments(
    session: Session, where: PaymentFilter, *, limit: int, offset: int
) -> Page[Payment]:
    query = select(Payment).order_by(Payment.created_at.desc(), Payment.id.desc())
    if where.customer_id is not None:
        query = query.where(Payment.customer_id == where.customer_id)
    if where.status is not None:
        query = query.where(Payment.status == where.status)
    if where.purpose is not None:
        query = query.where(Payment.purpose == where.purpose)
    query = where.created.apply(query, Payment.created_at)
    return fetch_page(session, query, limit=limit, offset=offset)


@dataclass(frozen=True)
class RefundFilter:
    customer_id: str | None = None
    payment_id: str | None = None
    status: RefundStatus | None = None
    created: Period = field(default_factory=Period)


def list_refunds(session: Session, where: RefundFilter, *, limit: int, offset: int) -> Page[Refund]:
    query = select(Refund).join(Refund.payment).order_by(Refund.created_at.desc(), Refund.id.desc())
    if where.customer_id is not None:
        query = query.where(Payment.customer_id == where.customer_id)
    if where.payment_id is not None:
        query = query.where(Refund.payment_id == where.payment_id)
    if where.status is not None:
        query = query.where(Refund.status == where.status)
    query = where.created.apply(query, Refund.created_at)
    return fetch_page(session, query, limit=limit, offset=offset)


def get_payment(session: Session, caller: Caller, payment_id: str) -> Payment:
    """One payment, if the caller may see it: their own, or any for an admin or service key."""
    payment = session.get(Payment, payment_id)
    if payment is None or not (
        caller.is_privileged or payment.customer_id == acting_customer(session, caller).id
    ):
        raise NotFound("No such payment")
    return payment
