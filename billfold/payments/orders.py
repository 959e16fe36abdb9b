"""Orders: what a customer is buying, priced from our catalog, paid once, stock taken once."""

from __future__ import annotations

from collections import Counter

import structlog
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from billfold.customers.models import Customer
from billfold.jobs.queue import enqueue
from billfold.kit import audit
from billfold.kit.db import utcnow
from billfold.kit.errors import Conflict, InvalidInput, NotFound
from billfold.payments.catalog import get_product
from billfold.payments.models import Order, OrderLine, OrderStatus, Product
from billfold.webhooks.outbound.notify import order_paid

log = structlog.get_logger("billfold.payments")

# Cancels the PaymentIntent of a canceled order in Stripe (handled in payments/intents.py).
CANCEL_INTENT_JOB = "payments.cancel_intent"
# Stripe's ceiling for one charge in two-decimal currencies (999,999.99).
MAX_AMOUNT = 99_999_999


class OutOfStock(Conflict):
    code = "out_of_stock"


class OrderNotPayable(Conflict):
    code = "order_not_payable"


def create_order(session: Session, customer: Customer, items: list[tuple[str, int]]) -> Order:
    """A pending order for `items` (product ID, quantity), priced now from the catalog."""
    if not items:
        raise InvalidInput("An order needs at least one item", code="empty_order")
    wanted: Counter[str] = Counter()
    for product_id, quantity in items:
        wanted[product_id] += quantity
    products = {pid: get_product(session, pid) for pid in wanted}
    currencies = {p.currency for p in products.values()}
    if len(currencies) > 1:
        raise InvalidInput("All items of an order must share one currency", code="mixed_currency")
    for pid, quantity in wanted.items():
        _check_stock(products[pid], quantity)
    lines = [
        OrderLine(
            position=i,
            product_id=pid,
            product_name=products[pid].name,
            quantity=quantity,
            unit_amount=products[pid].unit_amount,
            amount=products[pid].unit_amount * quantity,
        )
        for i, (pid, quantity) in enumerate(wanted.items())
    ]
    total = sum(line.amount for line in lines)
    if total > MAX_AMOUNT:
        raise InvalidInput(
            f"An order may total at most {MAX_AMOUNT} minor units", code="amount_too_large"
        )
    order = Order(
        customer_id=customer.id, currency=currencies.pop(), amount_total=total, lines=lines
    )
    session.add(order)
    session.flush()
    return order


def _check_stock(product: Product, quantity: int) -> None:
    if product.stock < quantity:
        raise OutOfStock(
            f"Only {product.stock} of {product.name!r} left",
            product_id=product.id,
            available=product.stock,
        )


def get_order(session: Session, customer: Customer | None, order_id: str) -> Order:
    """An order of `customer` (or any order when None: admins); anyone else's is 404."""
    order = session.get(Order, order_id)
    if order is None or (customer is not None and order.customer_id != customer.id):
        raise NotFound("No such order")
    return order


def list_orders(
    session: Session, *, customer_id: str | None, status: OrderStatus | None, limit: int
) -> list[Order]:
    query = select(Order).order_by(Order.created_at.desc()).limit(limit)
    if customer_id is not None:
        query = query.where(Order.customer_id == customer_id)
    if status is not None:
        query = query.where(Order.status == status)
    return list(session.scalars(query))


def cancel_order(session: Session, order: Order, *, actor: str) -> Order:
    """Cancel a pending order; its PaymentIntent is canceled in Stripe by a job, so the card
    can no longer be charged (a success that still arrives is refunded, see `claim_paid`)."""
    result = session.execute(
        update(Order)
        .where(Order.id == order.id, Order.status == OrderStatus.PENDING)
        .values(status=OrderStatus.CANCELED, canceled_at=utcnow())
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        raise Conflict("Only a pending order can be canceled", code="order_not_pending")
    if order.payment_id:
        enqueue(session, CANCEL_INTENT_JOB, {"payment_id": order.payment_id})
    audit.record(session, actor, "order.cancel", order.id)
    session.refresh(order)
    return order


def ensure_payable(order: Order) -> None:
    if order.status != OrderStatus.PENDING:
        raise OrderNotPayable(f"This order is {order.status}, not awaiting payment")


def claim_paid(session: Session, order_id: str) -> bool:
    """Mark a pending order paid; False when it is not pending any more (canceled, or paid
    by another payment), so the payment that just succeeded must not fulfil it.

    One conditional update, so a cancel racing the success either lands first (and this
    payment is refunded) or finds the order paid (and is refused)."""
    claimed = session.execute(
        update(Order)
        .where(Order.id == order_id, Order.status == OrderStatus.PENDING)
        .values(status=OrderStatus.PAID, paid_at=utcnow())
    )
    return bool(claimed.rowcount)  # type: ignore[attr-defined]


def fulfil(session: Session, order_id: str) -> None:
    """Take a paid order's stock; called once, after `claim_paid` marked it paid."""
    order = session.get(Order, order_id)
    assert order is not None
    session.refresh(order)
    for line in order.lines:
        taken = session.execute(
            update(Product)
            .where(Product.id == line.product_id, Product.stock >= line.quantity)
            .values(stock=Product.stock - line.quantity)
        )
        if not taken.rowcount:  # type: ignore[attr-defined]
            # Paid after the last units sold elsewhere: keep the money, flag it for a person.
            order.oversold = True
            audit.record(session, "system", "order.oversold", order.id, product_id=line.product_id)
            log.warning("order.oversold", order_id=order.id, product_id=line.product_id)
    order_paid(session, order)


def record_refund(session: Session, order_id: str, *, amount_refunded: int) -> None:
    order = session.get(Order, order_id)
    if order is None or order.status not in (OrderStatus.PAID, OrderStatus.PARTIALLY_REFUNDED):
        return
    if amount_refunded >= order.amount_total:
        order.status = OrderStatus.REFUNDED
    elif amount_refunded > 0:
        order.status = OrderStatus.PARTIALLY_REFUNDED
