"""The durable job queue: transactional enqueue, retries with backoff, the dead, take-over."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, func, insert, select, update
from support.netfault import FaultyLink
from support.waiting import wait_until
from support.worker_process import output, start_worker_process

from billfold.config import Settings
from billfold.jobs import queue, wakeup
from billfold.jobs.models import Job, JobStatus
from billfold.jobs.worker import JobKind, PermanentJobError, Worker, WorkerSettings
from billfold.kit import audit
from billfold.kit.db import utcnow
from billfold.services import Services

# The queue's statements, its leases and LISTEN/NOTIFY also run through PgBouncer.
pytestmark = pytest.mark.pgbouncer

# -- a worker with test kinds of its own -----------------------------------------------


@dataclass
class Context:
    """What the test handlers share: the services, and a record of what ran."""

    services: Services
    ran: list[dict[str, Any]] = field(default_factory=list)
    failures: list[tuple[str, bool]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _record(ctx: Context, payload: dict[str, Any]) -> None:
    with ctx.lock:
        ctx.ran.append(payload)


def _broken(_ctx: Context, _payload: dict[str, Any]) -> None:
    raise RuntimeError("boom")


def _refused(_ctx: Context, _payload: dict[str, Any]) -> None:
    raise PermanentJobError("bad payload")


def _audit(ctx: Context, payload: dict[str, Any]) -> None:
    with ctx.services.db.transaction() as session:
        audit.record(session, "test-worker", "test.job_ran", payload["job_id"])


def _note_failure(
    ctx: Context,
) -> Callable[[Any, Any, dict[str, Any], str, bool], None]:
    def on_failure(
        _context: Any, _session: Any, _payload: dict[str, Any], error: str, dead: bool
    ) -> None:
        ctx.failures.append((error, dead))

    return on_failure


def kinds(ctx: Context) -> dict[str, JobKind[Context]]:
    return {
        "test.record": JobKind(_record),
        "test.broken": JobKind(_broken, on_failure=_note_failure(ctx)),
        "test.refused": JobKind(_refused, on_failure=_note_failure(ctx)),
        "test.audit": JobKind(_audit),
    }


def settings(
    *, lease: float = 30.0, backoff_base: float = 0.0, backoff_max: float = 0.0
) -> WorkerSettings:
    return WorkerSettings(
        lease=timedelta(seconds=lease),
        backoff_base=backoff_base,
        backoff_max=backoff_max,
        poll_seconds=0.01,
    )


def make_worker(
    ctx: Context,
    worker_settings: WorkerSettings | None = None,
    *,
    name: str = "test",
    job_kinds: Mapping[str, JobKind[Context]] | None = None,
) -> Worker[Context]:
    return Worker(
        ctx.services.db,
        job_kinds if job_kinds is not None else kinds(ctx),
        ctx,
        worker_settings or settings(),
        name=name,
    )


@pytest.fixture
def ctx(services: Services) -> Context:
    return Context(services)


def add(
    services: Services, kind: str, payload: dict[str, Any] | None = None, **options: Any
) -> str:
    with services.db.transaction() as session:
        job = queue.enqueue(session, kind, payload or {}, **options)
        session.flush()
        return job.id


def load(services: Services, job_id: str) -> Job:
    with services.db.transaction() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def make_due(services: Services, job_id: str) -> None:
    with services.db.transaction() as session:
        session.execute(update(Job).where(Job.id == job_id).values(run_at=utcnow()))


def seconds_from_now(moment: datetime) -> float:
    return (moment - utcnow()).total_seconds()


# -- enqueue is part of the caller's transaction ---------------------------------------


def _enqueue_then_roll_back(services: Services) -> None:
    with services.db.transaction() as session:
        queue.enqueue(session, "test.record", {"n": 1})
        session.flush()
        raise RuntimeError("the change that caused the job failed")


def test_job_of_a_rolled_back_transaction_never_runs(services: Services, ctx: Context) -> None:
    with pytest.raises(RuntimeError, match="caused the job failed"):
        _enqueue_then_roll_back(services)

    assert make_worker(ctx).run_until_idle() == 0
    assert ctx.ran == []
    with services.db.transaction() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 0


def test_committed_job_runs_once_and_is_marked_done(services: Services, ctx: Context) -> None:
    job_id = add(services, "test.record", {"n": 2})
    worker = make_worker(ctx)

    assert worker.run_until_idle() == 1
    assert worker.run_until_idle() == 0

    assert ctx.ran == [{"n": 2}]
    job = load(services, job_id)
    assert job.status == JobStatus.DONE
    assert job.attempts == 1
    assert job.finished_at is not None
    assert job.locked_until is None
    assert job.last_error is None


def test_job_scheduled_for_later_waits_until_due(services: Services, ctx: Context) -> None:
    job_id = add(services, "test.record", {"n": 3}, run_at=utcnow() + timedelta(hours=1))
    worker = make_worker(ctx)

    assert worker.run_until_idle() == 0
    make_due(services, job_id)
    assert worker.run_until_idle() == 1
    assert ctx.ran == [{"n": 3}]


# -- failures --------------------------------------------------------------------------


def test_failing_job_is_retried_with_growing_backoff_then_dies(
    services: Services, ctx: Context
) -> None:
    job_id = add(services, "test.broken", max_attempts=4)
    worker = make_worker(ctx, settings(backoff_base=10.0, backoff_max=1000.0))

    # Each try waits between half and all of base·2^(tries-1) seconds before the next.
    for attempt, (low, high) in enumerate([(5, 10), (10, 20), (20, 40)], start=1):
        assert worker.run_once() is True
        job = load(services, job_id)
        assert job.status == JobStatus.PENDING
        assert job.attempts == attempt
        assert job.last_error == "RuntimeError: boom"
        assert job.locked_until is None
        assert low - 1 <= seconds_from_now(job.run_at) <= high
        assert worker.run_once() is False  # not due yet
        make_due(services, job_id)

    assert worker.run_once() is True
    job = load(services, job_id)
    assert job.status == JobStatus.DEAD
    assert job.attempts == 4
    assert job.finished_at is not None
    assert job.last_error == "RuntimeError: boom"
    assert worker.run_once() is False
    assert ctx.failures == [("RuntimeError: boom", False)] * 3 + [("RuntimeError: boom", True)]


def test_backoff_is_capped(services: Services, ctx: Context) -> None:
    job_id = add(services, "test.broken", max_attempts=20)
    worker = make_worker(ctx, settings(backoff_base=1.0, backoff_max=4.0))
    for _ in range(8):
        assert worker.run_once() is True
        make_due(services, job_id)

    assert worker.run_once() is True
    job = load(services, job_id)
    assert job.attempts == 9
    assert seconds_from_now(job.run_at) <= 4.0


def test_permanent_error_kills_the_job_at_once(services: Services, ctx: Context) -> None:
    job_id = add(services, "test.refused")

    assert make_worker(ctx).run_until_idle() == 1

    job = load(services, job_id)
    assert job.status == JobStatus.DEAD
    assert job.attempts == 1
    assert job.max_attempts == queue.DEFAULT_MAX_ATTEMPTS
    assert job.last_error == "PermanentJobError: bad payload"
    assert ctx.failures == [("PermanentJobError: bad payload", True)]


def test_unknown_kind_dies_and_retry_dead_revives_it(services: Services, ctx: Context) -> None:
    job_id = add(services, "test.added_later", {"n": 4})
    assert make_worker(ctx).run_until_idle() == 1
    job = load(services, job_id)
    assert job.status == JobStatus.DEAD
    assert job.last_error == "PermanentJobError: no handler for job kind 'test.added_later'"

    with services.db.transaction() as session:
        assert queue.retry_dead(session, job_id) is True
    revived = load(services, job_id)
    assert revived.status == JobStatus.PENDING
    assert revived.attempts == 0
    assert revived.finished_at is None

    newer = make_worker(ctx, job_kinds={"test.added_later": JobKind(_record)})
    assert newer.run_until_idle() == 1
    assert ctx.ran == [{"n": 4}]
    assert load(services, job_id).status == JobStatus.DONE


def test_retry_dead_leaves_live_jobs_alone(services: Services) -> None:
    pending = add(services, "test.record")
    with services.db.transaction() as session:
        assert queue.retry_dead(session, pending) is False
        assert queue.retry_dead(session, "job_nonexistent") is False
    assert load(services, pending).status == JobStatus.PENDING


# -- leases ----------------------------------------------------------------------------


def test_job_of_a_dead_worker_is_taken_over_after_its_lease(
    services: Services, ctx: Context
) -> None:
    job_id = add(services, "test.record", {"n": 5})
    with services.db.transaction() as session:
        crashed = queue.claim(session, "crashed-worker", timedelta(seconds=1))
    assert crashed is not None
    assert crashed.id == job_id
    survivor = make_worker(ctx, name="survivor")

    assert survivor.run_once() is False  # the lease still holds
    # Taken over once the lease has run out (a second from the claim), not before.
    assert wait_until(survivor.run_once, timeout=20)

    assert ctx.ran == [{"n": 5}]
    job = load(services, job_id)
    assert job.status == JobStatus.DONE
    assert job.attempts == 2
    assert job.locked_by is not None
    assert job.locked_by.startswith("survivor:")
    with services.db.transaction() as session:
        assert queue.complete(session, crashed) is False
    with services.db.transaction() as session:
        queue.fail(session, crashed, "late", permanent=True, backoff_base=0, backoff_max=0)
    job = load(services, job_id)
    assert job.status == JobStatus.DONE
    assert job.last_error is None


def test_late_failure_of_a_worker_that_lost_its_lease_is_not_reported(
    services: Services, ctx: Context
) -> None:
    calls: list[int] = []
    taken_over = threading.Event()

    def slow_then_broken(_ctx: Context, _payload: dict[str, Any]) -> None:
        calls.append(1)
        if len(calls) == 1:  # the first holder is slow and fails after the takeover
            assert taken_over.wait(timeout=30)
            raise RuntimeError("too late")

    job_kinds = {"test.slow": JobKind(slow_then_broken, on_failure=_note_failure(ctx))}
    job_id = add(services, "test.slow", max_attempts=1)
    slow = make_worker(ctx, settings(lease=0.3), name="slow", job_kinds=job_kinds)
    thread = threading.Thread(target=slow.run_once)
    thread.start()
    assert wait_until(lambda: calls == [1], timeout=20)  # the slow worker holds it
    fast = make_worker(ctx, name="fast", job_kinds=job_kinds)
    assert wait_until(fast.run_once, timeout=20)  # once its 0.3 s lease has run out
    taken_over.set()
    thread.join(timeout=10)

    assert len(calls) == 2
    assert load(services, job_id).status == JobStatus.DONE
    assert ctx.failures == []


# -- several workers -------------------------------------------------------------------


def test_four_workers_drain_300_jobs_each_exactly_once(services: Services, ctx: Context) -> None:
    with services.db.transaction() as session:
        for _ in range(300):
            job = queue.enqueue(session, "test.audit", {})
            session.flush()
            job.payload = {"job_id": job.id}
    workers = [make_worker(ctx, name=f"w{i}") for i in range(4)]
    ran: dict[str, int] = {}
    errors: list[BaseException] = []

    def drain(worker: Worker[Context]) -> None:
        try:
            ran[worker.name] = worker.run_until_idle()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=drain, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    assert sum(ran.values()) == 300
    assert sum(1 for n in ran.values() if n > 0) >= 2, ran  # the work was shared
    with services.db.transaction() as session:
        assert queue.depth(session) == {"done": 300}
        subjects = session.scalars(
            select(audit.AuditEntry.subject_id).where(audit.AuditEntry.action == "test.job_ran")
        ).all()
        job_ids = set(session.scalars(select(Job.id)))
    assert len(subjects) == 300
    assert set(subjects) == job_ids


# -- depth and metrics -----------------------------------------------------------------


def _gauge(metrics: str, status: str) -> float | None:
    found = re.search(rf'^billfold_job_queue_depth{{status="{status}"}} (\S+)$', metrics, re.M)
    return float(found.group(1)) if found else None


@pytest.mark.parametrize("settings_overrides", [{"metrics_public": True}])
def test_depth_counts_jobs_per_status_and_metrics_show_it(
    services: Services, ctx: Context, client: TestClient
) -> None:
    for n in range(3):
        add(services, "test.record", {"n": n})
    add(services, "test.refused")
    add(services, "test.record", run_at=utcnow() + timedelta(hours=1))
    add(services, "test.record", run_at=utcnow() + timedelta(hours=1))
    make_worker(ctx).run_until_idle()

    with services.db.transaction() as session:
        assert queue.depth(session) == {"done": 3, "dead": 1, "pending": 2}

    response = client.get("/metrics")
    assert response.status_code == 200
    assert _gauge(response.text, "done") == 3.0
    assert _gauge(response.text, "dead") == 1.0
    assert _gauge(response.text, "pending") == 2.0


@pytest.mark.parametrize("settings_overrides", [{"metrics_public": True}])
def test_metrics_drop_a_status_once_its_jobs_are_gone(
    services: Services, ctx: Context, client: TestClient
) -> None:
    job_id = add(services, "test.refused")
    make_worker(ctx).run_until_idle()
    assert _gauge(client.get("/metrics").text, "dead") == 1.0

    with services.db.transaction() as session:
        assert queue.retry_dead(session, job_id) is True
        assert "dead" not in queue.depth(session)

    assert _gauge(client.get("/metrics").text, "dead") in (None, 0.0)


# -- recurring jobs --------------------------------------------------------------------


def test_recurring_job_is_one_row_that_runs_again_after_its_interval(
    services: Services, ctx: Context
) -> None:
    recurring = {**kinds(ctx), "test.every": JobKind(_record, every=lambda _ctx: 60.0)}
    workers = [make_worker(ctx, name=f"w{i}", job_kinds=recurring) for i in range(3)]
    for worker in workers:  # every worker makes sure it exists when it starts
        worker.schedule_recurring()
        worker.schedule_recurring()
    job_id = queue.recurring_job_id("test.every")

    assert workers[0].run_until_idle() == 1
    assert workers[1].run_until_idle() == 0  # not due again for a minute

    job = load(services, job_id)
    assert (job.status, job.attempts, job.locked_until) == (JobStatus.PENDING, 0, None)
    assert 55 < seconds_from_now(job.run_at) <= 60
    make_due(services, job_id)
    assert workers[2].run_until_idle() == 1
    assert ctx.ran == [{}, {}]
    with services.db.transaction() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 1


def test_dead_recurring_job_is_revived_when_a_worker_starts(
    services: Services, ctx: Context
) -> None:
    recurring = {"test.every": JobKind(_broken, every=lambda _ctx: 60.0)}
    worker = make_worker(ctx, job_kinds=recurring)
    worker.schedule_recurring()
    job_id = queue.recurring_job_id("test.every")
    with services.db.transaction() as session:
        session.execute(update(Job).where(Job.id == job_id).values(max_attempts=1))
    worker.run_until_idle()
    assert load(services, job_id).status == JobStatus.DEAD

    worker.schedule_recurring()

    revived = load(services, job_id)
    assert (revived.status, revived.attempts) == (JobStatus.PENDING, 0)
    assert seconds_from_now(revived.run_at) <= 0


# -- batches and wake-ups --------------------------------------------------------------


def test_one_batch_claims_several_jobs_and_marks_them_done_together(
    services: Services, ctx: Context
) -> None:
    job_ids = [add(services, "test.record", {"n": n}) for n in range(5)]
    worker = make_worker(ctx)

    assert worker.run_batch(10) == 5
    assert worker.run_batch(10) == 0

    assert ctx.ran == [{"n": n} for n in range(5)]  # oldest first
    jobs = [load(services, job_id) for job_id in job_ids]
    assert {(job.status, job.attempts) for job in jobs} == {(JobStatus.DONE, 1)}
    assert len({job.locked_by for job in jobs}) == 1  # one claim


def test_a_batch_that_runs_long_hands_back_the_jobs_it_did_not_start(
    services: Services, ctx: Context
) -> None:
    def slow(_ctx: Context, payload: dict[str, Any]) -> None:
        _record(ctx, payload)
        time.sleep(0.6)  # the job's own work, longer than half the 1 s lease (not a race)

    job_kinds = {"test.slow": JobKind(slow)}
    job_ids = [add(services, "test.slow", {"n": n}) for n in range(3)]
    worker = make_worker(ctx, settings(lease=1.0), job_kinds=job_kinds)

    assert worker.run_batch(3) == 1

    first, *rest = (load(services, job_id) for job_id in job_ids)
    assert first.status == JobStatus.DONE
    # Handed back due at once, the claim not counted: another worker takes them now, not
    # after the lease.
    assert {(job.status, job.attempts, job.locked_until) for job in rest} == {
        (JobStatus.PENDING, 0, None)
    }
    assert make_worker(ctx, name="other", job_kinds=job_kinds).run_until_idle() == 2
    assert ctx.ran == [{"n": 0}, {"n": 1}, {"n": 2}]


def test_jobs_of_a_batch_finished_before_a_late_job_overran_its_lease_are_not_run_again(
    services: Services, ctx: Context
) -> None:
    calls: list[str] = []
    release = threading.Event()

    def quick(_ctx: Context, payload: dict[str, Any]) -> None:
        calls.append(payload["name"])

    def overrunning(_ctx: Context, payload: dict[str, Any]) -> None:
        calls.append(payload["name"])
        if calls.count(payload["name"]) == 1:  # the first try outlives the batch's lease
            assert release.wait(timeout=60)

    job_kinds = {"test.quick": JobKind(quick), "test.overrun": JobKind(overrunning)}
    first = add(services, "test.quick", {"name": "first"})
    second = add(services, "test.quick", {"name": "second"})
    late = add(services, "test.overrun", {"name": "late"})
    batch = make_worker(ctx, settings(lease=1.0), name="batch", job_kinds=job_kinds)
    thread = threading.Thread(target=batch.run_batch, args=(3,))
    thread.start()
    try:
        assert wait_until(lambda: "late" in calls, timeout=20)
        # Settled while the late job still runs (before the lease can run out) ...
        assert wait_until(
            lambda: {load(services, i).status for i in (first, second)} == {JobStatus.DONE},
            timeout=20,
        )
        assert load(services, late).status == JobStatus.RUNNING
        # ... so once the lease has run out, another worker takes over only the late job.
        other = make_worker(ctx, name="other", job_kinds=job_kinds)
        assert wait_until(other.run_once, timeout=20)
        assert other.run_until_idle() == 0
    finally:
        release.set()
        thread.join(timeout=30)

    assert sorted(calls) == ["first", "late", "late", "second"]
    assert load(services, late).locked_by is not None
    assert str(load(services, late).locked_by).startswith("other:")
    assert {load(services, i).status for i in (first, second, late)} == {JobStatus.DONE}


def test_idle_worker_starts_a_job_enqueued_in_its_process_without_waiting_for_its_poll(
    services: Services, ctx: Context
) -> None:
    long_poll = WorkerSettings(
        lease=timedelta(seconds=30), backoff_base=0, backoff_max=0, poll_seconds=60
    )
    worker = make_worker(ctx, long_poll)
    stop = threading.Event()
    thread = worker.start_in_thread(stop)
    try:
        add(services, "test.record", {"n": 1})
        assert wait_until(lambda: ctx.ran == [{"n": 1}], timeout=20)
        add(services, "test.record", {"n": 2})  # now it is idle, a minute from its next poll
        assert wait_until(lambda: len(ctx.ran) == 2, timeout=20)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()


class _Looks:
    """Counts the looks at the queue (claims) made through an engine."""

    def __init__(self, services: Services) -> None:
        self.engine = services.db.engine
        self.statements = 0
        self.lock = threading.Lock()

    def __enter__(self) -> _Looks:
        event.listen(self.engine, "before_cursor_execute", self._count)
        return self

    def __exit__(self, *_exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._count)

    def _count(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.startswith("UPDATE jobs") and "ORDER BY jobs.run_at" in statement:
            with self.lock:
                self.statements += 1

    @property
    def count(self) -> float:
        # On an empty queue a look is two claim statements (expired leases, then due jobs).
        with self.lock:
            return self.statements / 2


def _polling(every: float) -> WorkerSettings:
    return WorkerSettings(
        lease=timedelta(seconds=30), backoff_base=0, backoff_max=0, poll_seconds=every
    )


def test_idle_workers_of_a_process_poll_the_queue_once_a_period_together(
    services: Services, ctx: Context
) -> None:
    every = 0.05
    stop = threading.Event()
    with _Looks(services) as looks:
        started = time.monotonic()
        threads = [
            make_worker(ctx, _polling(every), name=f"w{n}").start_in_thread(stop) for n in range(6)
        ]
        try:
            assert wait_until(lambda: looks.count >= 40, timeout=60)
            seen, elapsed = looks.count, time.monotonic() - started
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=10)
    # Each thread's first look, then one a period for all six (twice that, for slack); six
    # threads each polling on their own would look six times a period.
    assert seen <= 6 + 2 * (elapsed / every + 1), (seen, elapsed)


def test_idle_worker_that_finds_a_due_job_wakes_its_process_other_idle_workers(
    services: Services, ctx: Context
) -> None:
    """The process's idle workers wait on one wake-up (`Wakeup`, shared per database): the
    poller's ring is what wakes the others."""
    worker = make_worker(ctx, _polling(0.05))
    stop = threading.Event()
    with _Looks(services) as looks:
        thread = worker.start_in_thread(stop)
        try:
            assert wait_until(lambda: looks.count >= 2, timeout=20)  # it is idle, polling
            if services.db.dialect == "postgresql":  # its LISTEN rings once when it connects
                assert worker.wakeup.listening.wait(timeout=20)
            rung = worker.wakeup.seen()
            # Written without the enqueue's own wake-up (as a job that just came due): only
            # the worker's poll finds it.
            with services.db.transaction() as session:
                session.execute(
                    insert(Job).values(
                        id="job_found_by_poll",
                        kind="test.record",
                        payload={"n": 1},
                        status=JobStatus.PENDING,
                        attempts=0,
                        max_attempts=3,
                        run_at=utcnow(),
                    )
                )
            # It rings the others once the job is settled (after the handler ran).
            assert wait_until(lambda: worker.wakeup.seen() > rung, timeout=20)
            assert wait_until(lambda: ctx.ran == [{"n": 1}], timeout=20)
        finally:
            stop.set()
            thread.join(timeout=10)


def test_a_look_at_the_queue_by_one_idle_worker_stands_for_the_others_until_the_next_period() -> (
    None
):
    shared = wakeup.Wakeup("test-turns")
    assert shared.look_in(60) == 0  # the first idle worker looks
    assert 59 < shared.look_in(60) <= 60  # another waits for the next period
    assert shared.look_in(0.0) == 0  # past the period, the next one looks


@pytest.mark.postgres_only
def test_worker_process_is_woken_by_notify_when_another_process_enqueues(
    services: Services, settings: Settings, stripe_link: FaultyLink, tmp_path: Path
) -> None:
    # Polling once a minute: only LISTEN/NOTIFY can make it start the jobs within seconds.
    worker = start_worker_process(
        settings, stripe_link.url, "sk_test_x", tmp_path, {"JOB_POLL_SECONDS": "60"}
    )
    try:
        first = add(services, "test.not_handled_there")
        assert wait_until(lambda: load(services, first).status == JobStatus.DEAD, 60), output(
            worker
        )
        second = add(services, "test.not_handled_there")  # the worker is idle now
        assert wait_until(lambda: load(services, second).status == JobStatus.DEAD, 20), output(
            worker
        )
    finally:
        worker.terminate()
        worker.wait(timeout=20)
