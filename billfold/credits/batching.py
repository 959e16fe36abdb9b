"""Group commit for debits: the consumes that arrive together are applied in one transaction.

The host application calls `consume` on every billable action, often many at once on the
same account. Applied one by one, each debit pays for its own transaction and waits for the
account's row lock in turn. The batcher hands every waiting debit to its thread, which locks
the accounts involved (in a fixed order, so two batches cannot deadlock), applies the
debits in arrival order with exactly the rules of `ledger.post` — the same idempotency
keys, the same refusal when the balance is short — writes all ledger entries and balances
at once, and commits once. If a batch fails as a whole, each debit is retried alone through
the plain path, so a bad neighbour never fails a good debit.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import Connection, Engine, bindparam, insert, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from billfold.auth.service import Caller, TokenIssuer, resolve_caller, resolve_callers
from billfold.credits import ledger, recharge
from billfold.credits.consume import Debit, consume
from billfold.credits.models import CreditAccount, EntryKind, LedgerEntry
from billfold.credits.rules import RechargePolicy, recharge_due
from billfold.customers.models import Customer
from billfold.kit.db import UTCDateTime, new_id, utcnow
from billfold.kit.errors import InvalidInput, NotFound
from billfold.services import Services
from billfold.webhooks.outbound.notify import balance_crossings

log = structlog.get_logger("billfold.credits")


@dataclass
class _Account:
    """An account row as a batch reads it under lock (plain values: no ORM bookkeeping)."""

    customer_id: str
    balance: int
    entries: int
    policy: RechargePolicy


@dataclass
class _Pending:
    credential: str  # resolved to a caller inside the batch: no transaction per request
    debit: Debit
    future: concurrent.futures.Future[ledger.Posted]


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

    async def submit(self, credential: str, debit: Debit) -> ledger.Posted:
        """Apply a debit for the caller behind `credential` (a JWT or a service API key)."""
        future: concurrent.futures.Future[ledger.Posted] = concurrent.futures.Future()
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
        outcomes: list[ledger.Posted | Exception] | None = None
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
    ) -> list[ledger.Posted | Exception]:
        with connection.transaction() as session:
            callers = resolve_callers(session, [p.credential for p in batch], self._tokens)
            allowed = [
                (c, p.debit) for c, p in zip(callers, batch, strict=True) if isinstance(c, Caller)
            ]
            applied = iter(
                apply_batch(session, allowed, self._services, keys_before_lock=keys_before_lock)
            )
            return [next(applied) if isinstance(c, Caller) else c for c in callers]


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


def apply_batch(
    session: Session,
    debits: list[tuple[Caller, Debit]],
    services: Services,
    *,
    keys_before_lock: bool = False,
) -> list[ledger.Posted | Exception]:
    """Apply debits in order in the caller's transaction; one outcome (or error) each.

    With `keys_before_lock`, the idempotency keys already used are looked up before the
    accounts are locked, so the locks are held for one round trip less (what decides the
    rate on a hot account). A key another batch commits in between then fails this one on
    the unique constraint (IntegrityError), and the caller runs it again without.
    """
    owners = _owners(session, debits)
    keys = {
        (owner, f"consume:{debit.idempotency_key}")
        for owner, (_, debit) in zip(owners, debits, strict=True)
        if isinstance(owner, str)
    }
    seen = _existing(session, keys) if keys_before_lock else {}
    customer_ids = sorted({cid for cid in owners if isinstance(cid, str)})
    accounts = _lock_accounts(session, customer_ids)
    if missing := [cid for cid in customer_ids if cid not in accounts]:
        for customer_id in missing:  # a first debit ever: it will be refused, but recorded right
            ledger.ensure_account(session, customer_id)
        accounts.update(_lock_accounts(session, missing))
    if not keys_before_lock:
        seen = _existing(session, keys)
    now = utcnow()
    outcomes: list[ledger.Posted | Exception] = []
    new_entries: list[dict[str, Any]] = []
    crossed: set[str] = set()
    refused: dict[int, tuple[str, str]] = {}
    for owner, (caller, debit) in zip(owners, debits, strict=True):
        if isinstance(owner, Exception):
            outcomes.append(owner)
            continue
        key = f"consume:{debit.idempotency_key}"
        if (owner, key) in seen:
            outcomes.append(_replay(seen[(owner, key)], debit))
            continue
        account = accounts[owner]
        if account.balance < debit.amount:
            refused[len(outcomes)] = (owner, key)
            outcomes.append(
                ledger.InsufficientCredits(
                    f"Not enough credits: {account.balance} available, {debit.amount} needed",
                    balance=account.balance,
                    required=debit.amount,
                )
            )
            continue
        account.balance -= debit.amount
        account.entries += 1
        balance_crossings(
            session,
            owner,
            account.balance + debit.amount,
            account.balance,
            account.policy.threshold,
        )
        posted = ledger.Posted(
            new_id("ctx"), -debit.amount, account.balance, EntryKind.CONSUME, key, now, False
        )
        seen[(owner, key)] = posted
        new_entries.append(
            {
                "id": posted.id,
                "customer_id": owner,
                "entry_no": account.entries,
                "amount": posted.amount,
                "balance_after": posted.balance_after,
                "kind": EntryKind.CONSUME,
                "reason": debit.reason,
                "reference_id": None,
                "idempotency_key": key,
                "actor": caller.actor,
                "created_at": now,
            }
        )
        if recharge_due(account.balance, account.policy, now):
            crossed.add(owner)
        outcomes.append(posted)
    if keys_before_lock and refused:
        # A refusal changes nothing, so it cannot fail on the constraint: check its key again
        # under the lock, in case another batch debited it since (then it is a replay).
        late = _existing(session, set(refused.values()))
        for at, owner_key in refused.items():
            if owner_key in late:
                outcomes[at] = _replay(late[owner_key], debits[at][1])
    if new_entries:
        touched = {str(e["customer_id"]) for e in new_entries}
        _update_balances(session, [a for a in accounts.values() if a.customer_id in touched], now)
        _insert_entries(session, new_entries, now)
    for customer_id in sorted(crossed):
        recharge.start(session, customer_id, services.settings)
    return outcomes


# On PostgreSQL a batch's balances and entries travel as arrays, one statement each:
# executemany would send (and the server plan and run) a statement per row, and psycopg
# handles each reply in Python. SQLite's executemany is a C loop inside this process.
_PG_UPDATE_BALANCES = text(
    """
    UPDATE credit_accounts AS a
       SET balance = v.balance, entries = v.entries, updated_at = :now
      FROM unnest(CAST(:ids AS varchar[]), CAST(:balances AS bigint[]),
                  CAST(:entries AS bigint[])) AS v(customer_id, balance, entries)
     WHERE a.customer_id = v.customer_id
    """
).bindparams(bindparam("now", type_=UTCDateTime))
_PG_INSERT_CONSUMED = text(
    """
    INSERT INTO credit_transactions (id, customer_id, entry_no, amount, balance_after, kind,
                                     reason, reference_id, idempotency_key, actor, created_at)
    SELECT v.id, v.customer_id, v.entry_no, v.amount, v.balance_after, :kind,
           v.reason, NULL, v.idempotency_key, v.actor, :now
      FROM unnest(CAST(:ids AS varchar[]), CAST(:customers AS varchar[]),
                  CAST(:entry_nos AS bigint[]), CAST(:amounts AS bigint[]),
                  CAST(:balances AS bigint[]), CAST(:reasons AS varchar[]),
                  CAST(:keys AS varchar[]), CAST(:actors AS varchar[]))
           AS v(id, customer_id, entry_no, amount, balance_after, reason, idempotency_key, actor)
    """
).bindparams(bindparam("now", type_=UTCDateTime))


def _update_balances(session: Session, accounts: list[_Account], now: datetime) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.connection().execute(
            _PG_UPDATE_BALANCES,
            {
                "ids": [a.customer_id for a in accounts],
                "balances": [a.balance for a in accounts],
                "entries": [a.entries for a in accounts],
                "now": now,
            },
        )
        return
    table = CreditAccount.metadata.tables[CreditAccount.__tablename__]
    session.connection().execute(
        update(table)
        .where(table.c.customer_id == bindparam("account"))
        .values(balance=bindparam("new_balance"), entries=bindparam("new_entries"), updated_at=now),
        [
            {"account": a.customer_id, "new_balance": a.balance, "new_entries": a.entries}
            for a in accounts
        ],
    )


def _insert_entries(session: Session, entries: list[dict[str, Any]], now: datetime) -> None:
    """The batch's consume entries, all made `now`."""
    if session.get_bind().dialect.name != "postgresql":
        session.connection().execute(insert(LedgerEntry), entries)
        return
    session.connection().execute(
        _PG_INSERT_CONSUMED,
        {
            "ids": [e["id"] for e in entries],
            "customers": [e["customer_id"] for e in entries],
            "entry_nos": [e["entry_no"] for e in entries],
            "amounts": [e["amount"] for e in entries],
            "balances": [e["balance_after"] for e in entries],
            "reasons": [e["reason"] for e in entries],
            "keys": [e["idempotency_key"] for e in entries],
            "actors": [e["actor"] for e in entries],
            "kind": str(EntryKind.CONSUME),
            "now": now,
        },
    )


