"""The ledger's one rule for moving credits, decided without a database: given the accounts
(as read under their row locks), the idempotency keys already used, and the movements asked
for in order, which are applied, which replay an earlier answer, which are refused, and what
that writes. `ledger.apply` reads its inputs and writes its decision, for one movement (a
single debit, a grant, a purchase) and for a batch of consumes alike."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from billfold.credits.models import EntryKind
from billfold.credits.rules import RechargePolicy, recharge_due
from billfold.kit.db import new_id
from billfold.kit.errors import BillfoldError, Conflict


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


@dataclass
class Account:
    """An account as read under its row lock (plain values); `decide` moves it forward."""

    customer_id: str
    balance: int
    entries: int
    policy: RechargePolicy


@dataclass(frozen=True)
class Movement:
    """One movement asked for: `amount` credits (negative to debit) once per key."""

    customer_id: str
    amount: int
    kind: EntryKind
    idempotency_key: str
    reason: str | None = None
    reference_id: str | None = None
    actor: str | None = None


@dataclass(frozen=True)
class NewEntry:
    """A ledger entry to write: the movement, its place in the account, its answer."""

    movement: Movement
    entry_no: int
    posted: Posted


@dataclass(frozen=True)
class Crossing:
    """A debit that took an account's balance from `before` to `after` (the low-balance and
    exhausted notices are decided from it)."""

    customer_id: str
    before: int
    after: int
    threshold: int | None


@dataclass
class Decision:
    outcomes: list[Posted | BillfoldError] = field(default_factory=list)
    entries: list[NewEntry] = field(default_factory=list)
    # Accounts whose balance moved (their new balance and entry count are in the Account).
    touched: dict[str, Account] = field(default_factory=dict)
    crossings: list[Crossing] = field(default_factory=list)
    # Accounts a consume left below their auto-recharge threshold, in customer ID order.
    recharges: list[str] = field(default_factory=list)
    # Outcome positions refused for want of credits, with their (account, key).
    refused: dict[int, tuple[str, str]] = field(default_factory=dict)


def as_sent(kind: EntryKind, amount: int) -> int:
    """An entry's amount as its caller sent it: a consume of 25 is posted as -25."""
    return -amount if kind == EntryKind.CONSUME else amount


def replay(earlier: Posted, amount: int) -> Posted | BillfoldError:
    """The answer to a movement whose key was used before: the same answer, unless the
    amount differs."""
    if earlier.amount != amount:
        return KeyReused(
            "This idempotency key was used for a different amount",
            original_amount=as_sent(earlier.kind, earlier.amount),
        )
    return earlier if earlier.replayed else dataclasses.replace(earlier, replayed=True)


def refusal(balance: int, needed: int) -> InsufficientCredits:
    return InsufficientCredits(
        f"Not enough credits: {balance} available, {needed} needed",
        balance=balance,
        required=needed,
    )


def decide(
    accounts: Mapping[str, Account],
    used: Mapping[tuple[str, str], Posted],
    movements: Sequence[Movement],
    now: datetime,
) -> Decision:
    """Apply `movements` in order to `accounts` (moved forward in place): a key used before
    (or earlier in the same list) replays its answer, a debit never takes a balance below
    zero, and a consume leaving the balance below the threshold makes a recharge due."""
    decision = Decision()
    seen = dict(used)
    due: set[str] = set()
    for movement in movements:
        owner, key = movement.customer_id, movement.idempotency_key
        earlier = seen.get((owner, key))
        if earlier is not None:
            decision.outcomes.append(replay(earlier, movement.amount))
            continue
        account = accounts[owner]
        if movement.amount < 0 and account.balance < -movement.amount:
            decision.refused[len(decision.outcomes)] = (owner, key)
            decision.outcomes.append(refusal(account.balance, -movement.amount))
            continue
        before = account.balance
        account.balance += movement.amount
        account.entries += 1
        posted = Posted(
            new_id("ctx"), movement.amount, account.balance, movement.kind, key, now, False
        )
        seen[(owner, key)] = posted
        decision.entries.append(NewEntry(movement, account.entries, posted))
        decision.touched[owner] = account
        if movement.amount < 0:
            decision.crossings.append(
                Crossing(owner, before, account.balance, account.policy.threshold)
            )
        if movement.kind == EntryKind.CONSUME and recharge_due(
            account.balance, account.policy, now
        ):
            due.add(owner)
        decision.outcomes.append(posted)
    decision.recharges = sorted(due)
    return decision
