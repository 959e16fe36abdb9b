"""Tables of outbound webhooks: the host's endpoints, the events we emit, and their deliveries."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from billfold.kit.db import Base, UTCDateTime, new_id, utcnow

# SQLite only autoincrements an INTEGER PRIMARY KEY (its rowid); PostgreSQL gets a bigint.
_SEQUENCE = BigInteger().with_variant(Integer(), "sqlite")


class WebhookEndpoint(Base):
    """Where the host application wants events: a URL, a filter and a signing secret."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("whe"))
    url: Mapped[str] = mapped_column(String(2000))
    description: Mapped[str | None] = mapped_column(String(500))
    # None: every event type; otherwise only these.
    event_types: Mapped[list[str] | None] = mapped_column(JSON)
    enabled: Mapped[bool] = mapped_column(default=True)
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    # The signing secret, encrypted (see secrets.py); the previous one signs too until
    # `previous_secret_expires_at`, so receivers can roll over without losing an event.
    secret_encrypted: Mapped[str] = mapped_column(Text)
    previous_secret_encrypted: Mapped[str | None] = mapped_column(Text)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The first failed attempt since the last success: an endpoint failing for too long is
    # disabled and the admins told.
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class WebhookEvent(Base):
    """An event of ours, written in the transaction of the change it reports."""

    __tablename__ = "webhook_events"

    # The order events were written in: deliveries for one customer go out in this order.
    seq: Mapped[int] = mapped_column(_SEQUENCE, primary_key=True, autoincrement=True)
    # Sent as `webhook-id`: the same on every try and redelivery, for the receiver's dedupe.
    id: Mapped[str] = mapped_column(String(40), unique=True, default=lambda: new_id("msg"))
    type: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[str | None] = mapped_column(String(40), index=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class WebhookDelivery(Base):
    """One event to one endpoint: its tries so far and how the last one went."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("whd"))
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    event_seq: Mapped[int] = mapped_column(ForeignKey("webhook_events.seq"))
    # Copied from the event: deliveries of one customer's events to one endpoint keep order.
    # None on a manual redelivery, which is out of band (endpoints.redeliver).
    customer_id: Mapped[str | None] = mapped_column(String(40))
    # The job that stands behind it: it runs a batch for the endpoint if no batch has taken
    # the delivery, and is the timer of its next try (a batch settles it with the delivery).
    job_id: Mapped[str | None] = mapped_column(String(40))
    status: Mapped[DeliveryStatus] = mapped_column(String(16), default=DeliveryStatus.PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=utcnow)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_status_code: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # While a batch is sending it: that batch's token, and when its lease ends (a worker
    # killed mid-batch leaves the delivery to be claimed again once the lease is over).
    lease_token: Mapped[str | None] = mapped_column(String(40))
    leased_until: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_webhook_deliveries_endpoint_created", "endpoint_id", "created_at"),
        Index("ix_webhook_deliveries_order", "endpoint_id", "customer_id", "status", "event_seq"),
        Index("ix_webhook_deliveries_due", "endpoint_id", "status", "event_seq"),
    )