def _replay(earlier: ledger.Posted, debit: Debit) -> ledger.Posted | Exception:
    """The answer to a debit whose key was used before: the same result, unless the amount
    differs."""
    if earlier.amount != -debit.amount:
        return ledger.KeyReused(
            "This idempotency key was used for a different amount",
            original_amount=ledger.as_sent(earlier.kind, earlier.amount),
        )
    return dataclasses.replace(earlier, replayed=True)


# The batch's reads, built once: each runs on every batch, and building a statement (and its
# cache key) costs about as much Python as running it. `expanding` lists fill the IN (…).
# A batch runs its statements on the session's connection: they read and write plain rows,
# so the ORM layer would only add work (an account a batch creates is flushed at once).
_LOCK_ACCOUNTS = (
    select(
        CreditAccount.customer_id,
        CreditAccount.balance,
        CreditAccount.entries,
        *ledger.RECHARGE_POLICY_COLUMNS,
    )
    .where(CreditAccount.customer_id.in_(bindparam("customer_ids", expanding=True)))
    # Always in customer ID order, so two batches wait for each other instead of deadlocking.
    .order_by(CreditAccount.customer_id)
    .with_for_update()
)
_USED_KEYS = select(
    LedgerEntry.id,
    LedgerEntry.customer_id,
    LedgerEntry.amount,
    LedgerEntry.balance_after,
    LedgerEntry.kind,
    LedgerEntry.idempotency_key,
    LedgerEntry.created_at,
).where(
    LedgerEntry.customer_id.in_(bindparam("customer_ids", expanding=True)),
    LedgerEntry.idempotency_key.in_(bindparam("keys", expanding=True)),
)
_CUSTOMERS = select(Customer.id, Customer.user_id, Customer.deleted_at)
_NAMED = Customer.id.in_(bindparam("ids", expanding=True))
_OF_USERS = Customer.user_id.in_(bindparam("users", expanding=True))
# Only the conditions that name someone: an always-empty IN () in an OR helps no index.
_CUSTOMERS_BY = {
    (True, False): _CUSTOMERS.where(_NAMED),
    (False, True): _CUSTOMERS.where(_OF_USERS),
    (True, True): _CUSTOMERS.where(or_(_NAMED, _OF_USERS)),
}


