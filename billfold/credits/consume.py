"""Spending and granting credits: the debit the host application makes on every billable
action, and the admin's grants and adjustments."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from billfold.auth.service import Caller
from billfold.config import Settings
from billfold.credits import ledger, recharge
from billfold.credits.models import EntryKind
from billfold.credits.postings import Movement, Posted
from billfold.customers.service import acting_customer
from billfold.kit import audit
from billfold.kit.errors import BillfoldError, InvalidInput
from billfold.services import Services


@dataclass(frozen=True)
class Debit:
    customer_id: str | None
    amount: int
    idempotency_key: str
    reason: str | None


def consume(services: Services, caller: Caller, debit: Debit) -> Posted:
    """Debit once per idempotency key; 402 and no change when the balance is short."""
    with services.db.transaction() as session:
        customer = acting_customer(session, caller, debit.customer_id)
        outcome = spend(session, services.settings, [debit_of(caller, customer.id, debit)])[0]
        if isinstance(outcome, BillfoldError):
            raise outcome
        return outcome


def debit_of(caller: Caller, customer_id: str, debit: Debit) -> Movement:
    """The ledger movement a consume makes on the account it draws on."""
    return Movement(
        customer_id,
        -debit.amount,
        EntryKind.CONSUME,
        f"consume:{debit.idempotency_key}",
        reason=debit.reason,
        actor=caller.actor,
    )


def spend(
    session: Session,
    settings: Settings,
    debits: Sequence[Movement],
    *,
    keys_before_lock: bool = False,
) -> list[Posted | BillfoldError]:
    """Apply consumes in order in the caller's transaction (one alone, or a batch), one
    outcome each, and start the recharges they made due."""
    decision = ledger.apply(session, debits, keys_before_lock=keys_before_lock)
    for customer_id in decision.recharges:
        recharge.start(session, customer_id, settings)
    return decision.outcomes


def grant(
    session: Session,
    caller: Caller,
    *,
    customer_id: str,
    amount: int,
    kind: EntryKind,
    reason: str,
    idempotency_key: str,
) -> Posted:
    """An admin's grant (credits given) or adjustment (a correction either way), audited."""
    if kind not in (EntryKind.GRANT, EntryKind.ADJUSTMENT):
        raise InvalidInput("kind must be grant or adjustment", code="invalid_kind")
    if kind == EntryKind.GRANT and amount <= 0:
        raise InvalidInput("A grant gives credits: amount must be positive", code="invalid_amount")
    customer = acting_customer(session, caller, customer_id)
    posted = ledger.post(
        session,
        customer.id,
        amount,
        kind,
        idempotency_key=f"{kind}:{idempotency_key}",
        reason=reason,
        actor=caller.actor,
    )
    if not posted.replayed:
        audit.record(
            session,
            caller.actor,
            f"credits.{kind}",
            customer.id,
            amount=amount,
            reason=reason,
            transaction_id=posted.id,
        )
    return posted
