"""`reconcile`: which records to compare, the comparison, and the repairs.

A repair goes through the code a webhook (or the job) would have run, then the record is
compared again: a difference counts as fixed only when Stripe and we now agree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog
from sqlalchemy import select

from billfold.customers.models import Customer
from billfold.kit import audit
from billfold.kit.db import utcnow
from billfold.payments.models import Payment
from billfold.reconcile.checks import check
from billfold.reconcile.drift import Drift, Subject
from billfold.services import Services
from billfold.stripe_gateway import StripeFailure
from billfold.subscriptions.models import Subscription

log = structlog.get_logger("billfold.reconcile")

Progress = Callable[[int, int], None]  # (records done, records in all)


@dataclass
class Report:
    checked: int = 0
    drift: list[Drift] = field(default_factory=list)

    @property
    def remaining(self) -> list[Drift]:
        return [d for d in self.drift if d.remains]

    @property
    def fixed(self) -> list[Drift]:
        return [d for d in self.drift if not d.remains]


def subjects(
    services: Services, *, since: datetime | None = None, quiet_seconds: float = 60.0
) -> list[Subject]:
    """What to compare: live customers, payments and Stripe subscriptions, created (customers)
    or changed (payments, subscriptions) since `since`, leaving out those changed in the
    last `quiet_seconds` (their own webhooks and jobs are most likely still on the way)."""
    settled = utcnow() - timedelta(seconds=quiet_seconds)
    with services.db.transaction() as session:
        customers = select(Customer.id).where(
            Customer.deleted_at.is_(None), Customer.created_at <= settled
        )
        payments = select(Payment.id).where(Payment.updated_at <= settled)
        tracked = select(Subscription.id).where(
            Subscription.stripe_subscription_id.is_not(None), Subscription.updated_at <= settled
        )
        if since is not None:
            customers = customers.where(Customer.created_at >= since)
            payments = payments.where(Payment.updated_at >= since)
            tracked = tracked.where(Subscription.updated_at >= since)
        return [
            *(Subject("customer", i) for i in session.scalars(customers.order_by(Customer.id))),
            *(Subject("payment", i) for i in session.scalars(payments.order_by(Payment.id))),
            *(
                Subject("subscription", i)
                for i in session.scalars(tracked.order_by(Subscription.id))
            ),
        ]


def reconcile(
    services: Services,
    *,
    since: datetime | None = None,
    fix: bool = False,
    quiet_seconds: float = 60.0,
    progress: Progress | None = None,
) -> Report:
    """Compare every chosen record with Stripe; with `fix`, repair what has a safe repair."""
    chosen = subjects(services, since=since, quiet_seconds=quiet_seconds)
    report = Report()
    for done, subject in enumerate(chosen, start=1):
        found = _check(services, subject)
        if fix and any(d.repair for d in found):
            _repair(services, subject, found)
        report.drift += found
        report.checked += 1
        if progress is not None:
            progress(done, len(chosen))
    log.info(
        "reconcile.done",
        checked=report.checked,
        drift=len(report.drift),
        fixed=len(report.fixed),
    )
    return report


def _check(services: Services, subject: Subject) -> list[Drift]:
    try:
        return check(services, subject)
    except StripeFailure as exc:
        detail = f"could not compare: {exc.message} ({exc.code})"
        return [Drift(subject, subject.kind, subject.id, None, "not_checked", detail)]


def _repair(services: Services, subject: Subject, found: list[Drift]) -> None:
    for drift in found:
        if drift.repair is None:
            continue
        try:
            why_not = drift.repair.apply(services)
        except StripeFailure as exc:
            why_not = f"{exc.message} ({exc.code})"
        with services.db.transaction() as session:
            audit.record(
                session,
                "reconcile",
                "reconcile.repair",
                drift.ours,
                kind=drift.kind,
                problem=drift.problem,
                stripe_id=drift.stripe_id,
                repair=drift.repair.describe,
                refused=why_not,
            )
        if why_not:
            drift.outcome = f"not fixed: {why_not}"
    still = {d.key: d for d in _check(services, subject)}
    for drift in found:
        if drift.repair is None or drift.outcome is not None:
            continue
        left = still.get(drift.key)
        drift.outcome = "fixed" if left is None else f"still differs: {left.detail}"
