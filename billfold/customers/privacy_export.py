"""The privacy (data subject) export: every record we hold on one customer, in full.

Rows are dumped column by column, so a column added later is exported without a change
here; columns holding secrets (hashes, tokens, claim tokens) are left out by name."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import inspect, or_, select
from sqlalchemy.orm import Session

from billfold.auth.models import AccountLink
from billfold.auth.service import Caller
from billfold.credits.models import CreditAccount, CreditPurchase, LedgerEntry
from billfold.customers.service import get_customer
from billfold.kit import audit
from billfold.mail.models import OutboxMail
from billfold.payments.models import Order, Payment, SavedCard
from billfold.subscriptions.models import License, Subscription
from billfold.webhooks.models import StripeEvent

# Never exported: they open accounts or licenses, or are our own bookkeeping of a try.
_SECRET_COLUMNS = frozenset(
    {"password_hash", "token_hash", "token", "secret_hash", "link_claim_token", "token_version"}
)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _row(obj: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for column in inspect(obj).mapper.column_attrs:
        if column.key in _SECRET_COLUMNS:
            continue
        value = getattr(obj, column.key)
        values[_camel(column.key)] = value.isoformat() if isinstance(value, datetime) else value
    return values


def _rows(objs: Iterable[Any]) -> list[dict[str, Any]]:
    return [_row(o) for o in objs]


def export(session: Session, caller: Caller, user_id: str) -> dict[str, Any]:
    """Everything we hold on one customer, for a privacy (data subject) request."""
    customer = get_customer(session, caller, user_id)
    user = customer.user

    def of_customer(model: Any, order_by: Any) -> list[Any]:
        return list(
            session.scalars(
                select(model).where(model.customer_id == customer.id).order_by(order_by)
            )
        )

    orders = of_customer(Order, Order.created_at)
    payments = of_customer(Payment, Payment.created_at)
    purchases = of_customer(CreditPurchase, CreditPurchase.created_at)
    subscription = session.scalar(
        select(Subscription).where(Subscription.customer_id == customer.id)
    )
    account = session.get(CreditAccount, customer.id)
    link_addresses = session.scalars(
        select(AccountLink.email).where(AccountLink.user_id == user.id)
    ).all()
    addresses = {user.email, *link_addresses}
    subjects = {
        user.id,
        customer.id,
        *(o.id for o in orders),
        *(p.id for p in payments),
        *(r.id for p in payments for r in p.refunds),
        *(c.id for c in purchases),
        *([subscription.id] if subscription else []),
    }
    audit_entries = session.scalars(
        select(audit.AuditEntry)
        .where(or_(audit.AuditEntry.subject_id.in_(subjects), audit.AuditEntry.actor == user.id))
        .order_by(audit.AuditEntry.created_at)
    )
    events = session.scalars(
        select(StripeEvent)
        .where(StripeEvent.customer_id == customer.id)
        .order_by(StripeEvent.received_at)
    )
    return {
        "user": {
            "id": user.id,
            "name": user.name,
            "email": user.email,
            "role": str(user.role),
            "companyName": user.company_name,
            "isEmailVerified": user.is_email_verified,
            "createdAt": user.created_at.isoformat(),
            "updatedAt": user.updated_at.isoformat(),
        },
        "customer": _row(customer),
        "orders": [{**_row(o), "lines": _rows(o.lines)} for o in orders],
        "payments": [{**_row(p), "refunds": _rows(p.refunds)} for p in payments],
        "refunds": [_row(r) for p in payments for r in p.refunds],
        "cards": _rows(of_customer(SavedCard, SavedCard.id)),
        "subscription": _row(subscription) if subscription else None,
        "licenses": _rows(of_customer(License, License.issued_at)),
        "credits": {
            "account": _row(account) if account else None,
            "purchases": _rows(purchases),
            "ledger": _rows(of_customer(LedgerEntry, LedgerEntry.entry_no)),
        },
        "emails": _rows(
            session.scalars(
                select(OutboxMail)
                .where(OutboxMail.to_address.in_(addresses))
                .order_by(OutboxMail.created_at)
            )
        ),
        "auditLog": [
            {
                "action": a.action,
                "actor": a.actor,
                "subject": a.subject_id,
                "at": a.created_at.isoformat(),
                "details": a.details,
            }
            for a in audit_entries
        ],
        "stripeEvents": [
            {
                "id": e.id,
                "type": e.type,
                "status": str(e.status),
                "receivedAt": e.received_at.isoformat(),
            }
            for e in events
        ],
    }
