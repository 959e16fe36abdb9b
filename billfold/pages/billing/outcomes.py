"""How a billing page says what happened: one wording for declines and outages, and the
redirect that carries it to the page (never JSON, never a trace)."""

from __future__ import annotations

from collections.abc import Callable

from starlette.responses import Response

from billfold.kit.errors import BillfoldError
from billfold.pages.rendering import Pages
from billfold.payments.models import Payment
from billfold.stripe_gateway import PaymentDeclined
from billfold.stripe_gateway.errors import StripeUnavailable

# Stripe's decline codes, as a customer should read them.
DECLINES = {
    "insufficient_funds": "Your card has insufficient funds.",
    "authentication_required": "Your bank asks you to confirm this payment.",
    "expired_card": "Your card has expired.",
    "incorrect_cvc": "The card's security code is incorrect.",
    "lost_card": "Your card was declined.",
    "stolen_card": "Your card was declined.",
    "processing_error": "The card could not be processed. Please try again.",
    "generic_decline": "Your card was declined.",
}


def decline_message(code: str | None, fallback: str | None = None) -> str:
    return DECLINES.get(code or "", fallback or "Your card was declined.")


def say(exc: BillfoldError) -> str:
    """What a person reads for an error a service raised."""
    if isinstance(exc, PaymentDeclined):
        return decline_message(exc.details.get("decline_code"), exc.message)
    if isinstance(exc, StripeUnavailable):
        return "Payments are not reachable right now. Nothing was charged; please try again soon."
    return exc.message


def payment_outcome(payment: Payment) -> str | None:
    """The decline of a payment just tried, as a message (None when it was not declined)."""
    if payment.decline_code is None:
        return None
    return decline_message(payment.decline_code, payment.failure_message)


def act(pages: Pages, back: str, action: Callable[[], str]) -> Response:
    """Run a form's action; back to `back` with its notice, or with what went wrong."""
    try:
        notice = action()
    except BillfoldError as exc:
        return pages.redirect(back, error=say(exc))
    return pages.redirect(back, notice=notice)
