"""Waking idle workers the moment a job is enqueued, instead of at their next poll.

A transaction that enqueued a job sends `NOTIFY billfold_jobs` as it commits (PostgreSQL
delivers it only if the transaction commits, to every listening process), and rings the
workers of its own process after the commit (which is all SQLite has). Each worker process
keeps one direct connection that LISTENs and rings its workers on every notification.
Polling stays underneath: a worker also looks every `job_poll_seconds` (jobs scheduled for
later, a retry's backoff, a listening connection that is down).

LISTEN needs a session of its own, so behind a transaction-pooling PgBouncer the listening
connection must go straight to PostgreSQL (`job_listen_url`); NOTIFY itself is part of the
enqueuing transaction and passes through the pooler.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import structlog
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

log = structlog.get_logger("billfold.jobs")

CHANNEL = "billfold_jobs"
_ENQUEUED = "billfold.jobs.enqueued"
_RECONNECT_SECONDS = (0.5, 1.0, 2.0, 5.0)


class Wakeup:
    """Where a process's idle workers wait for new jobs (one per database per process)."""

    def __init__(self, key: str) -> None:
        self.key = key
        self._changed = threading.Condition()
        self._generation = 0
        self._users = 0
        self._listen_url: str | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.listening = threading.Event()
        # SQLite has one writer: the process's workers take turns at the queue's writes
        # rather than meet in SQLite's busy wait, which sleeps far longer than a turn.
        self.sqlite_turn = threading.Lock()
        # When an idle worker of this process last looked at the queue for them all.
        self._idle_look: float | None = None

    def seen(self) -> int:
        """A mark to wait from: take it before looking for jobs, so nothing rung in between
        is missed."""
        with self._changed:
            return self._generation

    def wait(self, seen: int, timeout: float) -> bool:
        """Sleep until a job was enqueued since `seen`, or `timeout`; True if woken."""
        with self._changed:
            return self._changed.wait_for(lambda: self._generation != seen, timeout)

    def look_in(self, every: float) -> float:
        """For an idle worker whose poll is due: 0 when it should look at the queue now (for
        the whole process), else how long until the process's next look, when another idle
        worker looked less than `every` seconds ago. So idle workers poll once a period
        together, not each of them (16 idle threads polling PostgreSQL every 50 ms cost a
        worker process half a core)."""
        with self._changed:
            now = time.monotonic()
            if self._idle_look is not None and now - self._idle_look < every:
                return every - (now - self._idle_look)
            self._idle_look = now
            return 0.0

    def ring(self) -> None:
        with self._changed:
            self._generation += 1
            self._changed.notify_all()

    def attach(self, listen_url: str | None) -> None:
        """A worker starts waiting here; the first one with a PostgreSQL `listen_url` starts
        the listening connection."""
        with self._changed:
            self._users += 1
            if listen_url is None or self._thread is not None:
                return
            self._listen_url = listen_url
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._listen, name="billfold-jobs-listen", daemon=True
            )
            self._thread.start()

    def detach(self) -> None:
        """A worker stopped; the last one closes the listening connection."""
        with self._changed:
            self._users -= 1
            if self._users > 0 or self._thread is None:
                return
            thread, self._thread = self._thread, None
            self._stop.set()
        thread.join(timeout=5)

    def _listen(self) -> None:
        assert self._listen_url is not None
        conninfo = _libpq_url(self._listen_url)
        failures = 0
        while not self._stop.is_set():
            try:
                with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    failures = 0
                    self.ring()  # whatever was enqueued while nobody listened
                    self.listening.set()
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=1.0):
                            self.ring()
            except psycopg.Error as exc:
                self.listening.clear()
                delay = _RECONNECT_SECONDS[min(failures, len(_RECONNECT_SECONDS) - 1)]
                failures += 1
                log.warning("jobs.listen_failed", error=str(exc), retry_in=delay)
                self._stop.wait(delay)
        self.listening.clear()


_wakeups: dict[str, Wakeup] = {}
_wakeups_lock = threading.Lock()


def _key(url: Any) -> str:
    return str(make_url(str(url)).set(password=None).render_as_string())


def _libpq_url(url: str) -> str:
    """A SQLAlchemy URL (`postgresql+psycopg://…`) as libpq takes it."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def wakeup_for(database_url: str) -> Wakeup:
    """The process's Wakeup for this database (workers and enqueuers find the same one)."""
    key = _key(database_url)
    with _wakeups_lock:
        found = _wakeups.get(key)
        if found is None:
            found = _wakeups[key] = Wakeup(key)
        return found


def note_enqueued(session: Session) -> None:
    """The session's transaction enqueued a job: wake the workers when it commits."""
    session.info[_ENQUEUED] = True


@event.listens_for(Session, "before_commit")
def _notify_listeners(session: Session) -> None:
    if not session.info.get(_ENQUEUED):
        return
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        # Delivered at commit, once per transaction however many jobs it enqueued.
        session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": CHANNEL})


@event.listens_for(Session, "after_commit")
def _ring_local_workers(session: Session) -> None:
    if not session.info.pop(_ENQUEUED, False):
        return
    with _wakeups_lock:
        found = _wakeups.get(_key(session.get_bind().engine.url))
    if found is not None:
        found.ring()


@event.listens_for(Session, "after_rollback")
def _forget_enqueued(session: Session) -> None:
    session.info.pop(_ENQUEUED, None)
