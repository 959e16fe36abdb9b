"""The operator's list of subscriptions, and a customer's license history."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from billfold.kit.paging import Page, Period, fetch_page
from billfold.subscriptions.models import License, Plan, Subscription, SubscriptionStatus


@dataclass(frozen=True)
class SubscriptionFilter:
    customer_id: str | None = None
    status: SubscriptionStatus | None = None
    plan: str | None = None
    created: Period = field(default_factory=Period)


def list_subscriptions(
    session: Session, where: SubscriptionFilter, *, limit: int, offset: int
) -> Page[Subscription]:
    query = select(Subscription).order_by(Subscription.created_at.desc(), Subscription.id.desc())
    if where.customer_id is not None:
        query = query.where(Subscription.customer_id == where.customer_id)
    if where.status is not None:
        query = query.where(Subscription.status == where.status)
    if where.plan is not None:
        query = query.where(
            Subscription.plan_id.in_(select(Plan.id).where(Plan.code == where.plan))
        )
    query = where.created.apply(query, Subscription.created_at)
    return fetch_page(session, query, limit=limit, offset=offset)


def license_history(session: Session, customer_id: str, *, limit: int = 50) -> list[License]:
    """The licenses issued to a customer, newest first."""
    return list(
        session.scalars(
            select(License)
            .where(License.customer_id == customer_id)
            .order_by(License.issued_at.desc(), License.id.desc())
            .limit(limit)
        )
    )
