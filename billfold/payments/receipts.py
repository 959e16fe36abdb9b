"""The receipt e-mail of a successful payment, queued once through the mail outbox."""

from __future__ import annotations

from sqlalchemy.orm import Session

from billfold.customers.models import Customer
from billfold.mail.outbox import queue_mail
from billfold.money import format_money
from billfold.payments.models import Order, Payment


def queue_receipt(session: Session, payment: Payment) -> None:
    customer = session.get(Customer, payment.customer_id)
    if customer is None or customer.deleted_at is not None:
        return
    total = format_money(payment.amount, payment.currency)
    lines = [f"Hello {customer.user.name},", "", f"We received your payment of {total}.", ""]
    order = session.get(Order, payment.order_id) if payment.order_id else None
    if order is not None:
        lines.append(f"Order {order.id}:")
        lines += [
            f"  {line.quantity} x {line.product_name} — {format_money(line.amount, order.currency)}"
            for line in order.lines
        ]
        lines.append("")
    lines += [f"Payment reference: {payment.id}", "", "Thank you!"]
    queue_mail(
        session,
        to=customer.user.email,
        subject=f"Your receipt for {total}",
        body="\n".join(lines),
        kind="receipt",
        dedupe_key=f"receipt:{payment.id}",
    )
