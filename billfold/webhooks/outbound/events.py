"""Write an event in the caller's transaction, with one delivery (and its job) per endpoint
that wants it: the event goes out if, and only if, the change that caused it commits."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from billfold.jobs import wakeup
from billfold.jobs.models import Job, JobStatus
from billfold.jobs.queue import DEFAULT_MAX_ATTEMPTS
from billfold.kit.db import new_id, utcnow
from billfold.webhooks.outbound.catalog import EVENT_TYPES
from billfold.webhooks.outbound.models import (
    DeliveryStatus,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)

DELIVER_JOB = "webhooks.deliver"

_ENABLED_ENDPOINTS = select(WebhookEndpoint.id, WebhookEndpoint.event_types).where(
    WebhookEndpoint.enabled.is_(True)
)


def emit(session: Session, event_type: str, customer_id: str | None, data: dict[str, Any]) -> str:
    """Record `event_type` about `customer_id` (our IDs only in `data`); answers its ID."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event type {event_type!r}")
    now = utcnow()
    event_id = new_id("msg")
    # Core statements: this runs inside other domains' transactions, the consume batch's too.
    seq = session.execute(
        insert(WebhookEvent)
        .values(id=event_id, type=event_type, customer_id=customer_id, data=data, created_at=now)
        .returning(WebhookEvent.seq)
    ).scalar_one()
    endpoints = [
        endpoint_id
        for endpoint_id, wanted in session.execute(_ENABLED_ENDPOINTS)
        if wanted is None or event_type in wanted
    ]
    if endpoints:
        schedule(session, endpoints, seq, customer_id)
    return event_id


def schedule(
    session: Session, endpoint_ids: list[str], event_seq: int, customer_id: str | None
) -> list[str]:
    """A pending delivery of one event to each endpoint, and the job that sends it."""
    now = utcnow()
    deliveries = [
        {
            "id": new_id("whd"),
            "job_id": new_id("job"),
            "endpoint_id": endpoint_id,
            "event_seq": event_seq,
            "customer_id": customer_id,
            "status": DeliveryStatus.PENDING,
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        }
        for endpoint_id in endpoint_ids
    ]
    session.execute(insert(WebhookDelivery), deliveries)
    session.execute(
        insert(Job),
        [
            {
                "id": d["job_id"],
                "kind": DELIVER_JOB,
                "payload": {"delivery_id": d["id"]},
                "status": JobStatus.PENDING,
                "attempts": 0,
                "max_attempts": DEFAULT_MAX_ATTEMPTS,
                "run_at": now,
                "created_at": now,
            }
            for d in deliveries
        ],
    )
    wakeup.note_enqueued(session)  # idle workers start on the commit, not at their next poll
    return [str(d["id"]) for d in deliveries]
