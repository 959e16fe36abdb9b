"""The one adapter over the official stripe SDK: calls, idempotency keys, error mapping, logs.

Nothing else in Billfold imports `stripe`.
"""

from billfold.stripe_gateway.catalog import StripePrice, StripeProduct
from billfold.stripe_gateway.client import StripeGateway, idempotency_key
from billfold.stripe_gateway.errors import (
    PaymentDeclined,
    StripeFailure,
    StripeNotFound,
    StripeRejected,
    StripeUnavailable,
    WebhookSignatureInvalid,
)
from billfold.stripe_gateway.objects import (
    StripeCard,
    StripeCustomer,
    StripeInvoice,
    StripeInvoiceLine,
    StripeInvoicePreview,
    StripePaymentIntent,
    StripeRefund,
    StripeSubscription,
)
from billfold.stripe_gateway.schedules import StripeSchedule

__all__ = [
    "PaymentDeclined",
    "StripeCard",
    "StripeCustomer",
    "StripeFailure",
    "StripeGateway",
    "StripeInvoice",
    "StripeInvoiceLine",
    "StripeInvoicePreview",
    "StripeNotFound",
    "StripePaymentIntent",
    "StripePrice",
    "StripeProduct",
    "StripeRefund",
    "StripeRejected",
    "StripeSchedule",
    "StripeSubscription",
    "StripeUnavailable",
    "WebhookSignatureInvalid",
    "idempotency_key",
]
