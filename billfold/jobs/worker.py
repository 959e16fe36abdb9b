"""The job worker: claims due jobs, runs their handlers, retries with backoff, buries the dead."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

import structlog
from sqlalchemy.orm import Session

from billfold.jobs import queue, wakeup
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
    # Most jobs one claim takes (fewer when jobs are slow: a batch aims at BATCH_SECONDS).
    batch_size: int = 50
    # Wake idle workers on NOTIFY (PostgreSQL) and on enqueues in this process; else they
    # only poll.
    wakeup: bool = True
    # Where to LISTEN (a direct PostgreSQL connection); None: the worker's own database.
    listen_url: str | None = None


# A claimed batch should take about this long: long enough that claiming and settling are a
# small share of no-op jobs, short enough that slow jobs (Stripe calls) go one at a time and
# another worker is free to take the rest.
BATCH_SECONDS = 0.2


class _Finished:
    """Jobs of the running batch whose handler succeeded and that are not settled yet;
    the batch's thread adds, whoever settles takes (the deadline's timer or the batch)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: list[queue.ClaimedJob] = []

    def add(self, job: queue.ClaimedJob) -> None:
        with self._lock:
            self._jobs.append(job)

    def take(self) -> list[queue.ClaimedJob]:
        with self._lock:
            taken, self._jobs = self._jobs, []
        return taken

    def put_back(self, jobs: list[queue.ClaimedJob]) -> None:
        with self._lock:
            self._jobs[:0] = jobs


