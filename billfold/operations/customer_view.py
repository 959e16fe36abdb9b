"""Everything an operator sees on one customer's page, read in one transaction."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from billfold.credits import ledger
from billfold.credits.models import CreditAccount, CreditPurchase, LedgerEntry
from billfold.customers.models import Customer
from billfold.kit.audit import AuditEntry
from billfold.kit.errors import InvalidInput, NotFound
from billfold.mail.models import OutboxMail
from billfold.payments.models import Order, Payment, SavedCard
from billfold.services import Services
from billfold.subscriptions.listing import license_history
from billfold.subscriptions.models import License, Subscription
from billfold.webhooks.models import StripeEvent

RECENT = 50


@dataclass(frozen=True)
class CustomerOverview:
    customer: Customer
    cards: list[SavedCard]
    orders: list[Order]
    payments: list[Payment]  # each with its refunds
    subscription: Subscription | None
    licenses: list[License]
    credit_balance: int
    ledger: list[LedgerEntry]  # newest first
    credit_account: CreditAccount | None
    mails: list[OutboxMail]
    audit: list[AuditEntry]  # on the customer and on their payments, refunds, orders…
    events: list[StripeEvent]


def customer_overview(session: Session, customer_id: str) -> CustomerOverview:
    customer = session.get(Customer, customer_id)
    if customer is None or customer.deleted_at is not None:
        raise NotFound("No such customer")
    payments = list(
        session.scalars(
            select(Payment)
            .where(Payment.customer_id == customer.id)
            .order_by(Payment.created_at.desc(), Payment.id.desc())
            .limit(RECENT)
        )
    )
    orders = list(
        session.scalars(
            select(Order)
            .where(Order.customer_id == customer.id)
            .order_by(Order.created_at.desc(), Order.id.desc())
            .limit(RECENT)
        )
    )
    subscription = session.scalar(
        select(Subscription).where(Subscription.customer_id == customer.id)
    )
    purchases = session.scalars(
        select(CreditPurchase.id).where(CreditPurchase.customer_id == customer.id)
    ).all()
    subjects = {
        customer.id,
        customer.user_id,
        *(p.id for p in payments),
        *(r.id for p in payments for r in p.refunds),
        *(o.id for o in orders),
        *purchases,
        *([subscription.id] if subscription else []),
    }
    return CustomerOverview(
        customer=customer,
        cards=list(
            session.scalars(
                select(SavedCard)
                .where(SavedCard.customer_id == customer.id, SavedCard.attached.is_(True))
                .order_by(SavedCard.attached_at.desc())
            )
        ),
        orders=orders,
        payments=payments,
        subscription=subscription,
        licenses=license_history(session, customer.id, limit=RECENT),
        credit_balance=ledger.balance(session, customer.id),
        ledger=ledger.entries(session, customer.id, before=None, limit=RECENT),
        credit_account=session.get(CreditAccount, customer.id),
        mails=list(
            session.scalars(
                select(OutboxMail)
                .where(OutboxMail.to_address == customer.user.email)
                .order_by(OutboxMail.created_at.desc())
                .limit(RECENT)
            )
        ),
        audit=list(
            session.scalars(
                select(AuditEntry)
                .where(
                    or_(
                        AuditEntry.subject_id.in_(subjects),
                        AuditEntry.actor == customer.user_id,
                    )
                )
                .order_by(AuditEntry.created_at.desc(), AuditEntry.id.desc())
                .limit(RECENT)
            )
        ),
        events=list(
            session.scalars(
                select(StripeEvent)
                .where(StripeEvent.customer_id == customer.id)
                .order_by(StripeEvent.received_at.desc())
                .limit(RECENT)
            )
        ),
    )


def payment_currency(services: Services, customer_id: str, payment_id: str) -> str:
    """The currency of `customer_id`'s payment, in which an operator's refund amount is read;
    another customer's payment is refused. A short transaction of its own: the refund that
    follows (`payments.refunds.request_refund`) owns its transactions around Stripe."""
    with services.db.transaction() as session:
        payment = session.get(Payment, payment_id)
        if payment is None or payment.customer_id != customer_id:
            raise InvalidInput("That payment is not this customer's")
        return payment.currency
