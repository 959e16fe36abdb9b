"""The inbound Stripe webhook inbox: store each event once, process it by a job, replay it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import ReturningInsert

from billfold.jobs.queue import enqueue, enqueue_many
from billfold.kit import audit
from billfold.kit.db import new_id, utcnow
from billfold.kit.errors import NotFound
from billfold.kit.observability import WEBHOOK_EVENTS, WEBHOOK_LAG
from billfold.services import Services
from billfold.stripe_gateway import StripeNotFound
from billfold.webhooks.dispatch import EVENT_HANDLERS, EventHandler, Outcome, event_time
from billfold.webhooks.models import EventStatus, StripeEvent

log = structlog.get_logger("billfold.webhooks")

PROCESS_JOB = "webhooks.process"


@dataclass(frozen=True)
class Stored:
    """Where a delivered event is kept: our ID for it, and whether this delivery stored it
    (False for a replay of an event already in the inbox)."""

    id: str
    new: bool


def accept(services: Services, raw_body: bytes, signature: str | None) -> Stored:
    """Stripe's delivery at our endpoint: the signature checked first, then the event stored
    (and its job enqueued) in one short transaction."""
    event = services.stripe.verify_webhook(raw_body, signature)
    with services.db.transaction() as session:
        return receive(session, event, raw_body)


def receive(session: Session, event: dict[str, Any], raw_body: bytes) -> Stored:
    """Store a verified event and enqueue its processing (once however often it arrives)."""
    return receive_all(session, [(event, raw_body)])[0]


def receive_all(
    session: Session, deliveries: Sequence[tuple[dict[str, Any], bytes]]
) -> list[Stored]:
    """Store verified events in the caller's transaction, each once by Stripe's event ID, and
    the processing job of each new one: one statement for the events, one for their jobs.

    An event already stored (or twice in `deliveries`) is a replay: answered with the stored
    row's ID, nothing written. The rows go in the order of their Stripe IDs, so two
    transactions storing some of the same events meet them in the same order (the second
    waits for the first, then skips what it stored) and never deadlock."""
    now = utcnow()
    rows: dict[str, dict[str, Any]] = {}
    for event, raw_body in deliveries:
        rows.setdefault(
            event["id"],
            {
                "id": new_id("evt"),
                "stripe_event_id": event["id"],
                "type": str(event["type"]),
                "stripe_created_at": event_time(event),
                "livemode": bool(event.get("livemode", False)),
                "payload": raw_body.decode("utf-8"),
                "status": EventStatus.PENDING,
                "attempts": 0,
                "received_at": now,
            },
        )
    ordered = [rows[key] for key in sorted(rows)]
    inserted = set(session.scalars(_insert_new_events(session), ordered))
    replayed = [key for key, row in rows.items() if row["id"] not in inserted]
    stored_ids = {key: row["id"] for key, row in rows.items() if row["id"] in inserted}
    if replayed:
        found = select(StripeEvent.stripe_event_id, StripeEvent.id).where(
            StripeEvent.stripe_event_id.in_(replayed)
        )
        stored_ids.update((key, stored_id) for key, stored_id in session.execute(found))
    enqueue_many(
        session, PROCESS_JOB, [{"event_id": row["id"]} for row in ordered if row["id"] in inserted]
    )
    answers: list[Stored] = []
    for event, _ in deliveries:
        stored_id = stored_ids[event["id"]]
        new = stored_id in inserted
        inserted.discard(stored_id)  # the same event twice in one batch: the second is a replay
        WEBHOOK_EVENTS.labels(
            type=str(event["type"]), outcome="received" if new else "duplicate"
        ).inc()
        answers.append(Stored(stored_id, new))
    return answers


def _insert_new_events(session: Session) -> ReturningInsert[str]:
    """INSERT … ON CONFLICT (stripe_event_id) DO NOTHING RETURNING id, in the session's SQL."""
    postgresql = session.get_bind().dialect.name == "postgresql"
    statement = (postgresql_insert if postgresql else sqlite_insert)(StripeEvent)
    return statement.on_conflict_do_nothing(index_elements=["stripe_event_id"]).returning(
        StripeEvent.id
    )


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
