"""The receipt e-mail of a successful payment and the notice of a refund, each queued once
through the mail outbox."""

from __future__ import annotations

from sqlalchemy.orm import Session

from billfold.customers.models import Customer
from billfold.kit.money import format_money
from billfold.mail.outbox import queue_mail
from billfold.payments.models import Order, Payment, Refund


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


def queue_refund_notice(session: Session, refund: Refund) -> None:
    """Tell the customer money is on its way back (once per refund, whoever recorded it)."""
    payment = refund.payment
    customer = session.get(Customer, payment.customer_id)
    if customer is None or customer.deleted_at is not None:
        return
    amount = format_money(refund.amount, payment.currency)
    paid = format_money(payment.amount, payment.currency)
    lines = [
        f"Hello {customer.user.name},",
        "",
        f"We refunded {amount} of your payment of {paid}.",
        "Depending on your bank, it shows on your statement within 5 to 10 business days.",
        "",
        f"Payment reference: {payment.id}",
        f"Refund reference: {refund.id}",
    ]
    queue_mail(
        session,
        to=customer.user.email,
        subject=f"Your refund of {amount}",
        body="\n".join(lines),
        kind="refund",
        dedupe_key=f"refund:{refund.id}",
    )
