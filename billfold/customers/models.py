"""The customer record: our side of the link between a user and their Stripe customer."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from billfold.auth.models import User
from billfold.kit.db import Base, UTCDateTime, new_id, utcnow


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("cust"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), unique=True)
    stripe_customer_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    # The user's own contact details, mirrored to the Stripe customer (customers/contact.py).
    phone: Mapped[str | None] = mapped_column(String(20))
    # `metadata` is taken by SQLAlchemy's declarative base; the column keeps the plain name.
    metadata_: Mapped[dict[str, str]] = mapped_column(
        "metadata", JSON, default=dict, server_default=text("'{}'")
    )
    # User metadata keys that may be on the Stripe customer: one removed here is sent as ""
    # (Stripe's removal) until a push succeeds without it.
    stripe_metadata_keys: Mapped[list[str]] = mapped_column(
        JSON, default=list, server_default=text("'[]'")
    )

    # Bumped by every local name/e-mail edit; Stripe is in sync when synced == profile.
    profile_version: Mapped[int] = mapped_column(default=1)
    stripe_synced_version: Mapped[int] = mapped_column(default=0)

    # A creation in Stripe is claimed for a lease; the parameters it sent are kept so a retry
    # sends the very same request (same idempotency key) and can find what a lost try made.
    link_claim_token: Mapped[str | None] = mapped_column(String(40))
    link_claim_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    link_name: Mapped[str | None] = mapped_column(String(200))
    link_email: Mapped[str | None] = mapped_column(String(320))
    link_version: Mapped[int | None]
    link_phone: Mapped[str | None] = mapped_column(String(20))
    link_metadata: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))

    stripe_linked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Creation time of the newest Stripe event applied, so an older one never wins.
    stripe_event_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    stripe_removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship(lazy="joined", innerjoin=True)

    __table_args__ = (Index("ix_customers_link_email", "link_email"),)
