"""What a payment is for decides what its success, decline and refunds do.

Orders are fulfilled here (ORDER_PURPOSE); the application wires every purpose into the
PURPOSES table (`billfold/registry.py`), so payments never import the domains that build on
them (prepaid credits).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from billfold.config import Settings
from billfold.kit.wiring import Table, Wiring
from billfold.payments import orders
from billfold.payments.models import Payment, Refund, RefundStatus
from billfold.payments.receipts import queue_receipt


def _nothing(_session: Session, _payment: Payment, _settings: Settings) -> None:
    return None


@dataclass(frozen=True)
class Purpose:
    # Each runs in the transaction that records the change, exactly once per change.
    paid: Callable[[Session, Payment, Settings], None]
    declined: Callable[[Session, Payment, Settings], None] = _nothing
    # Called with the total successfully refunded so far.
    refunded: Callable[[Session, Payment, int, Settings], None] = lambda _s, _p, _a, _c: None


def refunded_total(session: Session, payment_id: str) -> int:
    """What Stripe has refunded of a payment (succeeded refunds only)."""
    amounts = session.scalars(
        select(Refund.amount).where(
            Refund.payment_id == payment_id, Refund.status == RefundStatus.SUCCEEDED
        )
    )
    return sum(amounts)


def _order_paid(session: Session, payment: Payment, _settings: Settings) -> None:
    if payment.order_id:
        orders.fulfil(session, payment.order_id)
    queue_receipt(session, payment)


def _order_refunded(
    session: Session, payment: Payment, amount_refunded: int, _settings: Settings
) -> None:
    if payment.order_id:
        orders.record_refund(session, payment.order_id, amount_refunded=amount_refunded)


ORDER = "order"
ORDER_PURPOSE = Purpose(paid=_order_paid, refunded=_order_refunded)
PURPOSES: Table[Purpose] = Table("payments.purposes")


class UnknownPurpose(LookupError):
    """A payment whose purpose the application did not wire: a wiring mistake."""


def purpose_of(wiring: Wiring, payment: Payment) -> Purpose:
    purpose = wiring.table(PURPOSES).get(payment.purpose)
    if purpose is None:
        raise UnknownPurpose(f"No purpose {payment.purpose!r} is wired (billfold/registry.py)")
    return purpose
