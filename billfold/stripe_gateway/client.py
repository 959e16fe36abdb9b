"""StripeGateway: every Stripe call Billfold makes, each logged, timed and error-mapped."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

import stripe
import structlog

from billfold.config import Settings, secret
from billfold.observability import STRIPE_CALLS, STRIPE_LATENCY
from billfold.stripe_gateway.errors import StripeNotFound, WebhookSignatureInvalid, _map_error
from billfold.stripe_gateway.objects import (
    StripeCard,
    StripeCustomer,
    StripePaymentIntent,
    StripeRefund,
    StripeSubscription,
    _card,
    _customer,
    _intent,
    _refund,
    parse_subscription,
)

log = structlog.get_logger("billfold.stripe")

T = TypeVar("T")


def idempotency_key(operation: str, *our_ids: str | int) -> str:
    """The deterministic Idempotency-Key of a mutating call, built from our IDs only."""
    return ":".join(["billfold", operation, *map(str, our_ids)])


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

    # -- payment methods ---------------------------------------------------------------

    def list_cards(self, stripe_customer_id: str) -> list[StripeCard]:
        def cards() -> list[StripeCard]:
            page = self._client.v1.payment_methods.list(
                params={"customer": stripe_customer_id, "type": "card", "limit": 100}
            )
            return [_card(pm) for pm in page.auto_paging_iter()]

        return self._call("payment_method.list", cards, stripe_customer_id=stripe_customer_id)

    def retrieve_card(self, payment_method_id: str) -> StripeCard:
        return self._call(
            "payment_method.retrieve",
            lambda: _card(self._client.v1.payment_methods.retrieve(payment_method_id)),
            payment_method_id=payment_method_id,
        )

    def attach_card(
        self, payment_method_id: str, *, stripe_customer_id: str, customer_id: str, attempt: int
    ) -> StripeCard:
        return self._call(
            "payment_method.attach",
            lambda: _card(
                self._client.v1.payment_methods.attach(
                    payment_method_id,
                    params={"customer": stripe_customer_id},
                    options={
                        "idempotency_key": idempotency_key(
                            "payment_method.attach", customer_id, payment_method_id, attempt
                        )
                    },
                )
            ),
            customer_id=customer_id,
            payment_method_id=payment_method_id,
        )

    def detach_card(self, payment_method_id: str, *, customer_id: str, version: int) -> StripeCard:
        return self._call(
            "payment_method.detach",
            lambda: _card(
                self._client.v1.payment_methods.detach(
                    payment_method_id,
                    options={
                        "idempotency_key": idempotency_key(
                            "payment_method.detach", customer_id, payment_method_id, version
                        )
                    },
                )
            ),
            customer_id=customer_id,
            payment_method_id=payment_method_id,
        )

    def default_card_id(self, stripe_customer_id: str) -> str | None:
        def default() -> str | None:
            customer = self._client.v1.customers.retrieve(stripe_customer_id).to_dict()
            found = (customer.get("invoice_settings") or {}).get("default_payment_method")
            return found if isinstance(found, str) else (found or {}).get("id")

        return self._call("customer.default_card", default, stripe_customer_id=stripe_customer_id)

    def set_default_card(
        self, stripe_customer_id: str, payment_method_id: str, *, customer_id: str, request_id: str
    ) -> None:
        self._call(
            "customer.set_default_card",
            lambda: self._client.v1.customers.update(
                stripe_customer_id,
                params={"invoice_settings": {"default_payment_method": payment_method_id}},
                options={
                    "idempotency_key": idempotency_key(
                        "customer.default_card", customer_id, payment_method_id, request_id
                    )
                },
            ),
            customer_id=customer_id,
            payment_method_id=payment_method_id,
        )

    def create_setup_intent(
        self, stripe_customer_id: str, *, customer_id: str, request_id: str
    ) -> tuple[str, str]:
        """(SetupIntent ID, client_secret) for saving a card for off-session use."""
        intent = self._call(
            "setup_intent.create",
            lambda: self._client.v1.setup_intents.create(
                params={
                    "customer": stripe_customer_id,
                    "usage": "off_session",
                    "metadata": {"customer_id": customer_id},
                },
                options={
                    "idempotency_key": idempotency_key(
                        "setup_intent.create", customer_id, request_id
                    )
                },
            ),
            customer_id=customer_id,
        )
        return intent.id, str(intent.client_secret)

    # -- payment intents -----------------------------------------------------------------

    def create_payment_intent(
        self,
        *,
        payment_id: str,
        amount: int,
        currency: str,
        stripe_customer_id: str,
        metadata: dict[str, str],
        receipt_email: str | None,
        description: str,
        payment_method_id: str | None = None,
        off_session: bool = False,
        save_card: bool = False,
    ) -> StripePaymentIntent:
        """Create an intent; with `off_session`, confirm it at once against the saved card
        (the customer is not there: a card that needs authentication fails)."""
        params: dict[str, Any] = {
            "amount": amount,
            "currency": currency,
            "customer": stripe_customer_id,
            "metadata": {"payment_id": payment_id, **metadata},
            "description": description,
            "automatic_payment_methods": {"enabled": True},
        }
        if receipt_email:
            params["receipt_email"] = receipt_email
        if payment_method_id:
            params["payment_method"] = payment_method_id
        if off_session:
            params.update(confirm=True, off_session=True)
            del params["automatic_payment_methods"]
        if save_card:
            params["setup_future_usage"] = "off_session"
        return self._call(
            "payment_intent.create",
            lambda: _intent(
                self._client.v1.payment_intents.create(
                    params=params,  # type: ignore[arg-type]
                    options={
                        "idempotency_key": idempotency_key("payment_intent.create", payment_id)
                    },
                )
            ),
            payment_id=payment_id,
        )

    def confirm_payment_intent(
        self, payment_intent_id: str, *, payment_id: str, attempt: int
    ) -> StripePaymentIntent:
        return self._call(
            "payment_intent.confirm",
            lambda: _intent(
                self._client.v1.payment_intents.confirm(
                    payment_intent_id,
                    options={
                        "idempotency_key": idempotency_key(
                            "payment_intent.confirm", payment_id, attempt
                        )
                    },
                )
            ),
            payment_id=payment_id,
            payment_intent_id=payment_intent_id,
        )

    def set_intent_payment_method(
        self, payment_intent_id: str, payment_method_id: str, *, payment_id: str
    ) -> StripePaymentIntent:
        return self._call(
            "payment_intent.update",
            lambda: _intent(
                self._client.v1.payment_intents.update(
                    payment_intent_id,
                    params={"payment_method": payment_method_id},
                    options={
                        "idempotency_key": idempotency_key(
                            "payment_intent.payment_method", payment_id, payment_method_id
                        )
                    },
                )
            ),
            payment_id=payment_id,
            payment_intent_id=payment_intent_id,
        )

    def find_payment_intent(
        self, stripe_customer_id: str, payment_id: str
    ) -> StripePaymentIntent | None:
        """The customer's intent made for our payment, if a lost try already made one."""

        def find() -> StripePaymentIntent | None:
            page = self._client.v1.payment_intents.list(
                params={"customer": stripe_customer_id, "limit": 100}
            )
            for obj in page.auto_paging_iter():
                intent = _intent(obj)
                if intent.metadata.get("payment_id") == payment_id:
                    return intent
            return None

        return self._call("payment_intent.find", find, payment_id=payment_id)

    def retrieve_payment_intent(self, payment_intent_id: str) -> StripePaymentIntent:
        return self._call(
            "payment_intent.retrieve",
            lambda: _intent(self._client.v1.payment_intents.retrieve(payment_intent_id)),
            payment_intent_id=payment_intent_id,
        )

    # -- refunds ----------------------------------------------------------------------------

    def create_refund(
        self,
        *,
        refund_id: str,
        payment_id: str,
        payment_intent_id: str,
        amount: int,
        reason: str | None,
    ) -> StripeRefund:
        params: dict[str, Any] = {
            "payment_intent": payment_intent_id,
            "amount": amount,
            "metadata": {"refund_id": refund_id, "payment_id": payment_id},
        }
        if reason:
            params["reason"] = reason
        return self._call(
            "refund.create",
            lambda: _refund(
                self._client.v1.refunds.create(
                    params=params,  # type: ignore[arg-type]
                    options={"idempotency_key": idempotency_key("refund.create", refund_id)},
                )
            ),
            refund_id=refund_id,
            payment_id=payment_id,
        )

    def list_refunds(self, payment_intent_id: str) -> list[StripeRefund]:
        def refunds() -> list[StripeRefund]:
            page = self._client.v1.refunds.list(
                params={"payment_intent": payment_intent_id, "limit": 100}
            )
            return [_refund(r) for r in page.auto_paging_iter()]

        return self._call("refund.list", refunds, payment_intent_id=payment_intent_id)

    # -- subscriptions -----------------------------------------------------------------

    def create_checkout_session(
        self,
        *,
        request_id: str,
        stripe_customer_id: str,
        price_id: str,
        success_url: str,
        cancel_url: str,
        metadata: dict[str, str],
        trial_days: int | None = None,
    ) -> str:
        """A Checkout Session in subscription mode; answers the URL to send the customer to."""
        subscription_data: dict[str, Any] = {"metadata": metadata}
        if trial_days:
            subscription_data["trial_period_days"] = trial_days
        params: dict[str, Any] = {
            "mode": "subscription",
            "customer": stripe_customer_id,
            "line_items": [{"price": price_id, "quantity": 1}],
            "success_url": success_url,
            "cancel_url": cancel_url,
            "client_reference_id": metadata["customer_id"],
            "metadata": metadata,
            "subscription_data": subscription_data,
        }
        session = self._call(
            "checkout_session.create",
            lambda: self._client.v1.checkout.sessions.create(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": idempotency_key("checkout.create", request_id)},
            ),
            customer_id=metadata["customer_id"],
        )
        return str(session.url)

    def create_portal_session(self, stripe_customer_id: str, *, return_url: str) -> str:
        session = self._call(
            "billing_portal_session.create",
            lambda: self._client.v1.billing_portal.sessions.create(
                params={"customer": stripe_customer_id, "return_url": return_url}
            ),
            stripe_customer_id=stripe_customer_id,
        )
        return str(session.url)

    def retrieve_subscription(self, subscription_id: str) -> StripeSubscription:
        return self._call(
            "subscription.retrieve",
            lambda: parse_subscription(self._client.v1.subscriptions.retrieve(subscription_id)),
            subscription_id=subscription_id,
        )

    def update_subscription(
        self, subscription_id: str, *, key: str, params: dict[str, Any]
    ) -> StripeSubscription:
        return self._call(
            "subscription.update",
            lambda: parse_subscription(
                self._client.v1.subscriptions.update(
                    subscription_id,
                    params=params,  # type: ignore[arg-type]
                    options={"idempotency_key": key},
                )
            ),
            subscription_id=subscription_id,
        )

    def cancel_subscription(self, subscription_id: str, *, key: str) -> StripeSubscription:
        return self._call(
            "subscription.cancel",
            lambda: parse_subscription(
                self._client.v1.subscriptions.cancel(
                    subscription_id, options={"idempotency_key": key}
                )
            ),
            subscription_id=subscription_id,
        )

    def ensure_recurring_price(
        self, price_id: str, *, name: str, amount: int, currency: str, interval: str
    ) -> str:
        """A recurring price with a chosen ID (created as a legacy Plan, which Stripe and the
        stand-in both treat as a price); for seeding a demo catalog."""
        try:
            return self._call("plan.retrieve", lambda: self._client.v1.plans.retrieve(price_id).id)
        except StripeNotFound:
            pass
        return self._call(
            "plan.create",
            lambda: (
                self._client.v1.plans.create(
                    params={
                        "id": price_id,
                        "amount": amount,
                        "currency": currency,
                        "interval": interval,
                        "product": {"name": name},
                    },
                    options={"idempotency_key": idempotency_key("plan.create", price_id)},
                ).id
            ),
        )

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
        if not (
            isinstance(event, dict)
            and isinstance(event.get("id"), str)
            and isinstance(event.get("type"), str)
            and isinstance(event.get("created"), int)
        ):
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
