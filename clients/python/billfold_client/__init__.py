"""The Python client for Billfold: `Billfold` (sync) and `AsyncBillfold` (async), typed
answers, errors carrying Billfold's codes, and verifiers for webhooks and licenses."""

from billfold_client._async import AsyncBillfold
from billfold_client._sync import Billfold
from billfold_client.errors import (
    BadRequest,
    BillfoldError,
    Conflict,
    Forbidden,
    InsufficientCredits,
    NotFound,
    PaymentDeclined,
    RateLimited,
    ServiceUnavailable,
    Unauthorized,
)
from billfold_client.licenses import InvalidLicense, LicenseVerifier
from billfold_client.webhooks import InvalidWebhook, WebhookVerifier

__all__ = [
    "AsyncBillfold",
    "BadRequest",
    "Billfold",
    "BillfoldError",
    "Conflict",
    "Forbidden",
    "InsufficientCredits",
    "InvalidLicense",
    "InvalidWebhook",
    "LicenseVerifier",
    "NotFound",
    "PaymentDeclined",
    "RateLimited",
    "ServiceUnavailable",
    "Unauthorized",
    "WebhookVerifier",
]
