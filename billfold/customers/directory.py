"""The operator's customer list: paged, searchable by e-mail, name, our IDs or Stripe's."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from billfold.auth.models import User
from billfold.customers.models import Customer
from billfold.kit.paging import Page, Period, fetch_page


@dataclass(frozen=True)
class CustomerFilter:
    search: str | None = None
    email: str | None = None
    stripe_customer_id: str | None = None
    customer_id: str | None = None
    created: Period = field(default_factory=Period)


def search_customers(
    session: Session, where: CustomerFilter, *, limit: int, offset: int
) -> Page[Customer]:
    """Newest first. `search` matches part of the e-mail or name, or a whole ID (ours:
    customer or user; Stripe's customer); the other filters are exact."""
    query = (
        select(Customer)
        .join(Customer.user)
        .where(Customer.deleted_at.is_(None))
        .order_by(Customer.created_at.desc(), Customer.id.desc())
    )
    if where.search and where.search.strip():
        term = where.search.strip()
        query = query.where(
            or_(
                User.email_normalized.contains(term.lower(), autoescape=True),
                func.lower(User.name).contains(term.lower(), autoescape=True),
                Customer.id == term,
                Customer.user_id == term,
                Customer.stripe_customer_id == term,
            )
        )
    if where.email:
        query = query.where(User.email_normalized == where.email.strip().lower())
    if where.stripe_customer_id:
        query = query.where(Customer.stripe_customer_id == where.stripe_customer_id)
    if where.customer_id:
        query = query.where(
            or_(Customer.id == where.customer_id, Customer.user_id == where.customer_id)
        )
    query = where.created.apply(query, Customer.created_at)
    return fetch_page(session, query, limit=limit, offset=offset)
