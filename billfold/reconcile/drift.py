"""What a difference between our records and Stripe's looks like, and how one is repaired."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from billfold.services import Services
from billfold.webhooks.dispatch import EVENT_HANDLERS
from billfold.webhooks.models import EventStatus

SubjectKind = Literal["customer", "payment", "subscription"]


@dataclass(frozen=True)
class Subject:
    """One record of ours that is compared with Stripe as a whole (with its cards, refunds)."""

    kind: SubjectKind
    id: str


@dataclass(frozen=True)
class Repair:
    """How a difference is put right: `apply` answers why nothing changed, or None."""

    describe: str
    apply: Callable[[Services], str | None]


@dataclass
class Drift:
    subject: Subject
    kind: str  # what differs: customer, card, payment, refund, subscription
    ours: str  # our record's ID
    stripe_id: str | None
    problem: str  # a short code: status_differs, refund_not_recorded, …
    detail: str
    repair: Repair | None = None  # None: a person decides
    outcome: str | None = None  # after a repair: "fixed", or what still differs

    @property
    def key(self) -> tuple[str, str, str | None, str]:
        return (self.kind, self.ours, self.stripe_id, self.problem)

    @property
    def remains(self) -> bool:
        return self.outcome != "fixed"


def as_event(event_type: str, obj: dict[str, Any]) -> Repair:
    """Hand the object to the webhook handler of `event_type`, as if Stripe had sent it now:
    the handler re-reads it from Stripe and applies it exactly as a delivered event would."""

    def apply(services: Services) -> str | None:
        event = {
            "id": f"reconcile_{uuid.uuid4().hex[:16]}",
            "object": "event",
            "type": event_type,
            "created": int(time.time()),
            "livemode": False,
            "data": {"object": obj},
        }
        outcome = services.wiring.table(EVENT_HANDLERS)[event_type](services, event)
        return outcome.note if outcome.status == EventStatus.IGNORED else None

    return Repair(f"apply as {event_type}", apply)


def as_job(
    describe: str, job: Callable[[Services, dict[str, Any]], None], **payload: str
) -> Repair:
    """Run a job's handler now (the same work the worker would do; it is idempotent)."""

    def apply(services: Services) -> str | None:
        job(services, dict(payload))
        return None

    return Repair(describe, apply)
