"""One call per event for the domains that cause them: each builds the event's data (our IDs
only) from the domain's own record and emits it in the caller's transaction."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from billfold.webhooks.outbound.events import emit

if TYPE_CHECKING:
    from billfold.credits.models import CreditPurchase
    from billfold.customers.models import Customer
    from billfold.payments.models import Order, Payment, Refund
    from billfold.subscriptions.models import License, Subscription


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def customer_event(session: Session, event_type: str, customer: Customer) -> None:
    """customer.created / customer.updated / customer.deleted."""
    session.flush()
    data: dict[str, Any] = {"customerId": customer.id, "userId": customer.user_id}
    if event_type != "customer.deleted":
        user = customer.user
        data |= {
            "email": user.email,
            "name": user.name,
            "companyName": user.company_name,
            "phone": customer.phone,
            "metadata": dict(customer.metadata_ or {}),
        }
    emit(session, event_type, customer.id, data)


def payment_event(session: Session, event_type: str, payment: Payment) -> None:
    """payment.succeeded / payment.failed."""
    emit(
        session,
        event_type,
        payment.customer_id,
        {
            "paymentId": payment.id,
            "customerId": payment.customer_id,
            "orderId": payment.order_id,
            "purpose": payment.purpose,
            "amount": payment.amount,
            "currency": payment.currency,
            "status": str(payment.status),
            "declineCode": payment.decline_code,
        },
    )


def payment_refunded(session: Session, payment: Payment, refund: Refund, total: int) -> None:
    emit(
        session,
        "payment.refunded",
        payment.customer_id,
        {
            "paymentId": payment.id,
            "refundId": refund.id,
            "customerId": payment.customer_id,
            "orderId": payment.order_id,
            "amount": refund.amount,
            "amountRefunded": total,
            "currency": payment.currency,
        },
    )


def order_paid(session: Session, order: Order) -> None:
    emit(
        session,
        "order.paid",
        order.customer_id,
        {
            "orderId": order.id,
            "customerId": order.customer_id,
            "paymentId": order.payment_id,
            "amountTotal": order.amount_total,
            "currency": order.currency,
            "oversold": order.oversold,
        },
    )


def subscription_changed(
    session: Session, subscription: Subscription, previous_status: str | None
) -> None:
    """subscription.created (no previous status), .canceled, .past_due or .updated."""
    status = str(subscription.status)
    if previous_status is None:
        event_type = "subscription.created"
    elif status == "canceled" and previous_status != "canceled":
        event_type = "subscription.canceled"
    elif status == "past_due" and previous_status != "past_due":
        event_type = "subscription.past_due"
    else:
        event_type = "subscription.updated"
    emit(
        session,
        event_type,
        subscription.customer_id,
        {
            "subscriptionId": subscription.id,
            "customerId": subscription.customer_id,
            "plan": subscription.plan.code,
            "status": status,
            "previousStatus": previous_status,
            "trialEndsAt": _iso(subscription.trial_ends_at),
            "currentPeriodEndsAt": _iso(subscription.current_period_ends_at),
            "cancelAtPeriodEnd": subscription.cancel_at_period_end,
            "canceledAt": _iso(subscription.canceled_at),
        },
    )


def license_issued(session: Session, license_row: License) -> None:
    emit(
        session,
        "license.issued",
        license_row.customer_id,
        {
            "licenseId": license_row.id,
            "customerId": license_row.customer_id,
            "plan": license_row.plan_code,
            "status": license_row.status,
            "expiresAt": _iso(license_row.expires_at),
            "token": license_row.token,
        },
    )


def credits_purchased(session: Session, purchase: CreditPurchase, balance: int) -> None:
    """credits.purchased, and credits.recharge_succeeded when auto-recharge bought them."""
    data = {
        "customerId": purchase.customer_id,
        "purchaseId": purchase.id,
        "paymentId": purchase.payment_id,
        "kind": str(purchase.kind),
        "credits": purchase.credits,
        "balance": balance,
    }
    emit(session, "credits.purchased", purchase.customer_id, data)
    if str(purchase.kind) == "recharge":
        emit(session, "credits.recharge_succeeded", purchase.customer_id, data)


def recharge_failed(session: Session, purchase: CreditPurchase, reason: str) -> None:
    emit(
        session,
        "credits.recharge_failed",
        purchase.customer_id,
        {
            "customerId": purchase.customer_id,
            "purchaseId": purchase.id,
            "paymentId": purchase.payment_id,
            "credits": purchase.credits,
            "reason": reason,
        },
    )


def balance_crossings(
    session: Session, customer_id: str, before: int, after: int, threshold: int | None
) -> None:
    """credits.low_balance when a debit takes the balance below the account's threshold,
    credits.exhausted when it takes it to zero; nothing (no query) on any other debit."""
    if after >= before:
        return
    if threshold is not None and after < threshold <= before:
        data = {"customerId": customer_id, "balance": after, "threshold": threshold}
        emit(session, "credits.low_balance", customer_id, data)
    if after == 0 < before:
        emit(session, "credits.exhausted", customer_id, {"customerId": customer_id, "balance": 0})
