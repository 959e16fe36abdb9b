"""The operator's page of the webhook inbox: newest first, by status and type."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from billfold.kit.paging import Page, fetch_page
from billfold.webhooks.models import EventStatus, StripeEvent


def list_events(
    session: Session,
    *,
    status: EventStatus | None,
    event_type: str | None,
    limit: int,
    offset: int,
) -> Page[StripeEvent]:
    query = select(StripeEvent).order_by(StripeEvent.received_at.desc(), StripeEvent.id.desc())
    if status is not None:
        query = query.where(StripeEvent.status == status)
    if event_type:
        query = query.where(StripeEvent.type == event_type)
    return fetch_page(session, query, limit=limit, offset=offset)
