"""The ledger: every credit movement is one append-only entry, written in the same
transaction as the balance it changes, so the balance always equals the sum of the ledger.

`apply` is the one way balances change: it locks the accounts, reads the idempotency keys
already used, lets `postings.decide` rule on the movements (a debit never takes a balance
below zero, a key is posted once), and writes the decision with one entry writer. `post` is
one movement; the consume batcher applies many at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, Select, bindparam, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from billfold.credits.models import CreditAccount, EntryKind, LedgerEntry
from billfold.credits.postings import Account, Decision, Movement, Posted, decide, replay
from billfold.credits.rules import RechargePolicy
from billfold.kit.db import UTCDateTime, one_of, utcnow
from billfold.kit.errors import BillfoldError, NotFound
from billfold.webhooks.outbound.notify import balance_crossings

# The account columns that decide whether a debit starts a recharge, and the policy they make.
RECHARGE_POLICY_COLUMNS = (
    CreditAccount.auto_recharge_enabled,
    CreditAccount.threshold_credits,
    CreditAccount.recharge_in_flight_id,
    CreditAccount.recharge_paused_until,
)


def policy_of(row: Row[*tuple[Any, ...]]) -> RechargePolicy:
    """The recharge policy of a row that selected `RECHARGE_POLICY_COLUMNS`."""
    return RechargePolicy(
        row.auto_recharge_enabled,
        row.threshold_credits,
        row.recharge_in_flight_id is not None,
        row.recharge_paused_until,
    )


def ensure_account(session: Session, customer_id: str) -> None:
    if session.get(CreditAccount, customer_id) is not None:
        return
    try:
        with session.begin_nested():
            session.add(CreditAccount(customer_id=customer_id, balance=0, entries=0))
            session.flush()
    except IntegrityError:
        pass  # a concurrent first movement made it


def post(
    session: Session,
    customer_id: str,
    amount: int,
    kind: EntryKind,
    *,
    idempotency_key: str,
    reason: str | None = None,
    reference_id: str | None = None,
    actor: str | None = None,
) -> Posted:
    """Move `amount` credits (negative to debit) once per `idempotency_key`."""
    movement = Movement(customer_id, amount, kind, idempotency_key, reason, reference_id, actor)
    outcome = apply(session, [movement]).outcomes[0]
    if isinstance(outcome, BillfoldError):
        raise outcome
    return outcome


def apply(
    session: Session, movements: Sequence[Movement], *, keys_before_lock: bool = False
) -> Decision:
    """Apply `movements` in order in the caller's transaction, by `postings.decide`.

    The accounts are locked (in customer ID order, so two callers wait for each other instead
    of deadlocking) and the keys already used read under the lock, where no other writer can
    come between. With `keys_before_lock` the keys are read before the lock instead, so the
    lock is held for one round trip less (what decides the rate on a hot account); a key
    another transaction commits in between then fails this one on the unique constraint
    (IntegrityError), and the caller runs it again without.
    """
    keys = {(m.customer_id, m.idempotency_key) for m in movements}
    used = _used(session, keys) if keys_before_lock else {}
    customer_ids = sorted({m.customer_id for m in movements})
    accounts = _lock_accounts(session, customer_ids)
    if missing := [cid for cid in customer_ids if cid not in accounts]:
        for customer_id in missing:  # a first movement ever
            ensure_account(session, customer_id)
        accounts.update(_lock_accounts(session, missing))
    if not keys_before_lock:
        used = _used(session, keys)
    now = utcnow()
    decision = decide(accounts, used, movements, now)
    if keys_before_lock and decision.refused:
        # A refusal changes nothing, so it cannot fail on the constraint: look its key up
        # again under the lock, in case another writer posted it since (then it replays).
        late = _used(session, set(decision.refused.values()))
        for at, owner_key in decision.refused.items():
            if owner_key in late:
                decision.outcomes[at] = replay(late[owner_key], movements[at].amount)
    if decision.entries:
        _write(session, decision, now)
    return decision


def _write(session: Session, decision: Decision, now: datetime) -> None:
    """The one entry writer: the moved balances, the new entries, the balance notices."""
    accounts = list(decision.touched.values())
    entries = decision.entries
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        connection.execute(
            _PG_WRITE,
            {
                "account_ids": [a.customer_id for a in accounts],
                "account_balances": [a.balance for a in accounts],
                "account_entries": [a.entries for a in accounts],
                "ids": [e.posted.id for e in entries],
                "customers": [e.movement.customer_id for e in entries],
                "entry_nos": [e.entry_no for e in entries],
                "amounts": [e.posted.amount for e in entries],
                "balances": [e.posted.balance_after for e in entries],
                "kinds": [str(e.movement.kind) for e in entries],
                "reasons": [e.movement.reason for e in entries],
                "references": [e.movement.reference_id for e in entries],
                "keys": [e.movement.idempotency_key for e in entries],
                "actors": [e.movement.actor for e in entries],
                "now": now,
            },
        )
    else:  # SQLite's executemany is a C loop inside this process
        connection.execute(
            _UPDATE_BALANCE,
            [
                {
                    "account": a.customer_id,
                    "new_balance": a.balance,
                    "new_entries": a.entries,
                    "now": now,
                }
                for a in accounts
            ],
        )
        connection.execute(
            _INSERT_ENTRY,
            [
                {
                    "id": e.posted.id,
                    "customer_id": e.movement.customer_id,
                    "entry_no": e.entry_no,
                    "amount": e.posted.amount,
                    "balance_after": e.posted.balance_after,
                    "kind": e.movement.kind,
                    "reason": e.movement.reason,
                    "reference_id": e.movement.reference_id,
                    "idempotency_key": e.movement.idempotency_key,
                    "actor": e.movement.actor,
                    "created_at": now,
                }
                for e in entries
            ],
        )
    _expire_held(session, accounts)
    for c in decision.crossings:
        balance_crossings(session, c.customer_id, c.before, c.after, c.threshold)


def _expire_held(session: Session, accounts: list[Account]) -> None:
    """The balances are written below the ORM: an account object the session already holds
    (`ensure_account` loads one) would otherwise show the balance from before."""
    if not session.identity_map:
        return
    for account in accounts:
        held = session.identity_map.get(identity_key(CreditAccount, (account.customer_id,)))
        if held is not None:
            session.expire(held)


# On PostgreSQL the balances and the entries travel as arrays in one statement (the update
# is a data-modifying WITH): executemany would send (and the server plan and run) a
# statement per row, psycopg would handle each reply in Python, and two statements would
# cost the hot account's lock one more round trip.
_PG_WRITE = text(
    """
    WITH moved AS (
        UPDATE credit_accounts AS a
           SET balance = v.balance, entries = v.entries, updated_at = :now
          FROM unnest(CAST(:account_ids AS varchar[]), CAST(:account_balances AS bigint[]),
                      CAST(:account_entries AS bigint[])) AS v(customer_id, balance, entries)
         WHERE a.customer_id = v.customer_id
    )
    INSERT INTO credit_transactions (id, customer_id, entry_no, amount, balance_after, kind,
                                     reason, reference_id, idempotency_key, actor, created_at)
    SELECT v.id, v.customer_id, v.entry_no, v.amount, v.balance_after, v.kind,
           v.reason, v.reference_id, v.idempotency_key, v.actor, :now
      FROM unnest(CAST(:ids AS varchar[]), CAST(:customers AS varchar[]),
                  CAST(:entry_nos AS bigint[]), CAST(:amounts AS bigint[]),
                  CAST(:balances AS bigint[]), CAST(:kinds AS varchar[]),
                  CAST(:reasons AS varchar[]), CAST(:references AS varchar[]),
                  CAST(:keys AS varchar[]), CAST(:actors AS varchar[]))
           AS v(id, customer_id, entry_no, amount, balance_after, kind, reason, reference_id,
                idempotency_key, actor)
    """
).bindparams(bindparam("now", type_=UTCDateTime))
_ACCOUNTS = CreditAccount.metadata.tables[CreditAccount.__tablename__]
_UPDATE_BALANCE = (
    update(_ACCOUNTS)
    .where(_ACCOUNTS.c.customer_id == bindparam("account"))
    .values(
        balance=bindparam("new_balance"),
        entries=bindparam("new_entries"),
        updated_at=bindparam("now", type_=UTCDateTime),
    )
)
_INSERT_ENTRY = insert(LedgerEntry.metadata.tables[LedgerEntry.__tablename__])


# The reads, built once for each database: each runs on every debit, and building a
# statement (and its cache key) costs about as much Python as running it. They run on the
# session's connection: they read plain rows, so the ORM would only add work.
def _lock_accounts_statement(
    postgresql: bool,
) -> Select[str, int, int, bool, int | None, str | None, datetime | None]:
    return (
        select(
            CreditAccount.customer_id,
            CreditAccount.balance,
            CreditAccount.entries,
            *RECHARGE_POLICY_COLUMNS,
        )
        .where(one_of(CreditAccount.customer_id, "customer_ids", postgresql=postgresql))
        .order_by(CreditAccount.customer_id)
        .with_for_update()
    )


def _used_keys_statement(
    postgresql: bool,
) -> Select[str, str, int, int, EntryKind, str, datetime]:
    return select(
        LedgerEntry.id,
        LedgerEntry.customer_id,
        LedgerEntry.amount,
        LedgerEntry.balance_after,
        LedgerEntry.kind,
        LedgerEntry.idempotency_key,
        LedgerEntry.created_at,
    ).where(
        one_of(LedgerEntry.customer_id, "customer_ids", postgresql=postgresql),
        one_of(LedgerEntry.idempotency_key, "keys", postgresql=postgresql),
    )


_LOCK_ACCOUNTS = {pg: _lock_accounts_statement(pg) for pg in (False, True)}
_USED_KEYS = {pg: _used_keys_statement(pg) for pg in (False, True)}


def _lock_accounts(session: Session, customer_ids: list[str]) -> dict[str, Account]:
    connection = session.connection()
    rows = connection.execute(
        _LOCK_ACCOUNTS[connection.dialect.name == "postgresql"], {"customer_ids": customer_ids}
    )
    return {r.customer_id: Account(r.customer_id, r.balance, r.entries, policy_of(r)) for r in rows}


def _used(session: Session, keys: set[tuple[str, str]]) -> dict[tuple[str, str], Posted]:
    """The entries already posted under these (account, key) pairs, as their answers."""
    if not keys:
        return {}
    connection = session.connection()
    rows = connection.execute(
        _USED_KEYS[connection.dialect.name == "postgresql"],
        {"customer_ids": list({c for c, _ in keys}), "keys": list({k for _, k in keys})},
    )
    return {
        (e.customer_id, e.idempotency_key): Posted(
            e.id, e.amount, e.balance_after, e.kind, e.idempotency_key, e.created_at, True
        )
        for e in rows
        if (e.customer_id, e.idempotency_key) in keys
    }


def balance(session: Session, customer_id: str) -> int:
    found = session.scalar(
        select(CreditAccount.balance).where(CreditAccount.customer_id == customer_id)
    )
    return found or 0


def entries(
    session: Session, customer_id: str, *, before: int | None, limit: int
) -> list[LedgerEntry]:
    """Newest first; `before` is the cursor (an entry number) from the previous page."""
    query = (
        select(LedgerEntry)
        .where(LedgerEntry.customer_id == customer_id)
        .order_by(LedgerEntry.entry_no.desc())
        .limit(limit)
    )
    if before is not None:
        query = query.where(LedgerEntry.entry_no < before)
    return list(session.scalars(query))


def entry(session: Session, entry_id: str) -> LedgerEntry:
    """One posted entry, by its ID (as `post` answers it)."""
    found = session.get(LedgerEntry, entry_id)
    if found is None:
        raise NotFound("No such ledger entry")
    return found
