"""StripeGateway: every Stripe call Billfold makes (grouped by subject), plus webhook
signature checks."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import stripe

from billfold.config import Settings, secret
from billfold.stripe_gateway.base import idempotency_key
from billfold.stripe_gateway.billing import BillingCalls
from billfold.stripe_gateway.catalog import CatalogCalls
from billfold.stripe_gateway.customers import CustomerCalls
from billfold.stripe_gateway.errors import WebhookSignatureInvalid
from billfold.stripe_gateway.events import EventCalls
from billfold.stripe_gateway.payments import PaymentCalls
from billfold.stripe_gateway.schedules import ScheduleCalls

__all__ = ["StripeGateway", "idempotency_key"]

# What a Stripe event can be (and what our inbox's columns hold): a signed body outside these
# is refused as not an event, rather than failing as it is stored.
_MAX_EVENT_ID = 255
_MAX_EVENT_TYPE = 100
_LATEST_CREATED = 253_402_300_799  # 9999-12-31T23:59:59Z, the last second a datetime holds


class StripeGateway(
    CustomerCalls, PaymentCalls, BillingCalls, ScheduleCalls, CatalogCalls, EventCalls
):
    def __init__(
        self,
        *,
        secret_key: str,
        api_base: str | None,
        timeout: float,
        max_network_retries: int,
        webhook_secret: str | None = None,
        webhook_tolerance: int = 300,
        http_client: stripe.HTTPClient | None = None,
    ) -> None:
        self._client = stripe.StripeClient(
            secret_key,
            base_addresses={"api": api_base} if api_base else None,
            max_network_retries=max_network_retries,
            http_client=http_client or stripe.HTTPXClient(timeout=timeout, allow_sync_methods=True),
        )
        self._webhook_secret = webhook_secret
        self._webhook_tolerance = webhook_tolerance

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        timeout: float | None = None,
        max_network_retries: int | None = None,
        http_factory: Callable[[float], stripe.HTTPClient] | None = None,
    ) -> StripeGateway:
        settings.require("stripe_secret_key")
        seconds = timeout or settings.stripe_timeout_seconds
        return cls(
            secret_key=secret(settings.stripe_secret_key),
            api_base=settings.stripe_api_base,
            timeout=seconds,
            max_network_retries=(
                settings.stripe_max_network_retries
                if max_network_retries is None
                else max_network_retries
            ),
            webhook_secret=(
                settings.stripe_webhook_secret.get_secret_value()
                if settings.stripe_webhook_secret
                else None
            ),
            webhook_tolerance=settings.stripe_webhook_tolerance_seconds,
            http_client=http_factory(seconds) if http_factory else None,
        )

    def verify_webhook(self, payload: bytes, signature_header: str | None) -> dict[str, Any]:
        """The event of a correctly signed, fresh webhook body; anything else is refused."""
        if not self._webhook_secret:
            raise WebhookSignatureInvalid("STRIPE_WEBHOOK_SECRET is not set", code="not_configured")
        if not signature_header:
            raise WebhookSignatureInvalid("Missing Stripe-Signature header")
        try:
            stripe.WebhookSignature.verify_header(
                payload, signature_header, self._webhook_secret, self._webhook_tolerance
            )
            event = json.loads(payload.decode("utf-8"))
        except stripe.SignatureVerificationError as exc:
            raise WebhookSignatureInvalid(
                "Stripe-Signature does not match the body or is too old"
            ) from exc
        except ValueError as exc:
            raise WebhookSignatureInvalid(
                "Webhook body is not JSON", code="invalid_payload"
            ) from exc
        if not isinstance(event, dict) or not _is_stripe_event(event):
            raise WebhookSignatureInvalid(
                "Webhook body is not a Stripe event", code="invalid_payload"
            )
        return event


def _is_stripe_event(event: dict[str, Any]) -> bool:
    event_id, event_type, created = event.get("id"), event.get("type"), event.get("created")
    return (
        isinstance(event_id, str)
        and 0 < len(event_id) <= _MAX_EVENT_ID
        and isinstance(event_type, str)
        and 0 < len(event_type) <= _MAX_EVENT_TYPE
        and "\x00" not in event_id + event_type
        and isinstance(created, int)
        and not isinstance(created, bool)
        and 0 <= created <= _LATEST_CREATED
    )
