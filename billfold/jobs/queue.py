"""Enqueue, claim and settle durable jobs; safe with any number of workers."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from billfold.jobs.models import Job, JobStatus
from billfold.kit.db import utcnow

DEFAULT_MAX_ATTEMPTS = 12


def enqueue(
    session: Session,
    kind: str,
    payload: dict[str, Any],
    *,
    run_at: datetime | None = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> Job:
    """Add a job to the caller's transaction: it runs only if that transaction commits."""
    job = Job(kind=kind, payload=payload, run_at=run_at or utcnow(), max_attempts=max_attempts)
    session.add(job)
    return job


def recurring_job_id(kind: str) -> str:
    """The one row a recurring job kind lives in (so any number of workers share it)."""
    return f"job_every_{kind}"[:40]


def ensure_recurring(session: Session, kind: str) -> None:
    """Make sure the recurring job of `kind` exists and will run (due now if it is new or
    had died); every worker calls this at start, and only one row ever exists."""
    job_id = recurring_job_id(kind)
    revived = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_([JobStatus.DEAD, JobStatus.DONE]))
        .values(status=JobStatus.PENDING, run_at=utcnow(), attempts=0, finished_at=None)
    )
    if revived.rowcount or session.get(Job, job_id) is not None:  # type: ignore[attr-defined]
        return
    try:
        with session.begin_nested():
            session.add(Job(id=job_id, kind=kind, payload={}, max_attempts=DEFAULT_MAX_ATTEMPTS))
    except IntegrityError:
        pass  # another worker made it first


def reschedule(session: Session, job: ClaimedJob, run_at: datetime) -> bool:
    """A recurring job's run is over: the same row runs again at `run_at`."""
    result = session.execute(
        update(Job)
        .where(Job.id == job.id, Job.locked_by == job.token)
        .values(
            status=JobStatus.PENDING,
            run_at=run_at,
            attempts=0,
            locked_until=None,
            last_error=None,
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class ClaimedJob:
    id: str
    kind: str
    payload: dict[str, Any]
    attempts: int
    max_attempts: int
    token: str


def claim(session: Session, worker: str, lease: timedelta) -> ClaimedJob | None:
    """Take the oldest due job (or one whose worker's lease ran out) for `lease`."""
    now = utcnow()
    due = (
        select(Job.id)
        .where(
            or_(
                (Job.status == JobStatus.PENDING) & (Job.run_at <= now),
                (Job.status == JobStatus.RUNNING) & (Job.locked_until < now),
            )
        )
        .order_by(Job.run_at)
        .limit(1)
        # PostgreSQL: concurrent workers skip each other's rows; SQLite serialises writers.
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    token = f"{worker}:{random.getrandbits(48):012x}"
    row = session.execute(
        update(Job)
        .where(Job.id == due)
        .values(
            status=JobStatus.RUNNING,
            attempts=Job.attempts + 1,
            locked_by=token,
            locked_until=now + lease,
        )
        .returning(Job.id, Job.kind, Job.payload, Job.attempts, Job.max_attempts)
    ).one_or_none()
    if row is None:
        return None
    return ClaimedJob(row.id, row.kind, row.payload, row.attempts, row.max_attempts, token)


def complete(session: Session, job: ClaimedJob) -> bool:
    """Mark done; False if the lease was lost and another worker took the job over."""
    result = session.execute(
        update(Job)
        .where(Job.id == job.id, Job.locked_by == job.token)
        .values(status=JobStatus.DONE, finished_at=utcnow(), locked_until=None, last_error=None)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def fail(
    session: Session,
    job: ClaimedJob,
    error: str,
    *,
    permanent: bool,
    backoff_base: float,
    backoff_max: float,
) -> JobStatus | None:
    """Schedule a retry with exponential backoff and jitter, or mark the job dead; None when
    the lease was lost (another worker owns the job now, so this try's outcome is moot)."""
    dead = permanent or job.attempts >= job.max_attempts
    status = JobStatus.DEAD if dead else JobStatus.PENDING
    values: dict[str, Any] = {"status": status, "last_error": error[:4000], "locked_until": None}
    if dead:
        values["finished_at"] = utcnow()
    else:
        values["run_at"] = utcnow() + backoff_delay(job.attempts, backoff_base, backoff_max)
    result = session.execute(
        update(Job).where(Job.id == job.id, Job.locked_by == job.token).values(values)
    )
    return status if result.rowcount else None  # type: ignore[attr-defined]


def defer(session: Session, job: ClaimedJob, until: datetime, reason: str) -> None:
    """Put a job back until `until`; the try does not count against its attempts."""
    session.execute(
        update(Job)
        .where(Job.id == job.id, Job.locked_by == job.token)
        .values(
            status=JobStatus.PENDING,
            run_at=until,
            attempts=Job.attempts - 1,
            locked_until=None,
            last_error=reason[:4000],
        )
    )


def backoff_delay(attempts: int, base: float, cap: float) -> timedelta:
    """Full-jitter exponential backoff: a random delay up to base·2^(attempts-1), capped."""
    ceiling = min(cap, base * (2 ** max(0, attempts - 1)))
    return timedelta(seconds=random.uniform(ceiling / 2, ceiling))


def depth(session: Session) -> dict[str, int]:
    """How many jobs are in each state, for /metrics and the admin."""
    rows = session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
    return {str(status): int(count) for status, count in rows}


def retry_dead(session: Session, job_id: str) -> bool:
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.DEAD)
        .values(status=JobStatus.PENDING, run_at=utcnow(), attempts=0, finished_at=None)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
