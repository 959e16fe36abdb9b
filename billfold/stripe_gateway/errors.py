"""Our errors for Stripe's, decided in one closed list: what is retried, what surfaces."""

from __future__ import annotations

import stripe

from billfold.kit.errors import BillfoldError


class StripeFailure(BillfoldError):
    """Stripe refused or failed a call; `retryable` says whether trying again can help."""

    status_code = 502
    code = "stripe_error"
    retryable = False


class StripeUnavailable(StripeFailure):
    status_code = 503
    code = "stripe_unavailable"
    retryable = True


class StripeNotFound(StripeFailure):
    status_code = 404
    code = "not_found"


class StripeRejected(StripeFailure):
    status_code = 400
    code = "stripe_invalid_request"


class PaymentDeclined(StripeFailure):
    status_code = 402
    code = "card_declined"


class WebhookSignatureInvalid(BillfoldError):
    status_code = 400
    code = "invalid_signature"


def map_error(exc: stripe.StripeError) -> StripeFailure:
    """The closed list of how Stripe's errors surface; anything unlisted is a 502."""
    message = exc.user_message or "Stripe refused the request"
    if isinstance(exc, stripe.CardError):
        error = (exc.json_body or {}).get("error", {}) if isinstance(exc.json_body, dict) else {}
        decline = error.get("decline_code") or exc.code or "card_declined"
        return PaymentDeclined(
            message,
            decline_code=decline,
            payment_intent_id=(error.get("payment_intent") or {}).get("id"),
        )
    if isinstance(exc, stripe.RateLimitError | stripe.APIConnectionError):
        return StripeUnavailable("Stripe is unreachable or rate limiting; try again shortly")
    if isinstance(exc, stripe.IdempotencyError):
        return StripeFailure("Stripe saw a conflicting retry", code="stripe_idempotency_conflict")
    if isinstance(exc, stripe.AuthenticationError | stripe.PermissionError):
        return StripeFailure("Billfold's Stripe credentials were refused", code="stripe_auth")
    if isinstance(exc, stripe.InvalidRequestError):
        if exc.http_status == 404:
            return StripeNotFound("Not found in Stripe")
        return StripeRejected(message)
    if exc.http_status is not None and exc.http_status < 500:
        return StripeFailure(message)
    return StripeUnavailable("Stripe answered with an error; try again shortly")
