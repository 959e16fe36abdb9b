"""What an operator does with jobs: list them, and give dead ones another run."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from billfold.jobs import queue
from billfold.jobs.models import Job, JobStatus
from billfold.kit import audit
from billfold.kit.db import utcnow
from billfold.kit.errors import Conflict, NotFound
from billfold.kit.paging import Page, fetch_page


class JobNotDead(Conflict):
    code = "job_not_dead"


@dataclass(frozen=True)
class JobFilter:
    status: JobStatus | None = None
    kind: str | None = None


def list_jobs(session: Session, where: JobFilter, *, limit: int, offset: int) -> Page[Job]:
    """Newest first by when they (last) ran or will run."""
    query = select(Job).order_by(Job.run_at.desc(), Job.id.desc())
    if where.status is not None:
        query = query.where(Job.status == where.status)
    if where.kind is not None:
        query = query.where(Job.kind == where.kind)
    return fetch_page(session, query, limit=limit, offset=offset)


def retry(session: Session, job_id: str, *, actor: str) -> Job:
    """Run a dead job again from its first try (its handler is idempotent); audited."""
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound("No such job")
    if not queue.retry_dead(session, job_id):
        raise JobNotDead(f"Only a dead job can be retried; this one is {job.status}")
    session.refresh(job)
    audit.record(session, actor, "job.retry", job.id, kind=job.kind)
    return job


def retry_all_dead(session: Session, *, actor: str, kind: str | None = None) -> list[str]:
    """Retry every dead job (of one kind); answers their IDs."""
    query = select(Job.id, Job.kind).where(Job.status == JobStatus.DEAD).order_by(Job.finished_at)
    if kind is not None:
        query = query.where(Job.kind == kind)
    retried = []
    for job_id, job_kind in session.execute(query).all():
        if queue.retry_dead(session, job_id):
            audit.record(session, actor, "job.retry", job_id, kind=job_kind)
            retried.append(job_id)
    return retried


@dataclass(frozen=True)
class DueJob:
    id: str
    kind: str
    run_at: datetime
    attempts: int
    waiting_seconds: float


def oldest_due(session: Session, *, now: datetime | None = None) -> DueJob | None:
    """The pending job that has waited longest past its due time (none when all are future)."""
    now = now or utcnow()
    job = session.scalar(
        select(Job)
        .where(Job.status == JobStatus.PENDING, Job.run_at <= now)
        .order_by(Job.run_at, Job.id)
        .limit(1)
    )
    if job is None:
        return None
    waiting = max((now - job.run_at).total_seconds(), 0.0)
    return DueJob(job.id, job.kind, job.run_at, job.attempts, waiting)
