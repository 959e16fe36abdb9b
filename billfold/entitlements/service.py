"""Answer what a customer may use, from their current subscription's plan and their credits
balance, in one read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, lazyload

from billfold.auth.service import Caller
from billfold.config import Settings
from billfold.credits.models import CreditAccount
from billfold.customers.models import Customer
from billfold.entitlements.rules import Entitlement, decide, every
from billfold.kit.db import utcnow
from billfold.kit.errors import NotFound
from billfold.subscriptions.licenses import terms
from billfold.subscriptions.models import Plan, Subscription


@dataclass(frozen=True)
class Standing:
    customer_id: str
    plan: str | None
    status: str | None  # the subscription's status; None without one
    plan_active: bool  # whether the plan's features apply now (as a new license would say)
    features: dict[str, Any]
    balance: int


_FACTS = (
    select(
        Customer.id,
        Customer.user_id,
        Customer.deleted_at,
        Subscription,
        Plan,
        CreditAccount.balance,
    )
    .outerjoin(Subscription, Subscription.customer_id == Customer.id)
    .outerjoin(Plan, Plan.id == Subscription.plan_id)
    .outerjoin(CreditAccount, CreditAccount.customer_id == Customer.id)
    # The plan comes in this row: no eager (inner) join of its own, which would drop
    # customers without a subscription; the relationship then finds it in the session.
    .options(lazyload(Subscription.plan))
)


def standing(session: Session, caller: Caller, customer_id: str, settings: Settings) -> Standing:
    """The customer's plan and balance; 404 for anyone the caller may not see."""
    row = session.execute(_FACTS.where(Customer.id == customer_id)).one_or_none()
    if row is None or row.deleted_at is not None or not caller.may_act_on(row.user_id):
        raise NotFound("No such customer")
    subscription: Subscription | None = row.Subscription
    balance = int(row.balance or 0)
    if subscription is None or row.Plan is None:
        return Standing(customer_id, None, None, False, {}, balance)
    now = utcnow()
    granted = terms(subscription, settings, now)
    active = bool(granted.features) and granted.expires_at > now
    return Standing(
        customer_id,
        row.Plan.code,
        str(subscription.status),
        active,
        dict(row.Plan.features or {}),
        balance,
    )


def check(
    session: Session,
    caller: Caller,
    settings: Settings,
    *,
    customer_id: str,
    feature: str,
    amount: int,
) -> tuple[Standing, Entitlement]:
    facts = standing(session, caller, customer_id, settings)
    decided = decide(
        feature,
        amount,
        features=facts.features,
        plan_active=facts.plan_active,
        balance=facts.balance,
    )
    return facts, decided


def list_all(
    session: Session, caller: Caller, settings: Settings, customer_id: str
) -> tuple[Standing, list[Entitlement]]:
    facts = standing(session, caller, customer_id, settings)
    return facts, every(facts.features, plan_active=facts.plan_active, balance=facts.balance)
