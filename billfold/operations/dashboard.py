"""The operator dashboard's figures, counted from the database over a recent window.

Counted from the tables rather than from this process's counters, so they survive
restarts and every process answers the same."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, literal_column, select
from sqlalchemy.orm import Session

from billfold.auth.models import Role, User
from billfold.credits.models import (
    CreditAccount,
    CreditPurchase,
    EntryKind,
    LedgerEntry,
    PurchaseKind,
)
from billfold.customers.models import Customer
from billfold.customers.service import LINK_JOB
from billfold.jobs import admin as jobs_admin
from billfold.jobs import queue
from billfold.jobs.models import Job, JobStatus
from billfold.kit.db import utcnow
from billfold.kit.errors import InvalidInput
from billfold.payments.models import Payment, PaymentStatus, Refund, RefundStatus, SavedCard
from billfold.webhooks.models import StripeEvent

WINDOWS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}


@dataclass(frozen=True)
class SignupFigures:
    signups: int
    linked: int  # of those sign-ups, how many have their Stripe customer
    link_jobs_dead: int  # Stripe-customer creations that gave up

    @property
    def unlinked(self) -> int:
        return self.signups - self.linked


@dataclass(frozen=True)
class PaymentFigures:
    by_status: dict[str, int]
    succeeded: int
    declined: int
    requires_action: int
    canceled: int
    three_ds_passed: int
    three_ds_failed: int
    succeeded_amount: dict[str, int]  # minor units per currency

    @property
    def total(self) -> int:
        return sum(self.by_status.values())


@dataclass(frozen=True)
class RefundFigures:
    by_status: dict[str, int]
    succeeded_amount: dict[str, int]  # minor units per currency

    @property
    def count(self) -> int:
        return sum(self.by_status.values())


@dataclass(frozen=True)
class CreditFigures:
    sold: int
    consumed: int
    granted: int
    refunded: int  # taken back by refunds of purchases
    adjusted: int  # signed


@dataclass(frozen=True)
class WebhookFigures:
    by_status: dict[str, int]
    lag_p50_seconds: float | None
    lag_p99_seconds: float | None


@dataclass(frozen=True)
class JobFigures:
    by_status: dict[str, int]  # now, not over the window
    dead_by_kind: dict[str, int]
    oldest_due: jobs_admin.DueJob | None


@dataclass(frozen=True)
class Dashboard:
    window: str
    since: datetime
    until: datetime
    signups: SignupFigures
    cards_attached: int
    payments: PaymentFigures
    refunds: RefundFigures
    credits: CreditFigures
    recharges_by_status: dict[str, int]
    auto_recharge_disabled: int
    webhooks: WebhookFigures
    jobs: JobFigures


def window_length(window: str) -> timedelta:
    try:
        return WINDOWS[window]
    except KeyError:
        raise InvalidInput(
            f"window must be one of {', '.join(WINDOWS)}", code="invalid_window"
        ) from None


def figures(session: Session, window: str = "24h", *, now: datetime | None = None) -> Dashboard:
    until = now or utcnow()
    since = until - window_length(window)
    return Dashboard(
        window=window,
        since=since,
        until=until,
        signups=_signups(session, since, until),
        cards_attached=_count(session, SavedCard.attached_at, since, until),
        payments=_payments(session, since, until),
        refunds=_refunds(session, since, until),
        credits=_credits(session, since, until),
        recharges_by_status=_grouped(
            session,
            CreditPurchase.status,
            CreditPurchase.created_at,
            since,
            until,
            CreditPurchase.kind == PurchaseKind.RECHARGE,
        ),
        auto_recharge_disabled=_count(
            session, CreditAccount.auto_recharge_disabled_at, since, until
        ),
        webhooks=_webhooks(session, since, until),
        jobs=_jobs(session, until),
    )


def _between(column: Any, since: datetime, until: datetime) -> ColumnElement[bool]:
    return and_(column >= since, column < until)


def _count(session: Session, column: Any, since: datetime, until: datetime, *where: Any) -> int:
    return int(
        session.scalar(select(func.count()).where(_between(column, since, until), *where)) or 0
    )


def _grouped(
    session: Session, key: Any, column: Any, since: datetime, until: datetime, *where: Any
) -> dict[str, int]:
    rows = session.execute(
        select(key, func.count()).where(_between(column, since, until), *where).group_by(key)
    ).all()
    return {str(k): int(n) for k, n in rows}


def _signups(session: Session, since: datetime, until: datetime) -> SignupFigures:
    row = session.execute(
        select(func.count(), func.count(Customer.stripe_customer_id))
        .join(Customer.user)
        .where(_between(Customer.created_at, since, until), User.role == Role.USER)
    ).one()
    return SignupFigures(
        signups=int(row[0]),
        linked=int(row[1]),
        link_jobs_dead=_count(
            session,
            Job.created_at,
            since,
            until,
            Job.kind == LINK_JOB,
            Job.status == JobStatus.DEAD,
        ),
    )


def _payments(session: Session, since: datetime, until: datetime) -> PaymentFigures:
    in_window = _between(Payment.created_at, since, until)
    by_status = _grouped(session, Payment.status, Payment.created_at, since, until)
    declined = and_(
        Payment.status == PaymentStatus.REQUIRES_PAYMENT_METHOD, Payment.decline_code.is_not(None)
    )
    failed_after_action = and_(
        Payment.required_action.is_(True),
        Payment.status.in_([PaymentStatus.REQUIRES_PAYMENT_METHOD, PaymentStatus.CANCELED]),
    )
    passed_action = and_(
        Payment.required_action.is_(True), Payment.status == PaymentStatus.SUCCEEDED
    )
    row = session.execute(
        select(
            func.count(case((declined, 1))),
            func.count(case((passed_action, 1))),
            func.count(case((failed_after_action, 1))),
        ).where(in_window)
    ).one()
    amounts = session.execute(
        select(Payment.currency, func.sum(Payment.amount))
        .where(in_window, Payment.status == PaymentStatus.SUCCEEDED)
        .group_by(Payment.currency)
    ).all()
    return PaymentFigures(
        by_status=by_status,
        succeeded=by_status.get(PaymentStatus.SUCCEEDED, 0),
        declined=int(row[0]),
        requires_action=by_status.get(PaymentStatus.REQUIRES_ACTION, 0),
        canceled=by_status.get(PaymentStatus.CANCELED, 0),
        three_ds_passed=int(row[1]),
        three_ds_failed=int(row[2]),
        succeeded_amount={str(c): int(a) for c, a in amounts},
    )


def _refunds(session: Session, since: datetime, until: datetime) -> RefundFigures:
    amounts = session.execute(
        select(Payment.currency, func.sum(Refund.amount))
        .join(Refund.payment)
        .where(_between(Refund.created_at, since, until), Refund.status == RefundStatus.SUCCEEDED)
        .group_by(Payment.currency)
    ).all()
    return RefundFigures(
        by_status=_grouped(session, Refund.status, Refund.created_at, since, until),
        succeeded_amount={str(c): int(a) for c, a in amounts},
    )


def _credits(session: Session, since: datetime, until: datetime) -> CreditFigures:
    sums = dict(
        session.execute(
            select(LedgerEntry.kind, func.sum(LedgerEntry.amount))
            .where(_between(LedgerEntry.created_at, since, until))
            .group_by(LedgerEntry.kind)
        ).all()
    )

    def total(kind: EntryKind) -> int:
        return int(sums.get(kind, 0) or 0)

    return CreditFigures(
        sold=total(EntryKind.PURCHASE),
        consumed=-total(EntryKind.CONSUME),
        granted=total(EntryKind.GRANT),
        refunded=-total(EntryKind.REFUND),
        adjusted=total(EntryKind.ADJUSTMENT),
    )


def _webhooks(session: Session, since: datetime, until: datetime) -> WebhookFigures:
    by_status = _grouped(session, StripeEvent.status, StripeEvent.received_at, since, until)
    handled = (
        StripeEvent.processed_at.is_not(None),
        _between(StripeEvent.processed_at, since, until),
    )
    n = int(session.scalar(select(func.count()).where(*handled)) or 0)
    lag = _lag_seconds(session.get_bind().dialect.name)

    def percentile(p: float) -> float | None:
        # Nearest rank: the smallest lag with at least p of all lags at or below it.
        if n == 0:
            return None
        rank = max(math.ceil(p * n), 1)
        value = session.scalar(select(lag).where(*handled).order_by(lag).offset(rank - 1).limit(1))
        return max(float(value), 0.0) if value is not None else None

    return WebhookFigures(
        by_status=by_status, lag_p50_seconds=percentile(0.50), lag_p99_seconds=percentile(0.99)
    )


def _lag_seconds(dialect: str) -> Any:
    """Seconds from the event's creation at Stripe to the end of our processing."""
    if dialect == "postgresql":
        return literal_column(
            "EXTRACT(EPOCH FROM (stripe_events.processed_at - stripe_events.stripe_created_at))"
        )
    return literal_column(
        "(julianday(stripe_events.processed_at) - julianday(stripe_events.stripe_created_at))"
        " * 86400.0"
    )


def _jobs(session: Session, now: datetime) -> JobFigures:
    dead = session.execute(
        select(Job.kind, func.count()).where(Job.status == JobStatus.DEAD).group_by(Job.kind)
    ).all()
    return JobFigures(
        by_status=queue.depth(session),
        dead_by_kind={str(k): int(n) for k, n in dead},
        oldest_due=jobs_admin.oldest_due(session, now=now),
    )
