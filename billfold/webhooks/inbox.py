"""The inbound Stripe webhook inbox: store each event once, process it by a job, replay it."""

from __future__ import annotations

import json
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from billfold.jobs.queue import enqueue
from billfold.kit import audit
from billfold.kit.db import utcnow
from billfold.kit.errors import NotFound
from billfold.kit.observability import WEBHOOK_EVENTS, WEBHOOK_LAG
from billfold.services import Services
from billfold.stripe_gateway import StripeNotFound
from billfold.webhooks.dispatch import EVENT_HANDLERS, EventHandler, Outcome, event_time
from billfold.webhooks.models import EventStatus, StripeEvent

log = structlog.get_logger("billfold.webhooks")

PROCESS_JOB = "webhooks.process"


def accept(services: Services, raw_body: bytes, signature: str | None) -> tuple[StripeEvent, bool]:
    """Stripe's delivery at our endpoint: the signature checked first, then the event stored
    (and its job enqueued) in one short transaction; the stored event, and whether it is new."""
    event = services.stripe.verify_webhook(raw_body, signature)
    with services.db.transaction() as session:
        return receive(session, event, raw_body)


def receive(session: Session, event: dict[str, Any], raw_body: bytes) -> tuple[StripeEvent, bool]:
    """Store a verified event and enqueue its processing; (stored, False) for a replay."""
    stored = StripeEvent(
        stripe_event_id=event["id"],
        type=str(event["type"]),
        stripe_created_at=event_time(event),
        livemode=bool(event.get("livemode", False)),
        payload=raw_body.decode("utf-8"),
    )
    try:
        with session.begin_nested():
            session.add(stored)
            session.flush()
    except IntegrityError:
        existing = session.scalar(
            select(StripeEvent).where(StripeEvent.stripe_event_id == event["id"])
        )
        assert existing is not None
        WEBHOOK_EVENTS.labels(type=existing.type, outcome="duplicate").inc()
        return existing, False
    enqueue(session, PROCESS_JOB, {"event_id": stored.id})
    WEBHOOK_EVENTS.labels(type=stored.type, outcome="received").inc()
    return stored, True


def process(services: Services, event_id: str) -> None:
    """Apply a stored event through its handler; mark it handled only once that succeeds."""
    with services.db.transaction() as session:
        stored = session.get(StripeEvent, event_id)
        if stored is None:
            return
        if stored.status in (EventStatus.PROCESSED, EventStatus.IGNORED):
            return
        event_type, payload = stored.type, json.loads(stored.payload)
    outcome = _handle(services, services.wiring.table(EVENT_HANDLERS).get(event_type), payload)
    with services.db.transaction() as session:
        stored = session.get(StripeEvent, event_id)
        assert stored is not None
        stored.status = outcome.status
        stored.customer_id = outcome.customer_id or stored.customer_id
        stored.error = outcome.note
        stored.attempts += 1
        stored.processed_at = utcnow()
        lag = (stored.processed_at - stored.stripe_created_at).total_seconds()
    WEBHOOK_LAG.observe(max(lag, 0.0))
    WEBHOOK_EVENTS.labels(type=event_type, outcome=str(outcome.status)).inc()
    log.info("webhook.processed", event_id=event_id, type=event_type, status=str(outcome.status))


def _handle(services: Services, handler: EventHandler | None, event: dict[str, Any]) -> Outcome:
    if handler is None:
        return Outcome(EventStatus.IGNORED, note="no handler for this type")
    try:
        return handler(services, event)
    except StripeNotFound:
        # Stripe no longer has what the event is about: no retry will ever find it.
        log.info("webhook.object_gone", event_id=event.get("id"), type=event.get("type"))
        return Outcome(EventStatus.IGNORED, note="its object no longer exists in Stripe")


def record_failure(
    _services: Services, session: Session, payload: dict[str, Any], error: str, dead: bool
) -> None:
    """After a failed try: the event shows its error, and `failed` once retries are spent."""
    stored = session.get(StripeEvent, payload["event_id"])
    if stored is None:
        return
    stored.attempts += 1
    stored.error = error
    if dead:
        stored.status = EventStatus.FAILED


def list_events(
    session: Session, *, status: EventStatus | None, event_type: str | None, limit: int
) -> list[StripeEvent]:
    query = select(StripeEvent).order_by(StripeEvent.received_at.desc()).limit(limit)
    if status is not None:
        query = query.where(StripeEvent.status == status)
    if event_type is not None:
        query = query.where(StripeEvent.type == event_type)
    return list(session.scalars(query))


def replay(session: Session, event_id: str, *, actor: str) -> StripeEvent:
    """Process a stored event again (handlers are idempotent, so this is always safe)."""
    stored = session.get(StripeEvent, event_id)
    if stored is None:
        raise NotFound("No such event")
    stored.status = EventStatus.PENDING
    stored.error = None
    enqueue(session, PROCESS_JOB, {"event_id": stored.id})
    audit.record(session, actor, "webhook.replay", stored.id, type=stored.type)
    return stored
