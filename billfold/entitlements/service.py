"""Answer what a customer may use, from their current subscription's plan and their credits
balance, in one read (one query for any number of customers)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, bindparam, select
from sqlalchemy.orm import Session

from billfold.auth.service import Caller
from billfold.config import Settings
from billfold.credits.models import CreditAccount
from billfold.customers.models import Customer
from billfold.kit.db import utcnow
from billfold.kit.errors import NotFound
from billfold.subscriptions.licenses import terms_of
from billfold.subscriptions.models import Plan, Subscription


@dataclass(frozen=True)
class Standing:
    customer_id: str
    plan: str | None
    status: str | None  # the subscription's status; None without one
    plan_active: bool  # whether the plan's features apply now (as a new license would say)
    features: dict[str, Any]
    balance: int


# Plain columns, not entities: no identity map, and none of the loaders an entity brings
# along (a Subscription loads its pending plan change with a query of its own).
_FACTS = (
    select(
        Customer.id,
        Customer.user_id,
        Customer.deleted_at,
        Subscription.status,
        Subscription.trial_ends_at,
        Subscription.current_period_ends_at,
        Plan.code,
        Plan.features,
        CreditAccount.balance,
    )
    .outerjoin(Subscription, Subscription.customer_id == Customer.id)
    .outerjoin(Plan, Plan.id == Subscription.plan_id)
    .outerjoin(CreditAccount, CreditAccount.customer_id == Customer.id)
    .where(Customer.id.in_(bindparam("ids", expanding=True)))
)


def standing(session: Session, caller: Caller, customer_id: str, settings: Settings) -> Standing:
    """The customer's plan and balance; 404 for anyone the caller may not see."""
    found = standings(session, [(caller, customer_id)], settings)[0]
    if isinstance(found, NotFound):
        raise found
    return found


def standings(
    session: Session, asks: Sequence[tuple[Caller, str]], settings: Settings
) -> list[Standing | NotFound]:
    """`standing` for many (caller, customer ID) pairs at once, in one query: each one's
    standing, or the error `standing` would raise for it."""
    if not asks:
        return []
    rows = {
        row.id: row
        for row in session.connection().execute(_FACTS, {"ids": list({c for _, c in asks})})
    }
    now = utcnow()
    return [_standing(caller, rows.get(customer_id), settings, now) for caller, customer_id in asks]


def _standing(
    caller: Caller, row: Row[Any] | None, settings: Settings, now: datetime
) -> Standing | NotFound:
    if row is None or row.deleted_at is not None or not caller.may_act_on(row.user_id):
        return NotFound("No such customer")
    balance = int(row.balance or 0)
    if row.status is None or row.code is None:
        return Standing(row.id, None, None, False, {}, balance)
    granted = terms_of(
        row.status,
        row.features or {},
        trial_ends_at=row.trial_ends_at,
        period_ends_at=row.current_period_ends_at,
        settings=settings,
        now=now,
    )
    active = bool(granted.features) and granted.expires_at > now
    return Standing(row.id, row.code, str(row.status), active, dict(row.features or {}), balance)
