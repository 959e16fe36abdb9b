"""Dunning's own records: one case per unpaid renewal invoice, and each e-mail step sent for
it. The unique (case, step) pair is what makes every e-mail go at most once."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from billfold.kit.db import Base, UTCDateTime, new_id, utcnow


class CaseOutcome(StrEnum):
    PAID = "paid"
    GAVE_UP = "gave_up"  # Stripe's retries ended: the subscription canceled or unpaid
    CLOSED = "closed"  # the invoice was voided or marked uncollectible


class DunningCase(Base):
    """A renewal invoice Stripe could not collect, from the first failure until it is paid
    or Stripe gives up. What the e-mails and the billing pages' banner say comes from here."""

    __tablename__ = "dunning_cases"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("dun"))
    stripe_invoice_id: Mapped[str] = mapped_column(String(255), unique=True)
    subscription_id: Mapped[str] = mapped_column(ForeignKey("subscriptions.id"), index=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    amount_due: Mapped[int] = mapped_column(BigInteger)  # minor units of `currency`
    currency: Mapped[str] = mapped_column(String(3))
    # Stripe's hosted invoice page: pay with another card, or confirm with the bank there.
    pay_url: Mapped[str | None] = mapped_column(Text)
    needs_action: Mapped[bool] = mapped_column(default=False)
    # Reminders are counted in days from here.
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[CaseOutcome | None] = mapped_column(String(16))


class DunningNotice(Base):
    """One e-mail step of a case: `failed`, `action_required`, `reminder_3d`, `ended`…"""

    __tablename__ = "dunning_notices"
    __table_args__ = (UniqueConstraint("case_id", "step", name="uq_dunning_notices_case_step"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("dnt"))
    case_id: Mapped[str] = mapped_column(ForeignKey("dunning_cases.id"))
    step: Mapped[str] = mapped_column(String(40))
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
