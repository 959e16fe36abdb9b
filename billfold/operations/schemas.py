"""The JSON shapes of the operator's views: dashboard figures, audit entries, jobs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from billfold.jobs.models import JobStatus
from billfold.kit.envelope import ApiModel


class SignupsOut(ApiModel):
    signups: int
    linked: int
    unlinked: int
    link_jobs_dead: int


class PaymentsOut(ApiModel):
    total: int
    by_status: dict[str, int]
    succeeded: int
    declined: int
    requires_action: int
    canceled: int
    three_ds_passed: int
    three_ds_failed: int
    succeeded_amount: dict[str, int]


class RefundsOut(ApiModel):
    count: int
    by_status: dict[str, int]
    succeeded_amount: dict[str, int]


class CreditsOut(ApiModel):
    sold: int
    consumed: int
    granted: int
    refunded: int
    adjusted: int


class WebhooksOut(ApiModel):
    by_status: dict[str, int]
    lag_p50_seconds: float | None
    lag_p99_seconds: float | None


class DueJobOut(ApiModel):
    id: str
    kind: str
    run_at: datetime
    attempts: int
    waiting_seconds: float


class JobsOut(ApiModel):
    by_status: dict[str, int]
    dead_by_kind: dict[str, int]
    oldest_due: DueJobOut | None


class DashboardOut(ApiModel):
    window: str
    since: datetime
    until: datetime
    signups: SignupsOut
    cards_attached: int
    payments: PaymentsOut
    refunds: RefundsOut
    credits: CreditsOut
    recharges_by_status: dict[str, int]
    auto_recharge_disabled: int
    webhooks: WebhooksOut
    jobs: JobsOut


class AuditEntryOut(ApiModel):
    id: str
    actor: str
    action: str
    subject_id: str
    details: dict[str, Any]
    created_at: datetime


class JobOut(ApiModel):
    id: str
    kind: str
    payload: dict[str, Any]
    status: JobStatus
    attempts: int
    max_attempts: int
    run_at: datetime
    last_error: str | None
    created_at: datetime
    finished_at: datetime | None