class _DeadlineGuard:
    """One thread per worker that runs a batch's `settle` once at its deadline (time.monotonic)
    unless the batch disarms it first. `fired` is set before `settle` runs, so a batch that
    sees it unset may still start a job. The thread lives on between batches (starting one
    per batch cost fast batches a quarter of their speed) and ends after IDLE_SECONDS
    unarmed."""

    IDLE_SECONDS = 30.0

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._deadline: float | None = None
        self._settle: Callable[[], None] | None = None
        self._settling = False
        self._thread: threading.Thread | None = None
        self.fired = False

    def arm(self, deadline: float, settle: Callable[[], None]) -> None:
        with self._cond:
            self._deadline, self._settle, self.fired = deadline, settle, False
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._watch, name="job-batch-deadline", daemon=True
                )
                self._thread.start()
            else:
                self._cond.notify()

    def disarm(self) -> None:
        """No settling after this returns (one under way is waited for)."""
        with self._cond:
            self._deadline = self._settle = None
            while self._settling:
                self._cond.wait()

    def _watch(self) -> None:
        with self._cond:
            while True:
                if self._deadline is None:
                    if not self._cond.wait(self.IDLE_SECONDS) and self._deadline is None:
                        self._thread = None
                        return
                    continue
                left = self._deadline - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                settle, self._deadline, self._settle = self._settle, None, None
                self.fired, self._settling = True, True
                self._cond.release()
                try:
                    if settle is not None:
                        settle()
                except Exception:  # the database may be away: the batch settles them at its end
                    log.exception("jobs.deadline_settle_failed")
                finally:
                    self._cond.acquire()
                    self._settling = False
                    self._cond.notify_all()


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
        self._batch = 1  # grows while jobs prove fast
        self._guard = _DeadlineGuard()
        self.wakeup = wakeup.wakeup_for(db.url)

    def run_once(self) -> bool:
        """Run one due job; False when none is due."""
        return self.run_batch(1) == 1

    def run_batch(self, limit: int | None = None) -> int:
        """Claim several due jobs at once (`limit`, else as many as recent jobs' speed
        allows), run them in order, and mark the finished ones done together; answers how
        many ran. Jobs the batch has not reached after a second are handed back."""
        size = max(1, min(limit or self._batch, self._settings.batch_size))
        started = time.monotonic()
        with self._queue_turn(), self._db.transaction() as session:
            jobs = queue.claim_batch(session, self.name, self._settings.lease, size)
        if not jobs:
            return 0
        # Slower than expected: the rest go back for idle workers (and the lease is safe).
        deadline = started + min(self._settings.lease.total_seconds() / 2, 5 * BATCH_SECONDS)
        finished = _Finished()
        # The job running at the deadline may overrun the batch's lease; the jobs finished
        # before it must not be claimed and run again then, so the guard settles them at the
        # deadline while it runs. A fast batch is settled once, at its end, as before.
        if len(jobs) > 1:
            self._guard.arm(deadline, lambda: self._settle_finished(finished))
        ran = 0
        try:
            for index, job in enumerate(jobs):
                if index and (time.monotonic() > deadline or self._guard.fired):
                    self._hand_back(jobs[index:])
                    break
                ran += 1
                if self._run(job):
                    finished.add(job)
        finally:
            if len(jobs) > 1:
                self._guard.disarm()
            self._settle_done(finished.take())
        per_job = (time.monotonic() - started) / ran
        fits = max(1, int(BATCH_SECONDS / max(per_job, 1e-6)))
        self._batch = min(fits, 2 * self._batch, self._settings.batch_size)
        return ran

    def _run(self, job: queue.ClaimedJob) -> bool:
        """Run one claimed job; True when it succeeded (to be settled with its batch)."""
        kind = self._kinds.get(job.kind)
        try:
            if kind is None:
                raise PermanentJobError(f"no handler for job kind {job.kind!r}")
            kind.handler(self._context, job.payload)
        except Defer as exc:
            bound = log.bind(job_id=job.id, job_kind=job.kind, attempt=job.attempts)
            with self._db.transaction() as session:
                queue.defer(session, job, exc.until, str(exc))
            bound.info("job.deferred", until=exc.until.isoformat(), reason=str(exc))
            return False
        except Exception as exc:
            bound = log.bind(job_id=job.id, job_kind=job.kind, attempt=job.attempts)
            self._settle_failure(job, kind, exc, bound)
            return False
        return True

    def _settle_finished(self, finished: _Finished) -> None:
        jobs = finished.take()
        try:
            self._settle_done(jobs)
        except BaseException:
            finished.put_back(jobs)  # for the batch's own settling at its end
            raise

    def _settle_done(self, done: list[queue.ClaimedJob]) -> None:
        if not done:
            return
        once = [job for job in done if self._kinds[job.kind].every is None]
        with self._queue_turn(), self._db.transaction() as session:
            settled = queue.complete_batch(session, once) if once else set()
            for job in done:
                every = self._kinds[job.kind].every
                if every is not None:
                    again = utcnow() + timedelta(seconds=every(self._context))
                    if queue.reschedule(session, job, again):
                        settled.add(job.id)
        finished: Counter[str] = Counter()
        for job in done:
            finished[job.kind] += 1
            if job.id not in settled:
                log.warning("job.lease_lost", job_id=job.id, job_kind=job.kind)
            log.info("job.done", job_id=job.id, job_kind=job.kind, attempt=job.attempts)
        for kind_name, count in finished.items():
            JOB_RESULTS.labels(kind=kind_name, result="done").inc(count)

    def _queue_turn(self) -> AbstractContextManager[Any]:
        return self.wakeup.sqlite_turn if self._db.dialect == "sqlite" else nullcontext()

    def _hand_back(self, jobs: list[queue.ClaimedJob]) -> None:
        with self._db.transaction() as session:
            queue.release(session, jobs)
        log.info("jobs.handed_back", count=len(jobs))

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
        while ran < max_jobs:
            batch = self.run_batch(min(self._batch, self._settings.batch_size, max_jobs - ran))
            if batch == 0:
                break
            ran += batch
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
        listen_url = None
        if self._settings.wakeup and self._db.dialect == "postgresql":
            listen_url = self._settings.listen_url or self._db.url
        self.wakeup.attach(listen_url)
        polled = False  # this look is the process's idle poll (not a wake-up, not the first)
        try:
            while not stop.is_set():
                seen = self.wakeup.seen()
                try:
                    busy = self.run_batch() > 0
                except Exception:  # the database may be briefly away: keep the worker alive
                    log.exception("worker.loop_error")
                    busy = False
                if busy and polled:
                    # It looked for the process's idle workers and found work: they join in.
                    # (Woken by a ring, they were all woken: no ring again.)
                    self.wakeup.ring()
                polled = False if busy else self._idle(seen, stop)
        finally:
            self.wakeup.detach()

    def _idle(self, seen: int, stop: threading.Event) -> bool:
        """Wait for a wake-up, the next poll, or `stop` (checked every tenth of a second);
        True when this worker is to look at the queue for the process's idle workers. They
        take turns at polling: one looks each period, and wakes the others when it finds
        work."""
        if not self._settings.wakeup:
            stop.wait(self._settings.poll_seconds)
            return False  # each polls on its own: nobody waits for its ring
        every = self._settings.poll_seconds
        until = time.monotonic() + every
        while not stop.is_set():
            left = until - time.monotonic()
            if left <= 0:
                left = self.wakeup.look_in(every)
                if left <= 0:
                    return True
                until = time.monotonic() + left
            if self.wakeup.wait(seen, min(left, 0.1)):
                return False
        return False

    def start_in_thread(self, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(
            target=self.run_forever, args=(stop,), name=f"worker-{self.name}", daemon=True
        )
        thread.start()
        return thread
