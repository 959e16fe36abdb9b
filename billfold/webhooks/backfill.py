"""Bring in the Stripe events Billfold never stored (a lost webhook, an endpoint that was down):
list them from Stripe and feed each new one into the inbox, as if it had just arrived."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

import structlog
from sqlalchemy import select

from billfold.services import Services
from billfold.webhooks import inbox
from billfold.webhooks.models import StripeEvent

log = structlog.get_logger("billfold.webhooks")

# How many event IDs one look-up in our inbox checks at once.
_LOOKUP_BATCH = 500


@dataclass(frozen=True)
class BackfillResult:
    listed: int  # events Stripe has since the given time
    stored: int  # new to us: stored and queued for processing
    skipped: int  # already in the inbox (by Stripe's event ID)


def backfill_events(services: Services, since: datetime) -> BackfillResult:
    """Store every event Stripe has since `since` that the inbox lacks, oldest first.

    Processing is left to the worker, as for a webhook; the inbox's unique event ID makes a
    webhook arriving at the same moment (or a second backfill) store it only once.
    """
    events = services.stripe.list_events(created_since=int(since.timestamp()))
    # Stripe lists newest first; handlers do not depend on order, but people reading the
    # inbox do, so feed them in the order they happened.
    events.sort(key=lambda event: int(event["created"]))
    known: set[str] = set()
    with services.db.transaction() as session:
        ids = [str(event["id"]) for event in events]
        for start in range(0, len(ids), _LOOKUP_BATCH):
            chunk = ids[start : start + _LOOKUP_BATCH]
            known.update(
                session.scalars(
                    select(StripeEvent.stripe_event_id).where(
                        StripeEvent.stripe_event_id.in_(chunk)
                    )
                )
            )
    stored = 0
    for event in events:
        if event["id"] in known:
            continue
        with services.db.transaction() as session:
            stored += inbox.receive(session, event, json.dumps(event).encode()).new
    log.info("webhooks.backfilled", listed=len(events), stored=stored, since=since.isoformat())
    return BackfillResult(listed=len(events), stored=stored, skipped=len(events) - stored)
