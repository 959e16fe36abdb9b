"""What a credits payment's outcome does: registered as the "credits" payment purpose."""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from billfold.config import Settings
from billfold.credits import ledger
from billfold.credits.models import (
    CreditAccount,
    CreditPurchase,
    EntryKind,
    LedgerEntry,
    PurchaseKind,
    PurchaseStatus,
)
from billfold.credits.recharge import disable_after_failure
from billfold.credits.rules import clawback
from billfold.kit.db import utcnow
from billfold.payments.models import Payment
from billfold.payments.receipts import queue_receipt
from billfold.webhooks.outbound.notify import credits_purchased


def on_paid(session: Session, payment: Payment, _settings: Settings) -> None:
    purchase = _purchase_of(session, payment)
    posted = ledger.post(
        session,
        payment.customer_id,
        purchase.credits,
        EntryKind.PURCHASE,
        idempotency_key=f"purchase:{payment.id}",
        reason=f"{purchase.kind} of {purchase.credits} credits",
        reference_id=payment.id,
        actor="stripe",
    )
    purchase.status = PurchaseStatus.SUCCEEDED
    purchase.granted_at = utcnow()
    _release_recharge(session, purchase)
    credits_purchased(session, purchase, posted.balance_after)
    queue_receipt(session, payment)


def on_declined(session: Session, payment: Payment, settings: Settings) -> None:
    purchase = _purchase_of(session, payment)
    purchase.status = PurchaseStatus.FAILED
    purchase.failure = payment.decline_code
    _release_recharge(session, purchase)
    if purchase.kind == PurchaseKind.RECHARGE:
        disable_after_failure(session, purchase, payment, settings)


def on_refunded(
    session: Session, payment: Payment, refunded_total: int, _settings: Settings
) -> None:
    """Take back the unspent credits a refunded purchase granted (never below zero)."""
    purchase = _purchase_of(session, payment)
    if purchase.status != PurchaseStatus.SUCCEEDED:
        return
    taken = -int(
        session.scalar(
            select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
                LedgerEntry.customer_id == payment.customer_id,
                LedgerEntry.kind == EntryKind.REFUND,
                LedgerEntry.reference_id == purchase.id,
            )
        )
        or 0
    )
    # Hold the account while deciding, so a debit landing now cannot turn this into a 402.
    session.execute(
        select(CreditAccount.balance)
        .where(CreditAccount.customer_id == payment.customer_id)
        .with_for_update()
    )
    credits = clawback(
        purchase.credits,
        payment.amount,
        refunded_total,
        taken,
        ledger.balance(session, payment.customer_id),
    )
    if credits:
        ledger.post(
            session,
            payment.customer_id,
            -credits,
            EntryKind.REFUND,
            idempotency_key=f"clawback:{payment.id}:{refunded_total}",
            reason=f"refund of payment {payment.id}",
            reference_id=purchase.id,
            actor="stripe",
        )


def _purchase_of(session: Session, payment: Payment) -> CreditPurchase:
    purchase = session.scalar(select(CreditPurchase).where(CreditPurchase.payment_id == payment.id))
    assert purchase is not None, f"credits payment {payment.id} has no purchase"
    return purchase


def _release_recharge(session: Session, purchase: CreditPurchase) -> None:
    if purchase.kind == PurchaseKind.RECHARGE:
        session.execute(
            update(CreditAccount)
            .where(
                CreditAccount.customer_id == purchase.customer_id,
                CreditAccount.recharge_in_flight_id == purchase.id,
            )
            .values(recharge_in_flight_id=None)
        )
