"""Request and answer shapes of the webhook endpoint routes."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from billfold.kit.envelope import ApiModel, InputModel
from billfold.webhooks.outbound.models import DeliveryStatus

EventType = str


class EndpointIn(InputModel):
    url: str = Field(min_length=8, max_length=2000)
    event_types: list[EventType] | None = Field(default=None, max_length=50)
    description: str | None = Field(default=None, max_length=500)


class EndpointPatch(InputModel):
    """Only the fields sent change; `eventTypes: null` means every event type."""

    url: str | None = Field(default=None, min_length=8, max_length=2000)
    event_types: list[EventType] | None = Field(default=None, max_length=50)
    description: str | None = Field(default=None, max_length=500)
    enabled: bool | None = None


class EndpointOut(ApiModel):
    id: str
    url: str
    description: str | None
    event_types: list[str] | None
    enabled: bool
    disabled_reason: str | None
    failing_since: datetime | None
    previous_secret_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime


class EndpointWithSecret(EndpointOut):
    # Shown only in this answer: keep it, it verifies the signatures of our deliveries.
    secret: str


class DeliveryOut(ApiModel):
    id: str
    endpoint_id: str
    event_id: str
    event_type: str
    customer_id: str | None
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime


class DeliveriesPage(ApiModel):
    deliveries: list[DeliveryOut]
    next_cursor: datetime | None


class EventTypeOut(ApiModel):
    type: str
    description: str
