"""The job worker: claims due jobs, runs their handlers, retries with backoff, buries the dead."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

import structlog
from sqlalchemy.orm import Session

from billfold.jobs import queue
from billfold.jobs.models import JobStatus
from billfold.kit.db import Database, utcnow
from billfold.kit.observability import JOB_RESULTS

log = structlog.get_logger("billfold.jobs")

C = TypeVar("C")


class PermanentJobError(Exception):
    """Retrying cannot help (bad payload, a refusal that will not change): the job dies now."""


class Defer(Exception):
    """Not yet: run the job again at `until`, without counting this as a failed try."""

    def __init__(self, until: datetime, reason: str) -> None:
        super().__init__(reason)
        self.until = until


@dataclass(frozen=True)
class JobKind(Generic[C]):
    """A handler for one kind of job: it must be safe to run twice."""

    handler: Callable[[C, dict[str, Any]], None]
    # Called in its own transaction after a failed try, e.g. to record the error on a record.
    on_failure: Callable[[C, Session, dict[str, Any], str, bool], None] | None = None
    # A recurring job: one row, run again this many seconds (from the context's settings)
    # after each run; every worker makes sure it exists when it starts.
    every: Callable[[C], float] | None = None


@dataclass(frozen=True)
class WorkerSettings:
    lease: timedelta
    backoff_base: float
    backoff_max: float
    poll_seconds: float


class Worker(Generic[C]):
    def __init__(
        self,
        db: Database,
        kinds: Mapping[str, JobKind[C]],
        context: C,
        settings: WorkerSettings,
        name: str | None = None,
    ) -> None:
        self._db = db
        self._kinds = kinds
        self._context = context
        self._settings = settings
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"

    def run_once(self) -> bool:
        """Run one due job; False when none is due."""
        with self._db.transaction() as session:
            job = queue.claim(session, self.name, self._settings.lease)
        if job is None:
            return False
        kind = self._kinds.get(job.kind)
        bound = log.bind(job_id=job.id, job_kind=job.kind, attempt=job.attempts)
        try:
            if kind is None:
                raise PermanentJobError(f"no handler for job kind {job.kind!r}")
            kind.handler(self._context, job.payload)
        except Defer as exc:
            with self._db.transaction() as session:
                queue.defer(session, job, exc.until, str(exc))
            bound.info("job.deferred", until=exc.until.isoformat(), reason=str(exc))
            return True
        except Exception as exc:
            self._settle_failure(job, kind, exc, bound)
            return True
        with self._db.transaction() as session:
            if kind.every is not None:
                again = utcnow() + timedelta(seconds=kind.every(self._context))
                settled = queue.reschedule(session, job, again)
            else:
                settled = queue.complete(session, job)
            if not settled:
                bound.warning("job.lease_lost")
        JOB_RESULTS.labels(kind=job.kind, result="done").inc()
        bound.info("job.done")
        return True

    def _settle_failure(
        self,
        job: queue.ClaimedJob,
        kind: JobKind[C] | None,
        exc: Exception,
        bound: Any,
    ) -> None:
        error = f"{type(exc).__name__}: {exc}"
        permanent = isinstance(exc, PermanentJobError)
        with self._db.transaction() as session:
            status = queue.fail(
                session,
                job,
                error,
                permanent=permanent,
                backoff_base=self._settings.backoff_base,
                backoff_max=self._settings.backoff_max,
            )
            if status is None:
                bound.warning("job.lease_lost", error=error)
                return
            if kind is not None and kind.on_failure is not None:
                kind.on_failure(
                    self._context, session, job.payload, error, status == JobStatus.DEAD
                )
        JOB_RESULTS.labels(kind=job.kind, result=str(status)).inc()
        bound.warning("job.failed", error=error, status=str(status))

    def run_until_idle(self, max_jobs: int = 10_000) -> int:
        """Run due jobs until none is left (or `max_jobs`); answers how many ran."""
        ran = 0
        while ran < max_jobs and self.run_once():
            ran += 1
        return ran

    def schedule_recurring(self) -> None:
        """Make sure every recurring job kind has its row (idempotent, any number of workers)."""
        with self._db.transaction() as session:
            for name, kind in self._kinds.items():
                if kind.every is not None:
                    queue.ensure_recurring(session, name)

    def run_forever(self, stop: threading.Event) -> None:
        try:
            self.schedule_recurring()
        except Exception:  # the database may be briefly away: the next start schedules them
            log.exception("worker.schedule_recurring_failed")
        while not stop.is_set():
            try:
                busy = self.run_once()
            except Exception:  # the database may be briefly away: keep the worker alive
                log.exception("worker.loop_error")
                busy = False
            if not busy:
                stop.wait(self._settings.poll_seconds)

    def start_in_thread(self, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(
            target=self.run_forever, args=(stop,), name=f"worker-{self.name}", daemon=True
        )
        thread.start()
        return thread
