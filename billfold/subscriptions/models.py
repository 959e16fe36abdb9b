"""Tables of plans, each customer's subscription, and the licenses issued for it."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from billfold.kit.db import Base, UTCDateTime, new_id, utcnow


class Plan(Base):
    __tablename__ = "plans"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("plan"))
    code: Mapped[str] = mapped_column(String(50), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    # The price Checkout sells: the catalog's price in STRIPE_CURRENCY (or an admin's choice).
    stripe_price_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    stripe_product_id: Mapped[str | None] = mapped_column(String(255))
    # How many updates of that product the catalog has asked of Stripe: the next one's
    # idempotency key ends with it, so each distinct update applies.
    stripe_product_version: Mapped[int] = mapped_column(default=0, server_default="0")
    interval: Mapped[str] = mapped_column(String(10), default="month")
    trial_days: Mapped[int] = mapped_column(default=0)
    # {"limits": {"projects": 3}, "flags": {"sso": false}}
    features: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PlanPrice(Base):
    """A Stripe price the catalog made for a plan, one per currency at a time. Stripe prices
    never change amount: a new amount is a new row, the old one retired (`active` false) but
    kept, since subscriptions still on it must find their plan."""

    __tablename__ = "plan_prices"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("ppr"))
    plan_id: Mapped[str] = mapped_column(ForeignKey("plans.id"), index=True)
    currency: Mapped[str] = mapped_column(String(3))
    unit_amount: Mapped[int] = mapped_column(BigInteger)  # minor units of `currency`
    interval: Mapped[str] = mapped_column(String(10))
    # None until Stripe made it: the row is written first, so a retry reuses its ID as the
    # idempotency key and never makes a second price.
    stripe_price_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SubscriptionStatus(StrEnum):
    TRIALING = "trialing"
    ACTIVE = "active"
    PAST_DUE = "past_due"
    UNPAID = "unpaid"
    INCOMPLETE = "incomplete"
    INCOMPLETE_EXPIRED = "incomplete_expired"
    CANCELED = "canceled"
    PAUSED = "paused"


class Subscription(Base):
    """One per customer: the free trial first, then the Stripe subscription it became."""

    __tablename__ = "subscriptions"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("subs"))
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), unique=True)
    plan_id: Mapped[str] = mapped_column(ForeignKey("plans.id"))
    status: Mapped[SubscriptionStatus] = mapped_column(String(24))
    stripe_subscription_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    trial_ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    current_period_ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancel_at_period_end: Mapped[bool] = mapped_column(default=False)
    canceled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Collection paused (Stripe's `pause_collection`): what happens to invoices meanwhile
    # (`void`, `keep_as_draft`, `mark_uncollectible`) and when it resumes by itself.
    pause_behavior: Mapped[str | None] = mapped_column(String(24))
    pause_resumes_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The discount in force, as Stripe last said (coupon, percent or amount off, duration,
    # promotion code); None without one.
    discount: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Creation time of the newest Stripe event applied: an older one never wins.
    stripe_event_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    plan: Mapped[Plan] = relationship(lazy="joined", innerjoin=True)
    # The plan change set for the period end, once Stripe holds its schedule.
    pending_change: Mapped[ScheduledPlanChange | None] = relationship(
        primaryjoin="and_(Subscription.id == foreign(ScheduledPlanChange.subscription_id), "
        "ScheduledPlanChange.status == 'pending', "
        "ScheduledPlanChange.stripe_schedule_id.is_not(None))",
        viewonly=True,
        uselist=False,
        lazy="selectin",
    )


class SubscriptionRequest(Base):
    """One thing we asked Stripe to do to a customer's subscription (cancel, resume, pause,
    a new price, a Checkout Session, a new default card), written before the call. Its ID
    ends the call's idempotency key, so a later request (pause, resume, pause again) is a
    new call; Stripe's answer is replayed only when the same request is sent again with this
    ID (the SDK's retries inside one call, a job that keeps it in its payload)."""

    __tablename__ = "subscription_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    # None for a Checkout Session asked before the customer had any subscription.
    subscription_id: Mapped[str | None] = mapped_column(ForeignKey("subscriptions.id"))
    action: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class License(Base):
    """A signed license token, issued on sign-up and on every subscription change."""

    __tablename__ = "licenses"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("lic"))
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    plan_code: Mapped[str] = mapped_column(String(50))
    status: Mapped[str] = mapped_column(String(24))
    key_id: Mapped[str] = mapped_column(String(40))
    token: Mapped[str] = mapped_column(Text)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Invoice(Base):
    """A Stripe invoice of one of our customers, as Stripe last told us (`invoice.*`)."""

    __tablename__ = "invoices"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("inv"))
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    subscription_id: Mapped[str | None] = mapped_column(ForeignKey("subscriptions.id"))
    stripe_invoice_id: Mapped[str] = mapped_column(String(255), unique=True)
    number: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(24))
    currency: Mapped[str] = mapped_column(String(3))
    # Minor units of `currency`.
    total: Mapped[int] = mapped_column(BigInteger, default=0)
    amount_due: Mapped[int] = mapped_column(BigInteger, default=0)
    amount_paid: Mapped[int] = mapped_column(BigInteger, default=0)
    discount_amount: Mapped[int] = mapped_column(BigInteger, default=0)
    billing_reason: Mapped[str | None] = mapped_column(String(40))
    period_start: Mapped[datetime | None] = mapped_column(UTCDateTime)
    period_end: Mapped[datetime | None] = mapped_column(UTCDateTime)
    hosted_invoice_url: Mapped[str | None] = mapped_column(Text)
    invoice_pdf: Mapped[str | None] = mapped_column(Text)
    stripe_created_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Creation time of the newest Stripe event applied: an older one never wins.
    stripe_event_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class PlanChangeStatus(StrEnum):
    PENDING = "pending"  # waiting for the period end
    APPLIED = "applied"  # the period rolled over onto the new plan
    CANCELED = "canceled"  # the customer (or someone in Stripe) dropped it


class ScheduledPlanChange(Base):
    """A plan change set for the period's end, carried out by a Stripe subscription schedule
    (its current phase to the period end, then the new price). At most one pending per
    subscription; its ID makes the Stripe calls' idempotency keys."""

    __tablename__ = "scheduled_plan_changes"
    __table_args__ = (
        Index(
            "uq_scheduled_plan_changes_one_pending",
            "subscription_id",
            unique=True,
            sqlite_where=text("status = 'pending'"),
            postgresql_where=text("status = 'pending'"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("spc"))
    subscription_id: Mapped[str] = mapped_column(ForeignKey("subscriptions.id"), index=True)
    from_plan_id: Mapped[str] = mapped_column(ForeignKey("plans.id"))
    to_plan_id: Mapped[str] = mapped_column(ForeignKey("plans.id"))
    # None until Stripe made the schedule: the row is written first, so its ID keys the
    # calls and a retry after a crash finishes the same schedule instead of making another.
    stripe_schedule_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    # The current period's end (a trial's end on a trial): when the new plan starts.
    effective_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[PlanChangeStatus] = mapped_column(String(16), default=PlanChangeStatus.PENDING)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    applied_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    canceled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When we released the schedule in Stripe once the change was applied (its job is done;
    # a subscription under a schedule refuses cancel-at-period-end).
    schedule_released_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    to_plan: Mapped[Plan] = relationship(lazy="joined", innerjoin=True, foreign_keys=[to_plan_id])
