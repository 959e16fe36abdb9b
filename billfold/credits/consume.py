"""Spending and granting credits: the debit the host application makes on every billable
action, and the admin's grants and adjustments."""

from __future__ import annotations

from dataclasses import dataclass

from billfold.auth.service import Caller
from billfold.credits import ledger, recharge
from billfold.credits.models import EntryKind
from billfold.credits.rules import recharge_due
from billfold.customers.service import acting_customer
from billfold.kit import audit
from billfold.kit.db import utcnow
from billfold.kit.errors import InvalidInput
from billfold.services import Services


@dataclass(frozen=True)
class Debit:
    customer_id: str | None
    amount: int
    idempotency_key: str
    reason: str | None


def consume(services: Services, caller: Caller, debit: Debit) -> ledger.Posted:
    """Debit once per idempotency key; 402 and no change when the balance is short."""
    with services.db.transaction() as session:
        customer = acting_customer(session, caller, debit.customer_id)
        posted = ledger.post(
            session,
            customer.id,
            -debit.amount,
            EntryKind.CONSUME,
            idempotency_key=f"consume:{debit.idempotency_key}",
            reason=debit.reason,
            actor=caller.actor,
        )
        if posted.policy is not None and recharge_due(
            posted.balance_after, posted.policy, utcnow()
        ):
            recharge.start(session, customer.id, services.settings)
        return posted


def grant(
    services: Services,
    caller: Caller,
    *,
    customer_id: str,
    amount: int,
    kind: EntryKind,
    reason: str,
    idempotency_key: str,
) -> ledger.Posted:
    """An admin's grant (credits given) or adjustment (a correction either way), audited."""
    if kind not in (EntryKind.GRANT, EntryKind.ADJUSTMENT):
        raise InvalidInput("kind must be grant or adjustment", code="invalid_kind")
    if kind == EntryKind.GRANT and amount <= 0:
        raise InvalidInput("A grant gives credits: amount must be positive", code="invalid_amount")
    with services.db.transaction() as session:
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
