"""HTTP routes: Stripe's webhook endpoint, and the admin's view of stored events."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request

from billfold.auth.deps import AdminWorkDep
from billfold.kit.envelope import ERROR_RESPONSES, ApiModel, Envelope, ok
from billfold.webhooks import inbox
from billfold.webhooks.batching import InboxBatcher
from billfold.webhooks.models import EventStatus

router = APIRouter(responses=ERROR_RESPONSES)


class ReceivedOut(ApiModel):
    id: str
    received: bool = True
    duplicate: bool


class EventOut(ApiModel):
    id: str
    stripe_event_id: str
    type: str
    status: EventStatus
    attempts: int
    error: str | None
    customer_id: str | None
    stripe_created_at: datetime
    received_at: datetime
    processed_at: datetime | None


@router.post("/webhooks/stripe", tags=["webhooks"], summary="Stripe webhook endpoint")
async def stripe_webhook(
    request: Request,
    stripe_signature: Annotated[str | None, Header(alias="Stripe-Signature")] = None,
) -> Envelope[ReceivedOut]:
    batcher: InboxBatcher = request.app.state.inbox_batcher
    stored = await batcher.accept(await request.body(), stripe_signature)
    return ok(ReceivedOut(id=stored.id, duplicate=not stored.new))


@router.get("/webhooks/events", tags=["webhooks"], summary="Stored Stripe events (admin)")
def list_events(
    work: AdminWorkDep,
    status: EventStatus | None = None,
    event_type: Annotated[str | None, Query(alias="type", max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Envelope[list[EventOut]]:
    events = inbox.list_events(work.session, status=status, event_type=event_type, limit=limit)
    return ok([EventOut.model_validate(e) for e in events])


@router.post("/webhooks/events/{event_id}/replay", tags=["webhooks"])
def replay_event(event_id: str, work: AdminWorkDep) -> Envelope[EventOut]:
    replayed = inbox.replay(work.session, event_id, actor=work.caller.actor)
    return ok(EventOut.model_validate(replayed))
