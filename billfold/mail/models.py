"""The mail outbox table: each e-mail stored once, by its dedupe key, until it is sent."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from billfold.kit.db import Base, UTCDateTime, new_id, utcnow


class MailStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


class OutboxMail(Base):
    __tablename__ = "mail_outbox"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("mail"))
    # What makes two e-mails the same one, e.g. "receipt:pay_…": queued at most once.
    dedupe_key: Mapped[str] = mapped_column(String(255), unique=True)
    to_address: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(String(998))
    body_text: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(50))
    status: Mapped[MailStatus] = mapped_column(String(16), default=MailStatus.PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Chosen before the first try and kept, so a retry sends the same Message-ID.
    message_id: Mapped[str | None] = mapped_column(String(255))

    __table_args__ = (Index("ix_mail_outbox_status", "status"),)
