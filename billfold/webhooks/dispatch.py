"""What a Stripe event handler answers, and the type every handler has."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from billfold.kit.wiring import Table
from billfold.services import Services
from billfold.webhooks.models import EventStatus


@dataclass(frozen=True)
class Outcome:
    status: EventStatus = EventStatus.PROCESSED
    customer_id: str | None = None
    note: str | None = None


EventHandler = Callable[[Services, dict[str, Any]], Outcome]
# Every Stripe event type Billfold handles, and its handler (each domain's HANDLERS, wired by
# billfold/registry.py): the inbox and `billfold reconcile --fix` both apply events through it.
EVENT_HANDLERS: Table[EventHandler] = Table("webhooks.event_handlers")


def event_object(event: dict[str, Any]) -> dict[str, Any]:
    obj = event.get("data", {}).get("object")
    if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
        raise ValueError("event carries no Stripe object")
    return obj


def event_time(event: dict[str, Any]) -> datetime:
    return datetime.fromtimestamp(int(event["created"]), UTC)
