"""The one adapter over the official stripe SDK: calls, idempotency keys, error mapping, logs.

Nothing else in Billfold imports `stripe`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import stripe
import structlog

from billfold.config import Settings, secret
from billfold.errors import BillfoldError
from billfold.observability import STRIPE_CALLS, STRIPE_LATENCY

log = structlog.get_logger("billfold.stripe")

T = TypeVar("T")


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


def idempotency_key(operation: str, *our_ids: str | int) -> str:
    """The deterministic Idempotency-Key of a mutating call, built from our IDs only."""
    return ":".join(["billfold", operation, *map(str, our_ids)])


@dataclass(frozen=True)
class StripeCustomer:
    id: str
    name: str | None
    email: str | None
    metadata: dict[str, str]
    deleted: bool = False


def _customer(resource: Any) -> StripeCustomer:
    obj = resource.to_dict() if hasattr(resource, "to_dict") else resource
    deleted = bool(obj.get("deleted", False))
    metadata = obj.get("metadata") or {}
    return StripeCustomer(
        id=obj["id"],
        name=obj.get("name"),
        email=obj.get("email"),
        metadata={str(k): str(v) for k, v in dict(metadata).items()},
        deleted=deleted,
    )


class StripeGateway:
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
    ) -> StripeGateway:
        settings.require("stripe_secret_key")
        return cls(
            secret_key=secret(settings.stripe_secret_key),
            api_base=settings.stripe_api_base,
            timeout=timeout or settings.stripe_timeout_seconds,
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
        )

    # -- customers ---------------------------------------------------------------------

    def create_customer(
        self, *, customer_id: str, user_id: str, name: str, email: str, source: str
    ) -> StripeCustomer:
        params: dict[str, Any] = {
            "name": name,
            "email": email,
            "description": f"Customer for user ID: {user_id}",
            "metadata": {"customer_id": customer_id, "user_id": user_id, "source": source},
        }
        return self._call(
            "customer.create",
            lambda: _customer(
                self._client.v1.customers.create(
                    params=params,  # type: ignore[arg-type]
                    options={"idempotency_key": idempotency_key("customer.create", customer_id)},
                )
            ),
            customer_id=customer_id,
        )

    def find_customer_of(self, *, customer_id: str, email: str) -> StripeCustomer | None:
        """The live Stripe customer carrying our ID in its metadata, found by e-mail."""

        def find() -> StripeCustomer | None:
            page = self._client.v1.customers.list(params={"email": email, "limit": 100})
            for obj in page.auto_paging_iter():
                found = _customer(obj)
                if found.metadata.get("customer_id") == customer_id and not found.deleted:
                    return found
            return None

        return self._call("customer.find", find, customer_id=customer_id)

    def retrieve_customer(self, stripe_customer_id: str) -> StripeCustomer:
        return self._call(
            "customer.retrieve",
            lambda: _customer(self._client.v1.customers.retrieve(stripe_customer_id)),
            stripe_customer_id=stripe_customer_id,
        )

    def update_customer(
        self, stripe_customer_id: str, *, key: str, name: str, email: str
    ) -> StripeCustomer:
        return self._call(
            "customer.update",
            lambda: _customer(
                self._client.v1.customers.update(
                    stripe_customer_id,
                    params={"name": name, "email": email},
                    options={"idempotency_key": key},
                )
            ),
            stripe_customer_id=stripe_customer_id,
        )

    def archive_customer(self, stripe_customer_id: str, *, customer_id: str) -> None:
        self._call(
            "customer.archive",
            lambda: self._client.v1.customers.update(
                stripe_customer_id,
                params={"metadata": {"archived": "true", "customer_id": customer_id}},
                options={"idempotency_key": idempotency_key("customer.archive", customer_id)},
            ),
            stripe_customer_id=stripe_customer_id,
            customer_id=customer_id,
        )

    def delete_customer(self, stripe_customer_id: str, *, customer_id: str) -> None:
        """Delete in Stripe; one already gone counts as deleted."""
        try:
            self._call(
                "customer.delete",
                lambda: self._client.v1.customers.delete(
                    stripe_customer_id,
                    options={"idempotency_key": idempotency_key("customer.delete", customer_id)},
                ),
                stripe_customer_id=stripe_customer_id,
                customer_id=customer_id,
            )
        except StripeNotFound:
            log.info("stripe.customer_already_gone", stripe_customer_id=stripe_customer_id)

    # -- webhooks ----------------------------------------------------------------------

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
            event = json.loads(payload)
        except stripe.SignatureVerificationError as exc:
            raise WebhookSignatureInvalid(
                "Stripe-Signature does not match the body or is too old"
            ) from exc
        except ValueError as exc:
            raise WebhookSignatureInvalid(
                "Webhook body is not JSON", code="invalid_payload"
            ) from exc
        if not isinstance(event, dict) or not {"id", "type", "created"} <= event.keys():
            raise WebhookSignatureInvalid(
                "Webhook body is not a Stripe event", code="invalid_payload"
            )
        return event

    # -- one place for timing, logging and error mapping -------------------------------

    def _call(self, operation: str, fn: Callable[[], T], **ids: str) -> T:
        started = time.perf_counter()
        try:
            result = fn()
        except stripe.StripeError as exc:
            mapped = _map_error(exc)
            STRIPE_CALLS.labels(operation=operation, outcome=mapped.code).inc()
            log.warning(
                "stripe.call_failed",
                operation=operation,
                error=mapped.code,
                http_status=exc.http_status,
                stripe_request_id=exc.request_id,
                **ids,
            )
            raise mapped from exc
        finally:
            STRIPE_LATENCY.labels(operation=operation).observe(time.perf_counter() - started)
        STRIPE_CALLS.labels(operation=operation, outcome="ok").inc()
        stripe_id = getattr(result, "id", None)
        log.info("stripe.call", operation=operation, stripe_id=stripe_id, **ids)
        return result


def _map_error(exc: stripe.StripeError) -> StripeFailure:
    """The closed list of how Stripe's errors surface; anything unlisted is a 502."""
    message = exc.user_message or "Stripe refused the request"
    if isinstance(exc, stripe.CardError):
        decline = getattr(exc, "decline_code", None) or exc.code or "card_declined"
        return PaymentDeclined(message, decline_code=decline)
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
