"""/metrics: who may read it, and the gauges read from the database at each scrape.

Counters (Stripe calls, payment outcomes…) are per process; the gauges set here come from
the tables, so every process and every restart reports the same."""

from __future__ import annotations

import hmac

from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from billfold.config import Settings
from billfold.credits.models import CreditPurchase, PurchaseKind, PurchaseStatus
from billfold.jobs import admin as jobs_admin
from billfold.jobs import queue
from billfold.jobs.models import Job, JobStatus
from billfold.kit.errors import Forbidden, Unauthorized
from billfold.kit.observability import JOB_QUEUE_DEPTH
from billfold.webhooks.models import EventStatus, StripeEvent

DEAD_JOBS = Gauge("billfold_jobs_dead", "Dead jobs (out of tries) by kind", ["kind"])
OLDEST_DUE_JOB = Gauge(
    "billfold_job_oldest_due_seconds", "How long the oldest due pending job has waited"
)
WEBHOOK_INBOX = Gauge(
    "billfold_webhook_inbox_events", "Stored Stripe events by processing status", ["status"]
)
RECHARGES = Gauge(
    "billfold_credit_recharges", "Auto-recharge purchases ever made, by status", ["status"]
)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class MetricsDisabled(Forbidden):
    code = "metrics_disabled"


class MetricsTokenRequired(Unauthorized):
    code = "metrics_token_required"


def authorize(settings: Settings, authorization: str | None) -> None:
    """METRICS_TOKEN set: the bearer must match it. Unset: open only if METRICS_PUBLIC."""
    if settings.metrics_token is not None:
        expected = f"Bearer {settings.metrics_token.get_secret_value()}".encode()
        if not hmac.compare_digest((authorization or "").encode(), expected):
            raise MetricsTokenRequired("/metrics needs Authorization: Bearer <METRICS_TOKEN>")
        return
    if not settings.metrics_public:
        raise MetricsDisabled(
            "/metrics is off: set METRICS_TOKEN (or METRICS_PUBLIC=true to leave it open)"
        )


def exposition(session: Session) -> bytes:
    """Refresh the database gauges, then render every metric in Prometheus' text format."""
    counts = queue.depth(session)
    for status in JobStatus:
        JOB_QUEUE_DEPTH.labels(status=str(status)).set(counts.get(str(status), 0))
    DEAD_JOBS.clear()
    for kind, n in session.execute(
        select(Job.kind, func.count()).where(Job.status == JobStatus.DEAD).group_by(Job.kind)
    ):
        DEAD_JOBS.labels(kind=kind).set(n)
    due = jobs_admin.oldest_due(session)
    OLDEST_DUE_JOB.set(due.waiting_seconds if due else 0)
    inbox = dict(
        session.execute(select(StripeEvent.status, func.count()).group_by(StripeEvent.status)).all()
    )
    for event_status in EventStatus:
        WEBHOOK_INBOX.labels(status=str(event_status)).set(inbox.get(event_status, 0))
    recharges = dict(
        session.execute(
            select(CreditPurchase.status, func.count())
            .where(CreditPurchase.kind == PurchaseKind.RECHARGE)
            .group_by(CreditPurchase.status)
        ).all()
    )
    for purchase_status in PurchaseStatus:
        RECHARGES.labels(status=str(purchase_status)).set(recharges.get(purchase_status, 0))
    return generate_latest()
