"""The synchronous client. `_async.py` is generated from this file (scripts/unasync.py):
edit this one and regenerate."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from types import TracebackType
from typing import Any, TypeVar

import httpx

from billfold_client import _operations as ops
from billfold_client._core import USER_AGENT, Retry, headers_for, network_error, read, wait_before
from billfold_client.types import (
    JSON,
    Balance,
    Consumed,
    Delivery,
    EntitlementCheck,
    Entitlements,
    Transaction,
    WebhookEndpoint,
    WebhookEndpointWithSecret,
)

T = TypeVar("T")


class Billfold:
    """Billfold's API for a host backend: `Billfold(base_url, api_key="bf_sk_…")`.

    Every mutating call carries an Idempotency-Key (pass `idempotency_key=`, or one is made
    per call) that each retry reuses; network errors, 5xx, 429 and a 409 for a request still
    in progress are retried `max_retries` times with jittered backoff.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        max_retries: int = 3,
        backoff: float = 0.25,
        http_client: httpx.Client | None = None,
    ) -> None:
        credential = api_key or token
        headers = {"User-Agent": USER_AGENT}
        if credential:
            headers["Authorization"] = f"Bearer {credential}"
        self._http = http_client or httpx.Client(base_url=base_url, timeout=timeout)
        self._http.headers.update(headers)
        if http_client is not None:
            self._http.base_url = httpx.URL(base_url)
        self._max_retries = max_retries
        self._backoff = backoff

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Billfold:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _run(self, op: ops.Op[T]) -> T:
        headers = headers_for(op)
        attempt = 0
        while True:
            try:
                response = self._http.request(
                    op.method, op.path, params=op.params or None, json=op.body, headers=headers
                )
            except httpx.TransportError as exc:
                outcome: Any = network_error(exc)
            else:
                outcome = read(response)
            if not isinstance(outcome, Retry):
                result: T = outcome
                return result
            if attempt >= self._max_retries:
                raise outcome.error
            time.sleep(wait_before(attempt, outcome, self._backoff))
            attempt += 1

    # -- users and customers --------------------------------------------------------------

    def create_user(
        self,
        name: str,
        email: str,
        password: str,
        *,
        company_name: str | None = None,
        phone: str | None = None,
        metadata: dict[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> JSON:
        """Register a user (and their customer); answers the user and an access token.
        `phone` and `metadata` are mirrored to the Stripe customer."""
        return self._run(
            ops.create_user(name, email, password, company_name, idempotency_key, phone, metadata)
        )

    def get_user(self, user_id: str) -> JSON:
        return self._run(ops.get_user(user_id))

    def update_user(
        self, user_id: str, *, idempotency_key: str | None = None, **changes: Any
    ) -> JSON:
        """Change `name`, `email`, `companyName`, `phone`, `metadata` or `password` (camelCase
        keys)."""
        return self._run(ops.update_user(user_id, changes, idempotency_key))

    def delete_user(self, user_id: str, *, idempotency_key: str | None = None) -> JSON:
        return self._run(ops.delete_user(user_id, idempotency_key))

    def export_user(self, user_id: str) -> JSON:
        return self._run(ops.export_user(user_id))

    def find_customers(
        self,
        *,
        email: str | None = None,
        stripe_customer_id: str | None = None,
        customer_id: str | None = None,
    ) -> list[JSON]:
        return self._run(ops.find_customers(email, stripe_customer_id, customer_id))

    def get_customer(self, customer_id: str) -> JSON:
        return self._run(ops.get_customer(customer_id))

    # -- credits --------------------------------------------------------------------------

    def consume(
        self,
        customer_id: str,
        amount: int,
        *,
        idempotency_key: str | None = None,
        reason: str | None = None,
    ) -> Consumed:
        """Spend credits once per key (made per call when not given; retries reuse it)."""
        key = idempotency_key or f"bfc_{uuid.uuid4().hex}"
        return self._run(ops.consume(customer_id, amount, key, reason))

    def balance(self, customer_id: str) -> Balance:
        return self._run(ops.balance(customer_id))

    def iter_transactions(self, customer_id: str, *, page_size: int = 100) -> Iterator[Transaction]:
        """The customer's ledger, newest first, page after page."""
        cursor: int | None = None
        while True:
            page = self._run(ops.transactions(customer_id, cursor, page_size))
            yield from page["transactions"]
            cursor = page["nextCursor"]
            if cursor is None:
                return

    def grant_credits(
        self,
        customer_id: str,
        amount: int,
        *,
        reason: str,
        idempotency_key: str,
        kind: str = "grant",
    ) -> JSON:
        return self._run(ops.grant_credits(customer_id, amount, kind, reason, idempotency_key))

    def credit_packages(self) -> list[JSON]:
        return self._run(ops.credit_packages())

    def purchase_credits(
        self, customer_id: str, *, idempotency_key: str | None = None, **body: Any
    ) -> JSON:
        """`packageId=` or `customAmount=`, and `paymentMethodId=` to charge a saved card."""
        return self._run(ops.purchase_credits(customer_id, body, idempotency_key))

    def auto_recharge(self, customer_id: str) -> JSON:
        return self._run(ops.auto_recharge(customer_id))

    def set_auto_recharge(
        self, customer_id: str, *, idempotency_key: str | None = None, **settings: Any
    ) -> JSON:
        return self._run(ops.set_auto_recharge(customer_id, settings, idempotency_key))

    def trigger_auto_recharge(
        self, customer_id: str, *, idempotency_key: str | None = None
    ) -> JSON:
        return self._run(ops.trigger_auto_recharge(customer_id, idempotency_key))

    # -- entitlements ---------------------------------------------------------------------

    def check_entitlement(
        self, customer_id: str, feature: str, amount: int | None = None
    ) -> EntitlementCheck:
        """May the customer use `feature` (`amount` of it) now, and what remains."""
        return self._run(ops.check_entitlement(customer_id, feature, amount))

    def entitlements(self, customer_id: str) -> Entitlements:
        return self._run(ops.entitlements(customer_id))

    # -- subscriptions and licenses -------------------------------------------------------

    def plans(self) -> list[JSON]:
        return self._run(ops.plans())

    def subscription(self, customer_id: str) -> JSON:
        return self._run(ops.subscription(customer_id))

    def checkout(
        self,
        customer_id: str,
        plan: str,
        *,
        success_url: str,
        cancel_url: str,
        idempotency_key: str | None = None,
    ) -> JSON:
        return self._run(ops.checkout(customer_id, plan, success_url, cancel_url, idempotency_key))

    def cancel_subscription(
        self, customer_id: str, *, at_period_end: bool = True, idempotency_key: str | None = None
    ) -> JSON:
        return self._run(ops.cancel_subscription(customer_id, at_period_end, idempotency_key))

    def change_plan(
        self,
        customer_id: str,
        plan: str,
        *,
        proration_behavior: str | None = None,
        proration_date: str | None = None,
        when: str | None = None,
        idempotency_key: str | None = None,
    ) -> JSON:
        """`proration_date` from a preview makes the change charge what the preview said;
        `when="period_end"` sets a downgrade for the period's end (`pendingChange`)."""
        return self._run(
            ops.change_plan(
                customer_id, plan, proration_behavior, proration_date, idempotency_key, when
            )
        )

    def cancel_plan_change(self, customer_id: str, *, idempotency_key: str | None = None) -> JSON:
        """Drop the plan change set for the period end."""
        return self._run(ops.cancel_plan_change(customer_id, idempotency_key))

    def preview_plan_change(
        self,
        customer_id: str,
        plan: str,
        *,
        proration_behavior: str | None = None,
        when: str | None = None,
    ) -> JSON:
        """What a change to `plan` would charge now and at the renewal (`dueNow`, ...);
        `when="period_end"` previews a downgrade set for the period's end (nothing now)."""
        return self._run(ops.preview_plan_change(customer_id, plan, proration_behavior, when))

    def pause_subscription(
        self,
        customer_id: str,
        *,
        behavior: str = "void",
        resumes_at: str | None = None,
        idempotency_key: str | None = None,
    ) -> JSON:
        """Pause collection (`void`, `keep_as_draft` or `mark_uncollectible` renewals)."""
        return self._run(ops.pause_subscription(customer_id, behavior, resumes_at, idempotency_key))

    def invoices(
        self, customer_id: str, *, status: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[JSON]:
        return self._run(ops.invoices(customer_id, status, limit, offset))

    def iter_invoices(
        self, customer_id: str, *, status: str | None = None, page_size: int = 50
    ) -> Iterator[JSON]:
        """The customer's invoices, page after page."""
        offset = 0
        while True:
            page = self._run(ops.invoices(customer_id, status, page_size, offset))
            yield from page
            if len(page) < page_size:
                return
            offset += page_size

    def billing_portal(
        self, customer_id: str, *, return_url: str, idempotency_key: str | None = None
    ) -> JSON:
        return self._run(ops.billing_portal(customer_id, return_url, idempotency_key))

    def resume_subscription(self, customer_id: str, *, idempotency_key: str | None = None) -> JSON:
        """Undo a cancel-at-period-end before the period ends."""
        return self._run(ops.resume_subscription(customer_id, idempotency_key))

    def billing_session(
        self,
        customer_id: str,
        *,
        return_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> JSON:
        """A one-time sign-in link to the customer's billing pages (`url`, `expiresAt`)."""
        return self._run(ops.billing_session(customer_id, return_url, idempotency_key))

    def license(self, customer_id: str) -> JSON:
        return self._run(ops.license(customer_id))

    def verify_license_online(self, token: str) -> JSON:
        return self._run(ops.verify_license_online(token))

    def license_revocations(self) -> JSON:
        """The signed list of superseded licenses (`token` is a JWT of the license key)."""
        return self._run(ops.license_revocations())

    def license_public_key(self) -> JSON:
        return self._run(ops.license_public_key())

    def jwks(self) -> JSON:
        return self._run(ops.jwks())

    # -- payments, orders, products -------------------------------------------------------

    def payments_config(self) -> JSON:
        return self._run(ops.payments_config())

    def payments(
        self, *, customer_id: str | None = None, status: str | None = None, limit: int = 100
    ) -> list[JSON]:
        return self._run(ops.payments(customer_id, status, limit))

    def payment(self, payment_id: str) -> JSON:
        return self._run(ops.payment(payment_id))

    def create_payment_intent(
        self, customer_id: str, *, idempotency_key: str | None = None, **body: Any
    ) -> JSON:
        """`orderId=`, or `productId=` and `quantity=`; `paymentMethodId=` pays at once."""
        return self._run(ops.create_payment_intent(customer_id, body, idempotency_key))

    def confirm_payment(
        self, payment_intent_id: str, *, idempotency_key: str | None = None
    ) -> JSON:
        return self._run(ops.confirm_payment(payment_intent_id, idempotency_key))

    def refund_payment(
        self, payment_id: str, *, idempotency_key: str | None = None, **body: Any
    ) -> JSON:
        """`amount=` (default: all that is left), `reason=`, `notes=`."""
        return self._run(ops.refund_payment(payment_id, body, idempotency_key))

    def payment_methods(self, customer_id: str) -> list[JSON]:
        return self._run(ops.payment_methods(customer_id))

    def attach_payment_method(
        self, customer_id: str, payment_method_id: str, *, idempotency_key: str | None = None
    ) -> JSON:
        return self._run(ops.attach_payment_method(customer_id, payment_method_id, idempotency_key))

    def detach_payment_method(
        self, customer_id: str, payment_method_id: str, *, idempotency_key: str | None = None
    ) -> JSON:
        return self._run(ops.detach_payment_method(customer_id, payment_method_id, idempotency_key))

    def set_default_payment_method(
        self, customer_id: str, payment_method_id: str, *, idempotency_key: str | None = None
    ) -> JSON:
        return self._run(
            ops.set_default_payment_method(customer_id, payment_method_id, idempotency_key)
        )

    def setup_intent(self, customer_id: str, *, idempotency_key: str | None = None) -> JSON:
        return self._run(ops.setup_intent(customer_id, idempotency_key))

    def products(self) -> list[JSON]:
        return self._run(ops.products())

    def product(self, product_id: str) -> JSON:
        return self._run(ops.product(product_id))

    def create_order(
        self,
        customer_id: str,
        items: list[dict[str, Any]],
        *,
        idempotency_key: str | None = None,
    ) -> JSON:
        """`items`: `[{"productId": …, "quantity": …}]`."""
        return self._run(ops.create_order(customer_id, items, idempotency_key))

    def orders(
        self, *, customer_id: str | None = None, status: str | None = None, limit: int = 100
    ) -> list[JSON]:
        return self._run(ops.orders(customer_id, status, limit))

    def order(self, order_id: str) -> JSON:
        return self._run(ops.order(order_id))

    def cancel_order(self, order_id: str, *, idempotency_key: str | None = None) -> JSON:
        return self._run(ops.cancel_order(order_id, idempotency_key))

    # -- outbound webhook endpoints -------------------------------------------------------

    def webhook_event_types(self) -> list[JSON]:
        return self._run(ops.webhook_event_types())

    def create_webhook_endpoint(
        self,
        url: str,
        *,
        event_types: list[str] | None = None,
        description: str | None = None,
        idempotency_key: str | None = None,
    ) -> WebhookEndpointWithSecret:
        """Answers the endpoint with its `secret` (shown only now: keep it)."""
        return self._run(
            ops.create_webhook_endpoint(url, event_types, description, idempotency_key)
        )

    def webhook_endpoints(self) -> list[WebhookEndpoint]:
        return self._run(ops.webhook_endpoints())

    def webhook_endpoint(self, endpoint_id: str) -> WebhookEndpoint:
        return self._run(ops.webhook_endpoint(endpoint_id))

    def update_webhook_endpoint(
        self, endpoint_id: str, *, idempotency_key: str | None = None, **changes: Any
    ) -> WebhookEndpoint:
        """`url=`, `description=`, `eventTypes=` (None: all) or `enabled=`."""
        return self._run(ops.update_webhook_endpoint(endpoint_id, changes, idempotency_key))

    def delete_webhook_endpoint(
        self, endpoint_id: str, *, idempotency_key: str | None = None
    ) -> None:
        self._run(ops.delete_webhook_endpoint(endpoint_id, idempotency_key))

    def rotate_webhook_secret(
        self, endpoint_id: str, *, idempotency_key: str | None = None
    ) -> WebhookEndpointWithSecret:
        return self._run(ops.rotate_webhook_secret(endpoint_id, idempotency_key))

    def iter_webhook_deliveries(
        self, endpoint_id: str, *, page_size: int = 100
    ) -> Iterator[Delivery]:
        """The endpoint's delivery log, newest first, page after page."""
        cursor: str | None = None
        while True:
            page = self._run(ops.webhook_deliveries(endpoint_id, cursor, page_size))
            yield from page["deliveries"]
            cursor = page["nextCursor"]
            if cursor is None:
                return

    def redeliver_webhook(
        self, endpoint_id: str, delivery_id: str, *, idempotency_key: str | None = None
    ) -> Delivery:
        return self._run(ops.redeliver_webhook(endpoint_id, delivery_id, idempotency_key))
