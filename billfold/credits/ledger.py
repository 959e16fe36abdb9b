"""The ledger: every credit movement is one append-only entry, written in the same statement
pair as the balance it changes, so the balance always equals the sum of the ledger.

`post` is the way a balance changes (`batching.apply_batch` applies many debits at once by
the same rules, under the same row lock and keys). It moves the balance with one
conditional update (a debit can never take it below zero, however many run at once) and
appends the entry under a per-account idempotency key, so nothing is recorded twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from billfold.credits.models import CreditAccount, EntryKind, LedgerEntry
from billfold.credits.rules import RechargePolicy
from billfold.kit.db import new_id, utcnow
from billfold.kit.errors import BillfoldError, Conflict
from billfold.webhooks.outbound.notify import balance_crossings


class InsufficientCredits(BillfoldError):
    status_code = 402
    code = "insufficient_credits"


class KeyReused(Conflict):
    code = "idempotency_key_reused"


@dataclass(frozen=True)
class Posted:
    """A ledger entry as posted (or as found, when its key was seen before)."""

    id: str
    amount: int
    balance_after: int
    kind: EntryKind
    idempotency_key: str
    created_at: datetime
    replayed: bool
    # Auto-recharge policy read in the same statement as the debit (see consume).
    policy: RechargePolicy | None = None


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


def find(session: Session, customer_id: str, idempotency_key: str) -> LedgerEntry | None:
    return session.scalar(
        select(LedgerEntry).where(
            LedgerEntry.customer_id == customer_id, LedgerEntry.idempotency_key == idempotency_key
        )
    )


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
    existing = find(session, customer_id, idempotency_key)
    if existing is not None:
        return _replay(existing, amount)
    ensure_account(session, customer_id)
    try:
        with session.begin_nested():
            return _append(
                session, customer_id, amount, kind, idempotency_key, reason, reference_id, actor
            )
    except IntegrityError:
        # The same key raced us and won; the savepoint undid our balance change.
        existing = find(session, customer_id, idempotency_key)
        if existing is None:
            raise
        return _replay(existing, amount)


def _append(
    session: Session,
    customer_id: str,
    amount: int,
    kind: EntryKind,
    idempotency_key: str,
    reason: str | None,
    reference_id: str | None,
    actor: str | None,
) -> Posted:
    condition = CreditAccount.customer_id == customer_id
    if amount < 0:
        condition = and_(condition, CreditAccount.balance >= -amount)
    row = session.execute(
        update(CreditAccount)
        .where(condition)
        .values(
            balance=CreditAccount.balance + amount,
            entries=CreditAccount.entries + 1,
            updated_at=utcnow(),
        )
        .returning(CreditAccount.balance, CreditAccount.entries, *RECHARGE_POLICY_COLUMNS)
    ).one_or_none()
    if row is None:
        # The same key may have been posted by a twin that held the account while we
        # waited: once it has, its answer is ours too (not a refusal it caused).
        twin = find(session, customer_id, idempotency_key)
        if twin is not None:
            return _replay(twin, amount)
        balance = session.scalar(
            select(CreditAccount.balance).where(CreditAccount.customer_id == customer_id)
        )
        raise InsufficientCredits(
            f"Not enough credits: {balance or 0} available, {-amount} needed",
            balance=balance or 0,
            required=-amount,
        )
    entry_id, now = new_id("ctx"), utcnow()
    session.execute(
        insert(LedgerEntry).values(
            id=entry_id,
            customer_id=customer_id,
            entry_no=row.entries,
            amount=amount,
            balance_after=row.balance,
            kind=kind,
            reason=reason,
            reference_id=reference_id,
            idempotency_key=idempotency_key,
            actor=actor,
            created_at=now,
        )
    )
    balance_crossings(
        session, customer_id, row.balance - amount, row.balance, row.threshold_credits
    )
    return Posted(entry_id, amount, row.balance, kind, idempotency_key, now, False, policy_of(row))


def as_sent(kind: EntryKind, amount: int) -> int:
    """An entry's amount as its caller sent it: a consume of 25 is posted as -25."""
    return -amount if kind == EntryKind.CONSUME else amount


def _replay(entry: LedgerEntry, amount: int) -> Posted:
    if entry.amount != amount:
        raise KeyReused(
            "This idempotency key was used for a different amount",
            original_amount=as_sent(entry.kind, entry.amount),
        )
    return Posted(
        entry.id,
        entry.amount,
        entry.balance_after,
        entry.kind,
        entry.idempotency_key,
        entry.created_at,
        True,
    )


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
