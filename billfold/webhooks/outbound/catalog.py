"""The event types we send: our names, our IDs in their data, never Stripe's."""

from __future__ import annotations

EVENT_TYPES: dict[str, str] = {
    "customer.created": "A customer signed up (or was created by an admin)",
    "customer.updated": "A customer's name, e-mail, company, phone or metadata changed",
    "customer.deleted": "A customer's account was deleted",
    "payment.succeeded": "A payment succeeded",
    "payment.failed": "A payment failed or was declined",
    "payment.refunded": "A payment was refunded, in full or in part",
    "order.paid": "An order was paid",
    "subscription.created": "A subscription started (the sign-up trial included)",
    "subscription.updated": "A subscription changed plan, period or renewal",
    "subscription.canceled": "A subscription ended",
    "subscription.past_due": "A subscription's renewal payment failed",
    "license.issued": "A new license token was issued",
    "credits.purchased": "Credits were bought (by the customer or by auto-recharge)",
    "credits.low_balance": "A debit took the balance below the low-balance threshold",
    "credits.exhausted": "A debit took the balance to zero",
    "credits.recharge_succeeded": "An automatic recharge succeeded",
    "credits.recharge_failed": "An automatic recharge failed (auto-recharge is turned off)",
}