def _lock_accounts(session: Session, customer_ids: list[str]) -> dict[str, _Account]:
    rows = session.connection().execute(_LOCK_ACCOUNTS, {"customer_ids": customer_ids})
    return {
        r.customer_id: _Account(r.customer_id, r.balance, r.entries, ledger.policy_of(r))
        for r in rows
    }


def _owners(session: Session, debits: list[tuple[Caller, Debit]]) -> list[str | Exception]:
    """Whose account each debit draws on, or why it may not (as `acting_customer` decides)."""
    named = {d.customer_id for _, d in debits if d.customer_id}
    users = {c.user.id for c, d in debits if not d.customer_id and c.user is not None}
    rows = (
        session.connection()
        .execute(
            _CUSTOMERS_BY[bool(named), bool(users)], {"ids": list(named), "users": list(users)}
        )
        .all()
        if named or users
        else []
    )
    by_id = {r.id: r for r in rows}
    by_user = {r.user_id: r for r in rows}
    owners: list[str | Exception] = []
    for caller, debit in debits:
        if debit.customer_id is None:
            if caller.user is None:
                owners.append(
                    InvalidInput("A service key must name the customer", code="customer_required")
                )
                continue
            row = by_user.get(caller.user.id)
        else:
            row = by_id.get(debit.customer_id)
            if row is not None and not caller.may_act_on(row.user_id):
                row = None
        if row is None or row.deleted_at is not None:
            owners.append(NotFound("No such customer"))
        else:
            owners.append(row.id)
    return owners


def _existing(session: Session, keys: set[tuple[str, str]]) -> dict[tuple[str, str], ledger.Posted]:
    if not keys:
        return {}
    rows = session.connection().execute(
        _USED_KEYS, {"customer_ids": list({c for c, _ in keys}), "keys": list({k for _, k in keys})}
    )
    return {
        (e.customer_id, e.idempotency_key): ledger.Posted(
            e.id, e.amount, e.balance_after, e.kind, e.idempotency_key, e.created_at, True
        )
        for e in rows
        if (e.customer_id, e.idempotency_key) in keys
    }
