"""Enqueue, claim and settle durable jobs; safe with any number of workers."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Row, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from billfold.jobs import wakeup
from billfold.jobs.models import Job, JobStatus
from billfold.kit.db import new_id, utcnow

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
    wakeup.note_enqueued(session)
    return job


def enqueue_many(session: Session, kind: str, payloads: Sequence[dict[str, Any]]) -> list[str]:
    """A job of `kind` for each payload, in one statement in the caller's transaction (they
    run only if it commits); their IDs."""
    if not payloads:
        return []
    now = utcnow()
    rows = [
        {
            "id": new_id("job"),
            "kind": kind,
            "payload": payload,
            "status": JobStatus.PENDING,
            "attempts": 0,
            "max_attempts": DEFAULT_MAX_ATTEMPTS,
            "run_at": now,
            "created_at": now,
        }
        for payload in payloads
    ]
    session.execute(insert(Job), rows)
    wakeup.note_enqueued(session)
    return [str(row["id"]) for row in rows]


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
    jobs = claim_batch(session, worker, lease, 1)
    return jobs[0] if jobs else None


def claim_batch(session: Session, worker: str, lease: timedelta, limit: int) -> list[ClaimedJob]:
    """Take up to `limit` jobs for `lease`: first any whose worker's lease ran out, then the
    oldest due ones; oldest first. They share one lease token."""
    now = utcnow()
    token = f"{worker}:{random.getrandbits(48):012x}"
    claim_values = {
        "status": JobStatus.RUNNING,
        "attempts": Job.attempts + 1,
        "locked_by": token,
        "locked_until": now + lease,
    }
    # Two statements, each an ordered walk of the (status, run_at) index from its start; one
    # with an OR of both conditions would sort every due job on each claim.
    rows = _take(
        session, (Job.status == JobStatus.RUNNING) & (Job.locked_until < now), limit, claim_values
    )
    if len(rows) < limit:
        rows += _take(
            session,
            (Job.status == JobStatus.PENDING) & (Job.run_at <= now),
            limit - len(rows),
            claim_values,
        )
    rows.sort(key=lambda row: (row.run_at, row.id))
    return [
        ClaimedJob(row.id, row.kind, row.payload, row.attempts, row.max_attempts, token)
        for row in rows
    ]


def _take(
    session: Session, due: ColumnElement[bool], limit: int, claim_values: dict[str, Any]
) -> list[Row[Any]]:
    chosen = (
        select(Job.id)
        .where(due)
        .order_by(Job.run_at)
        .limit(limit)
        # PostgreSQL: concurrent workers skip each other's rows; SQLite serialises writers.
        .with_for_update(skip_locked=True)
    )
    return list(
        session.execute(
            update(Job)
            .where(Job.id.in_(chosen))
            .values(claim_values)
            .returning(Job.id, Job.kind, Job.payload, Job.attempts, Job.max_attempts, Job.run_at),
            execution_options={"synchronize_session": False},
        )
    )


def complete(session: Session, job: ClaimedJob) -> bool:
    """Mark done; False if the lease was lost and another worker took the job over."""
    result = session.execute(
        update(Job)
        .where(Job.id == job.id, Job.locked_by == job.token)
        .values(status=JobStatus.DONE, finished_at=utcnow(), locked_until=None, last_error=None)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def complete_batch(session: Session, jobs: Sequence[ClaimedJob]) -> set[str]:
    """Mark these done in one statement per lease token; answers the IDs settled (the
    others' leases were lost and another worker took them over)."""
    settled: set[str] = set()
    for token in {job.token for job in jobs}:
        ids = [job.id for job in jobs if job.token == token]
        settled.update(
            session.scalars(
                update(Job)
                .where(Job.id.in_(ids), Job.locked_by == token)
                .values(
                    status=JobStatus.DONE, finished_at=utcnow(), locked_until=None, last_error=None
                )
                .returning(Job.id),
                execution_options={"synchronize_session": False},
            )
        )
    return settled


def release(session: Session, jobs: Sequence[ClaimedJob]) -> None:
    """Hand back claimed jobs that never started (the batch ran long): due again at once,
    and the claim does not count against their attempts."""
    for token in {job.token for job in jobs}:
        ids = [job.id for job in jobs if job.token == token]
        session.execute(
            update(Job)
            .where(Job.id.in_(ids), Job.locked_by == token)
            .values(status=JobStatus.PENDING, attempts=Job.attempts - 1, locked_until=None),
            execution_options={"synchronize_session": False},
        )
    wakeup.note_enqueued(session)


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
    """Equal-jitter exponential backoff: a random delay between half and all of
    base·2^(attempts-1), capped (never a retry at once, yet retries spread out)."""
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
    if result.rowcount:  # type: ignore[attr-defined]
        wakeup.note_enqueued(session)
    return bool(result.rowcount)  # type: ignore[attr-defined]
