"""Group commit for debits: the consumes that arrive together are applied in one transaction.

The host application calls `consume` on every billable action, often many at once on the
same account. Applied one by one, each debit pays for its own transaction and waits for the
account's row lock in turn. The batcher hands every waiting debit to its thread, which
resolves the callers and their accounts in bulk and applies the debits in arrival order
through `consume.spend` — the very rule of a single debit (`postings.decide`, the ledger's
one entry writer) — and commits once. If a batch fails as a whole, each debit is retried
alone through the plain path, so a bad neighbour never fails a good debit.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import structlog
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from billfold.auth.service import Caller, TokenIssuer, resolve_caller, resolve_callers
from billfold.config import Settings
from billfold.credits.consume import Debit, consume, debit_of, spend
from billfold.credits.postings import Posted
from billfold.customers.service import acting_customer_ids
from billfold.services import Services

log = structlog.get_logger("billfold.credits")


@dataclass
class _Pending:
    credential: str  # resolved to a caller inside the batch: no transaction per request
    debit: Debit
    future: concurrent.futures.Future[Posted]


class ConsumeBatcher:
    def __init__(
        self, services: Services, tokens: TokenIssuer, *, threads: int = 1, max_batch: int = 500
    ) -> None:
        self._services = services
        self._tokens = tokens
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._run, name=f"consume-batcher-{i}", daemon=True)
            for i in range(threads)
        ]
        self._max_batch = max_batch
        self._started = False

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

    async def submit(self, credential: str, debit: Debit) -> Posted:
        """Apply a debit for the caller behind `credential` (a JWT or a service API key)."""
        future: concurrent.futures.Future[Posted] = concurrent.futures.Future()
        self._queue.put(_Pending(credential, debit, future))
        return await asyncio.wrap_future(future)

    def _settle_alone(self, pending: _Pending) -> None:
        try:
            with self._services.db.transaction() as session:
                caller = resolve_caller(session, pending.credential, self._tokens)
            pending.future.set_result(consume(self._services, caller, pending.debit))
        except Exception as exc:
            pending.future.set_exception(exc)

    def _run(self) -> None:
        connection = _HeldConnection(self._services.db.engine)
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
                self._apply(batch, connection)
        finally:
            connection.release()

    def _apply(self, batch: list[_Pending], connection: _HeldConnection) -> None:
        outcomes: list[Posted | Exception] | None = None
        try:
            outcomes = self._apply_once(batch, connection, keys_before_lock=True)
        except IntegrityError:
            # Another batch committed one of these keys after this one looked: look again,
            # this time under the account locks, where no other batch can come between.
            log.info("credits.batch_key_raced", size=len(batch))
        except Exception:
            log.warning("credits.batch_failed", size=len(batch), exc_info=True)
            connection.release()  # it may be what failed: the next batch checks out a new one
        if outcomes is None:
            try:
                outcomes = self._apply_once(batch, connection, keys_before_lock=False)
            except Exception:
                log.warning("credits.batch_failed", size=len(batch), exc_info=True)
                connection.release()
                for pending in batch:
                    self._settle_alone(pending)
                return
        for pending, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                pending.future.set_exception(outcome)
            else:
                pending.future.set_result(outcome)

    def _apply_once(
        self, batch: list[_Pending], connection: _HeldConnection, *, keys_before_lock: bool
    ) -> list[Posted | Exception]:
        with connection.transaction() as session:
            return apply_batch(
                session,
                self._services.settings,
                [(p.credential, p.debit) for p in batch],
                self._tokens,
                keys_before_lock=keys_before_lock,
            )


def apply_batch(
    session: Session,
    settings: Settings,
    debits: list[tuple[str, Debit]],
    tokens: TokenIssuer,
    *,
    keys_before_lock: bool = False,
) -> list[Posted | Exception]:
    """Each debit's outcome (or error), in order, applied in the caller's transaction: the
    callers and the accounts they draw on resolved in bulk, then every debit by
    `consume.spend`, the rule of a single debit."""
    callers = resolve_callers(session, [credential for credential, _ in debits], tokens)
    allowed = [(c, d) for c, (_, d) in zip(callers, debits, strict=True) if isinstance(c, Caller)]
    owners = iter(acting_customer_ids(session, [(c, d.customer_id) for c, d in allowed]))
    outcomes: list[str | Exception] = [
        c if isinstance(c, Exception) else next(owners) for c in callers
    ]
    movements = [
        debit_of(c, owner, d)
        for c, (_, d), owner in zip(callers, debits, outcomes, strict=True)
        if isinstance(c, Caller) and isinstance(owner, str)
    ]
    applied = iter(spend(session, settings, movements, keys_before_lock=keys_before_lock))
    return [next(applied) if isinstance(o, str) else o for o in outcomes]


class _HeldConnection:
    """A batcher thread's own database connection, kept from one batch to the next.

    Checking a connection out of the pool for every batch costs a round trip (the pool's
    liveness ping) and Python bookkeeping, on every batch. The held connection is given back
    when a batch fails (it may be what failed) and when the thread stops; the next batch then
    checks out a fresh, pinged one.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._connection: Connection | None = None

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        if self._connection is None:
            self._connection = self._engine.connect()
        with Session(self._connection, expire_on_commit=False) as session, session.begin():
            yield session

    def release(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
