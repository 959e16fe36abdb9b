"""Invoices, for customers to see: kept current by Stripe's `invoice.*` events (each re-reads
the invoice from Stripe, so order and repetition change nothing) and listed per customer."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from billfold.auth.service import Caller
from billfold.customers.models import Customer
from billfold.customers.service import acting_customer
from billfold.kit.errors import NotFound
from billfold.kit.paging import Page, fetch_page
from billfold.services import Services
from billfold.stripe_gateway import StripeInvoice, StripeNotFound
from billfold.subscriptions.models import Invoice, Subscription
from billfold.webhooks.dispatch import Outcome, event_object, event_time
from billfold.webhooks.models import EventStatus


def _time(epoch: int | None) -> datetime | None:
    return datetime.fromtimestamp(epoch, UTC) if epoch else None


# How far along Stripe's invoice life each status is; an invoice only moves forward.
_STAGE = {"draft": 0, "open": 1, "uncollectible": 2, "paid": 3, "void": 3}


def record(session: Session, remote: StripeInvoice, *, event_at: datetime | None) -> Invoice | None:
    """Store Stripe's invoice as it is now; None if no customer of ours owns it."""
    found = session.scalar(select(Invoice).where(Invoice.stripe_invoice_id == remote.id))
    if (
        found is not None
        and event_at
        and found.stripe_event_at
        and event_at < found.stripe_event_at
    ):
        return found  # older than what we hold
    if found is not None and _STAGE.get(remote.status, 0) < _STAGE.get(found.status, 0):
        # Stripe never moves an invoice back (paid and void are final, uncollectible only
        # goes on to paid or void): this is a read from before what we hold, e.g. the
        # authenticate page's read (no event time) landing after the `invoice.paid` event.
        return found
    subscription_id = session.scalar(
        select(Subscription.id).where(Subscription.stripe_subscription_id == remote.subscription)
    )
    if found is None:
        customer_id = session.scalar(
            select(Customer.id).where(Customer.stripe_customer_id == remote.customer)
        )
        if customer_id is None:
            return None
        found = _insert_or_load(session, remote, customer_id)
    found.subscription_id = subscription_id
    found.number = remote.number
    found.status = remote.status
    found.currency = remote.currency
    found.amount_due = remote.amount_due
    found.amount_paid = remote.amount_paid
    found.total = remote.total
    found.discount_amount = remote.discount_amount
    found.billing_reason = remote.billing_reason
    found.period_start = _time(remote.period_start)
    found.period_end = _time(remote.period_end)
    found.hosted_invoice_url = remote.hosted_invoice_url
    found.invoice_pdf = remote.invoice_pdf
    found.stripe_created_at = _time(remote.created)
    if event_at is not None:
        found.stripe_event_at = max(event_at, found.stripe_event_at or event_at)
    session.flush()
    return found


def _insert_or_load(session: Session, remote: StripeInvoice, customer_id: str) -> Invoice:
    """A new row for Stripe's invoice or, when a parallel event stored it first (Stripe sends
    several `invoice.*` events at once, taken by different workers), that row."""
    row = Invoice(
        stripe_invoice_id=remote.id,
        customer_id=customer_id,
        status=remote.status,
        currency=remote.currency,
    )
    try:
        with session.begin_nested():
            session.add(row)
        return row
    except IntegrityError:
        stored = session.scalar(select(Invoice).where(Invoice.stripe_invoice_id == remote.id))
        if stored is None:
            raise
        return stored


def apply_event(services: Services, event: dict[str, Any]) -> Outcome:
    """An `invoice.*` event: re-read the invoice from Stripe and store it."""
    return record_event(services, event)[0]


def record_event(services: Services, event: dict[str, Any]) -> tuple[Outcome, StripeInvoice | None]:
    """`apply_event`, also answering the invoice as Stripe gave it (None if it was not read),
    so a handler with more to do for the same event need not ask Stripe again."""
    obj = event_object(event)
    if not obj.get("id") or str(obj["id"]).startswith("upcoming_"):
        return Outcome(EventStatus.IGNORED, note="an invoice preview"), None
    with services.db.transaction() as session:
        customer = obj.get("customer")
        customer = customer if isinstance(customer, str) or customer is None else customer["id"]
        known = session.scalar(select(Customer.id).where(Customer.stripe_customer_id == customer))
        if known is None:
            return Outcome(EventStatus.IGNORED, note=f"no customer of ours owns {obj['id']}"), None
    try:
        remote = services.stripe.retrieve_invoice(obj["id"])
    except StripeNotFound:
        return Outcome(EventStatus.IGNORED, note="the invoice is gone from Stripe"), None
    with services.db.transaction() as session:
        stored = record(session, remote, event_at=event_time(event))
        if stored is None:
            note = f"no customer of ours owns {remote.id}"
            return Outcome(EventStatus.IGNORED, note=note), remote
        return Outcome(EventStatus.PROCESSED, stored.customer_id), remote


@dataclass(frozen=True)
class InvoiceFilter:
    customer_id: str | None = None
    status: str | None = None


def list_invoices(
    session: Session, caller: Caller, where: InvoiceFilter, *, limit: int, offset: int
) -> Page[Invoice]:
    """The caller's own invoices, newest first; admins and service keys see any customer's
    (or everyone's, naming none)."""
    query = select(Invoice).order_by(Invoice.stripe_created_at.desc(), Invoice.id.desc())
    if where.customer_id is not None or not caller.is_privileged:
        customer = acting_customer(session, caller, where.customer_id)
        query = query.where(Invoice.customer_id == customer.id)
    if where.status is not None:
        query = query.where(Invoice.status == where.status)
    return fetch_page(session, query, limit=limit, offset=offset)


@dataclass(frozen=True)
class InvoiceToConfirm:
    """An invoice as its authenticate page shows it: re-read from Stripe, with the client
    secret Stripe.js needs while its payment waits for the customer (never stored)."""

    id: str
    number: str | None
    amount_due: int
    currency: str
    status: str
    client_secret: str | None


def invoice_to_confirm(services: Services, caller: Caller, invoice_id: str) -> InvoiceToConfirm:
    """The caller's own invoice (NotFound for anyone else's), re-read from Stripe and stored
    as it is now, with its payment's client secret when the bank waits for the customer."""
    with services.db.transaction() as session:
        customer = acting_customer(session, caller)
        stripe_id = session.scalar(
            select(Invoice.stripe_invoice_id).where(
                Invoice.id == invoice_id, Invoice.customer_id == customer.id
            )
        )
    if stripe_id is None:
        raise NotFound("No such invoice")
    try:
        remote, intent = services.stripe.retrieve_invoice_payment(stripe_id)
    except StripeNotFound as exc:
        raise NotFound("No such invoice") from exc
    with services.db.transaction() as session:
        record(session, remote, event_at=None)
    waiting = intent is not None and intent.status == "requires_action" and remote.status == "open"
    return InvoiceToConfirm(
        id=invoice_id,
        number=remote.number,
        amount_due=remote.amount_due,
        currency=remote.currency,
        status=remote.status,
        client_secret=intent.client_secret if waiting and intent is not None else None,
    )
