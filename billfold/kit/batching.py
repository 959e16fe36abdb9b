"""Group work: the requests that arrive together are handled in one transaction.

A request that pays for its own transaction (and its own trip through a thread pool) costs
the server more than the work it asks for when that work is a few rows. A batcher hands
every waiting request to its thread, which handles them all at once on a connection it
keeps, in one transaction, and answers each request's future (one call into the
requests' event loop per batch). A subclass says how a batch is
handled (`run_batch`) and how one request is handled alone (`settle_alone`): when a batch
fails as a whole, each of its requests is retried alone, so a bad neighbour never fails a
good request.

Used by the credits debits (`credits/batching.py`), the entitlement reads
(`entitlements/batching.py`) and the Stripe webhook inbox (`webhooks/batching.py`).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Generic, TypeVar

import structlog
from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session

from billfold.kit.db import READER

log = structlog.get_logger("billfold.batching")

W = TypeVar("W")  # what a request asks for
R = TypeVar("R")  # its answer


@dataclass
class Pending(Generic[W, R]):
    work: W
    # The waiting request's future, settled on its own event loop (`_answer`).
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[R]


class Batcher(ABC, Generic[W, R]):
    def __init__(
        self,
        engine: Engine,
        *,
        name: str,
        failed_event: str,
        threads: int = 1,
        max_batch: int = 500,
        reader: bool = False,
    ) -> None:
        self._engine = engine
        self._reader = reader  # its batches mostly read: see HeldConnection
        self._failed_event = failed_event  # logged when a batch fails as a whole
        self._queue: queue.SimpleQueue[Pending[W, R] | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}-{i}", daemon=True)
            for i in range(threads)
        ]
        self._max_batch = max_batch
        self._started = False

    @abstractmethod
    def run_batch(self, batch: list[W], connection: HeldConnection) -> list[R | Exception]:
        """Each request's answer (or error), in order. Raising fails the batch as a whole:
        its requests are then settled alone."""

    @abstractmethod
    def settle_alone(self, work: W) -> R:
        """One request on its own, in its own transaction."""

    def start(self) -> None:
        if not self._started:
            self._started = True
            for thread in self._threads:
                thread.start()

    def stop(self) -> None:
        if self._started:
            for _ in self._threads:
                self._queue.put(None)
            for thread in self._threads:
                thread.join(timeout=10)
            self._started = False

    async def handle(self, work: W) -> R:
        """The answer to `work`, handled in the next batch."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._queue.put(Pending(work, loop, future))
        return await future

    def _run(self) -> None:
        connection = HeldConnection(self._engine, reader=self._reader)
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    return
                batch = [first]
                while len(batch) < self._max_batch:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        self._queue.put(None)  # leave the stop signal for this thread's next turn
                        break
                    batch.append(more)
                try:
                    self._apply(batch, connection)
                except Exception as exc:
                    # A defect past run_batch (say, too few answers) must not end this thread:
                    # every later request of the process would wait for it for ever.
                    log.exception("batching.answer_failed", size=len(batch))
                    connection.release()
                    failed: list[tuple[Pending[W, R], R | Exception]] = [(p, exc) for p in batch]
                    _answer(failed)
        finally:
            connection.release()

    def _apply(self, batch: list[Pending[W, R]], connection: HeldConnection) -> None:
        try:
            outcomes = self.run_batch([p.work for p in batch], connection)
        except Exception:
            log.warning(self._failed_event, size=len(batch), exc_info=True)
            connection.release()  # it may be what failed: the next batch checks out a new one
            for pending in batch:
                self._settle(pending)
            return
        _answer(list(zip(batch, outcomes, strict=True)))

    def _settle(self, pending: Pending[W, R]) -> None:
        outcome: R | Exception
        try:
            outcome = self.settle_alone(pending.work)
        except Exception as exc:
            outcome = exc
        _answer([(pending, outcome)])


def _answer(outcomes: list[tuple[Pending[W, R], R | Exception]]) -> None:
    """Hand each outcome to its waiting request: one call into each event loop per batch
    (not a thread-safe future and a wake-up per request)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Pending[W, R], R | Exception]]] = {}
    for pending, outcome in outcomes:
        by_loop.setdefault(pending.loop, []).append((pending, outcome))
    for loop, settled in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle_futures, settled)
        except RuntimeError:  # that loop has closed: nobody is waiting any more
            log.info("batching.answer_unwaited", size=len(settled))


def _settle_futures(outcomes: list[tuple[Pending[W, R], R | Exception]]) -> None:
    """On the requests' event loop: each future gets its outcome, unless its request was
    cancelled meanwhile (the work stands, as it would have had its answer been lost)."""
    for pending, outcome in outcomes:
        if pending.future.done():
            continue
        if isinstance(outcome, Exception):
            pending.future.set_exception(outcome)
        else:
            pending.future.set_result(outcome)


class HeldConnection:
    """A batcher thread's own database connection, kept from one batch to the next.

    Checking a connection out of the pool for every batch costs a round trip (the pool's
    liveness ping) and Python bookkeeping, on every batch. The held connection is given back
    when a batch fails (it may be what failed) and when the thread stops; the next batch then
    checks out a fresh, pinged one. A reader's connection (`reader`) begins its transactions
    without SQLite's write lock (`kit/db.py`, `READER`): a batch that writes after all may
    then be refused, and is settled request by request in ordinary transactions.
    """

    def __init__(self, engine: Engine, *, reader: bool = False) -> None:
        self._engine = engine
        self._reader = reader
        self._connection: Connection | None = None

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        if self._connection is None:
            connection = self._engine.connect()
            self._connection = (
                connection.execution_options(**{READER: True}) if self._reader else connection
            )
        with Session(self._connection, expire_on_commit=False) as session, session.begin():
            yield session

    def release(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
