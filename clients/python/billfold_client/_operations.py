"""Every Billfold operation the client calls, built once for the sync and async clients.

Each builder is registered with its method and path template, so a test can hold the list
against Billfold's /openapi.json.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, ParamSpec, TypeVar
from urllib.parse import quote

from billfold_client.types import (
    JSON,
    Balance,
    Consumed,
    DeliveriesPage,
    Delivery,
    EntitlementCheck,
    Entitlements,
    TransactionsPage,
    WebhookEndpoint,
    WebhookEndpointWithSecret,
)

T = TypeVar("T")
P = ParamSpec("P")

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# (method, path template) of every operation below.
OPERATIONS: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class Op(Generic[T]):
    method: str
    path: str
    params: dict[str, Any] = field(default_factory=dict)
    body: Any = None
    # Sent as Idempotency-Key on a mutating call (one is made per call when None).
    idempotency_key: str | None = None
    # False for consume: its key travels in the body, and the header would take it off
    # Billfold's fast path.
    header_key: bool = True


def _operation(method: str, template: str) -> Callable[[Callable[P, Op[T]]], Callable[P, Op[T]]]:
    def register(builder: Callable[P, Op[T]]) -> Callable[P, Op[T]]:
        OPERATIONS.add((method, template))
        return builder

    return register


def _p(value: str) -> str:
    return quote(value, safe="")


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


# -- users and customers ------------------------------------------------------------------


@_operation("POST", "/users")
def create_user(
    name: str,
    email: str,
    password: str,
    company_name: str | None,
    key: str | None,
    phone: str | None = None,
    metadata: dict[str, str] | None = None,
) -> Op[JSON]:
    body = _drop_none(
        {
            "name": name,
            "email": email,
            "password": password,
            "companyName": company_name,
            "phone": phone,
            "metadata": metadata,
        }
    )
    return Op("POST", "/users", body=body, idempotency_key=key)


@_operation("GET", "/users/{user_id}")
def get_user(user_id: str) -> Op[JSON]:
    return Op("GET", f"/users/{_p(user_id)}")


@_operation("PATCH", "/users/{user_id}")
def update_user(user_id: str, changes: dict[str, Any], key: str | None) -> Op[JSON]:
    return Op("PATCH", f"/users/{_p(user_id)}", body=changes, idempotency_key=key)


@_operation("DELETE", "/users/{user_id}")
def delete_user(user_id: str, key: str | None) -> Op[JSON]:
    return Op("DELETE", f"/users/{_p(user_id)}", idempotency_key=key)


@_operation("GET", "/users/{user_id}/export")
def export_user(user_id: str) -> Op[JSON]:
    return Op("GET", f"/users/{_p(user_id)}/export")


@_operation("GET", "/customers")
def find_customers(
    email: str | None, stripe_customer_id: str | None, customer_id: str | None
) -> Op[list[JSON]]:
    params = _drop_none(
        {"email": email, "stripeCustomerId": stripe_customer_id, "customerId": customer_id}
    )
    return Op("GET", "/customers", params=params)


@_operation("GET", "/customers/{customer_id}")
def get_customer(customer_id: str) -> Op[JSON]:
    return Op("GET", f"/customers/{_p(customer_id)}")


# -- credits ------------------------------------------------------------------------------


@_operation("POST", "/credits/consume")
def consume(
    customer_id: str, amount: int, idempotency_key: str, reason: str | None
) -> Op[Consumed]:
    body = _drop_none(
        {
            "customerId": customer_id,
            "amount": amount,
            "idempotencyKey": idempotency_key,
            "reason": reason,
        }
    )
    return Op(
        "POST", "/credits/consume", body=body, idempotency_key=idempotency_key, header_key=False
    )


@_operation("GET", "/credits/balance")
def balance(customer_id: str) -> Op[Balance]:
    return Op("GET", "/credits/balance", params={"customerId": customer_id})


@_operation("GET", "/credits/transactions")
def transactions(customer_id: str, cursor: int | None, limit: int) -> Op[TransactionsPage]:
    params = _drop_none({"customerId": customer_id, "cursor": cursor, "limit": limit})
    return Op("GET", "/credits/transactions", params=params)


@_operation("POST", "/credits/grants")
def grant_credits(
    customer_id: str, amount: int, kind: str, reason: str, idempotency_key: str
) -> Op[JSON]:
    body = {
        "customerId": customer_id,
        "amount": amount,
        "kind": kind,
        "reason": reason,
        "idempotencyKey": idempotency_key,
    }
    return Op("POST", "/credits/grants", body=body, idempotency_key=idempotency_key)


@_operation("GET", "/credits/packages")
def credit_packages() -> Op[list[JSON]]:
    return Op("GET", "/credits/packages")


@_operation("POST", "/credits/purchase")
def purchase_credits(customer_id: str, body: dict[str, Any], key: str | None) -> Op[JSON]:
    return Op(
        "POST", "/credits/purchase", body={"customerId": customer_id, **body}, idempotency_key=key
    )


@_operation("GET", "/credits/auto-recharge")
def auto_recharge(customer_id: str) -> Op[JSON]:
    return Op("GET", "/credits/auto-recharge", params={"customerId": customer_id})


@_operation("PUT", "/credits/auto-recharge")
def set_auto_recharge(customer_id: str, settings: dict[str, Any], key: str | None) -> Op[JSON]:
    return Op(
        "PUT",
        "/credits/auto-recharge",
        params={"customerId": customer_id},
        body=settings,
        idempotency_key=key,
    )


@_operation("POST", "/credits/auto-recharge/trigger")
def trigger_auto_recharge(customer_id: str, key: str | None) -> Op[JSON]:
    return Op(
        "POST",
        "/credits/auto-recharge/trigger",
        params={"customerId": customer_id},
        idempotency_key=key,
    )


# -- entitlements -------------------------------------------------------------------------


@_operation("POST", "/entitlements/check")
def check_entitlement(customer_id: str, feature: str, amount: int | None) -> Op[EntitlementCheck]:
    body = _drop_none({"customerId": customer_id, "feature": feature, "amount": amount})
    # A question, not a change: no key needed, and a retry is harmless.
    return Op("POST", "/entitlements/check", body=body, header_key=False)


@_operation("GET", "/entitlements/{customer_id}")
def entitlements(customer_id: str) -> Op[Entitlements]:
    return Op("GET", f"/entitlements/{_p(customer_id)}")


# -- subscriptions and licenses -----------------------------------------------------------


@_operation("GET", "/plans")
def plans() -> Op[list[JSON]]:
    return Op("GET", "/plans")


@_operation("GET", "/subscriptions/me")
def subscription(customer_id: str) -> Op[JSON]:
    return Op("GET", "/subscriptions/me", params={"customerId": customer_id})


@_operation("POST", "/subscriptions/checkout")
def checkout(
    customer_id: str, plan: str, success_url: str, cancel_url: str, key: str | None
) -> Op[JSON]:
    body = {
        "customerId": customer_id,
        "plan": plan,
        "success_url": success_url,
        "cancel_url": cancel_url,
    }
    return Op("POST", "/subscriptions/checkout", body=body, idempotency_key=key)


@_operation("POST", "/subscriptions/cancel")
def cancel_subscription(customer_id: str, at_period_end: bool, key: str | None) -> Op[JSON]:
    body = {"customerId": customer_id, "atPeriodEnd": at_period_end}
    return Op("POST", "/subscriptions/cancel", body=body, idempotency_key=key)


@_operation("POST", "/subscriptions/change-plan")
def change_plan(
    customer_id: str,
    plan: str,
    proration_behavior: str | None,
    proration_date: str | None,
    key: str | None,
    when: str | None = None,
) -> Op[JSON]:
    body = _drop_none(
        {
            "customerId": customer_id,
            "plan": plan,
            "prorationBehavior": proration_behavior,
            "prorationDate": proration_date,
            "when": when,
        }
    )
    return Op("POST", "/subscriptions/change-plan", body=body, idempotency_key=key)


@_operation("POST", "/subscriptions/change-plan/cancel")
def cancel_plan_change(customer_id: str, key: str | None) -> Op[JSON]:
    body = {"customerId": customer_id}
    return Op("POST", "/subscriptions/change-plan/cancel", body=body, idempotency_key=key)


@_operation("GET", "/subscriptions/change-plan/preview")
def preview_plan_change(
    customer_id: str, plan: str, proration_behavior: str | None, when: str | None = None
) -> Op[JSON]:
    params = _drop_none(
        {
            "customerId": customer_id,
            "plan": plan,
            "prorationBehavior": proration_behavior,
            "when": when,
        }
    )
    return Op("GET", "/subscriptions/change-plan/preview", params=params)


@_operation("POST", "/subscriptions/pause")
def pause_subscription(
    customer_id: str, behavior: str, resumes_at: str | None, key: str | None
) -> Op[JSON]:
    body = _drop_none({"customerId": customer_id, "behavior": behavior, "resumesAt": resumes_at})
    return Op("POST", "/subscriptions/pause", body=body, idempotency_key=key)


@_operation("GET", "/invoices")
def invoices(customer_id: str, status: str | None, limit: int, offset: int) -> Op[list[JSON]]:
    params = _drop_none(
        {"customerId": customer_id, "status": status, "limit": limit, "offset": offset}
    )
    return Op("GET", "/invoices", params=params)


@_operation("POST", "/subscriptions/portal")
def billing_portal(customer_id: str, return_url: str, key: str | None) -> Op[JSON]:
    body = {"customerId": customer_id, "return_url": return_url}
    return Op("POST", "/subscriptions/portal", body=body, idempotency_key=key)


@_operation("POST", "/subscriptions/resume")
def resume_subscription(customer_id: str, key: str | None) -> Op[JSON]:
    body = {"customerId": customer_id}
    return Op("POST", "/subscriptions/resume", body=body, idempotency_key=key)


@_operation("POST", "/billing/sessions")
def billing_session(customer_id: str, return_url: str | None, key: str | None) -> Op[JSON]:
    body = _drop_none({"customerId": customer_id, "returnUrl": return_url})
    return Op("POST", "/billing/sessions", body=body, idempotency_key=key)


@_operation("GET", "/licenses/me")
def license(customer_id: str) -> Op[JSON]:
    return Op("GET", "/licenses/me", params={"customerId": customer_id})


@_operation("POST", "/licenses/verify")
def verify_license_online(token: str) -> Op[JSON]:
    return Op("POST", "/licenses/verify", body={"token": token}, header_key=False)


@_operation("GET", "/licenses/revocations")
def license_revocations() -> Op[JSON]:
    return Op("GET", "/licenses/revocations")


@_operation("GET", "/licenses/public-key")
def license_public_key() -> Op[JSON]:
    return Op("GET", "/licenses/public-key")


@_operation("GET", "/.well-known/jwks.json")
def jwks() -> Op[JSON]:
    return Op("GET", "/.well-known/jwks.json")


# -- payments, orders, products -----------------------------------------------------------


@_operation("GET", "/payments/config")
def payments_config() -> Op[JSON]:
    return Op("GET", "/payments/config")


@_operation("GET", "/payments")
def payments(customer_id: str | None, status: str | None, limit: int) -> Op[list[JSON]]:
    params = _drop_none({"customerId": customer_id, "status": status, "limit": limit})
    return Op("GET", "/payments", params=params)


@_operation("GET", "/payments/{payment_id}")
def payment(payment_id: str) -> Op[JSON]:
    return Op("GET", f"/payments/{_p(payment_id)}")


@_operation("POST", "/payments/create-intent")
def create_payment_intent(customer_id: str, body: dict[str, Any], key: str | None) -> Op[JSON]:
    return Op(
        "POST",
        "/payments/create-intent",
        body={"customerId": customer_id, **body},
        idempotency_key=key,
    )


@_operation("POST", "/payments/confirm")
def confirm_payment(payment_intent_id: str, key: str | None) -> Op[JSON]:
    body = {"payment_intent_id": payment_intent_id}
    return Op("POST", "/payments/confirm", body=body, idempotency_key=key)


@_operation("POST", "/payments/{payment_id}/refund")
def refund_payment(payment_id: str, body: dict[str, Any], key: str | None) -> Op[JSON]:
    return Op("POST", f"/payments/{_p(payment_id)}/refund", body=body, idempotency_key=key)


@_operation("GET", "/payments/customer/payment-methods")
def payment_methods(customer_id: str) -> Op[list[JSON]]:
    return Op("GET", "/payments/customer/payment-methods", params={"customerId": customer_id})


@_operation("POST", "/payments/customer/payment-methods")
def attach_payment_method(customer_id: str, payment_method_id: str, key: str | None) -> Op[JSON]:
    return Op(
        "POST",
        "/payments/customer/payment-methods",
        params={"customerId": customer_id},
        body={"paymentMethodId": payment_method_id},
        idempotency_key=key,
    )


@_operation("DELETE", "/payments/customer/payment-methods/{payment_method_id}")
def detach_payment_method(customer_id: str, payment_method_id: str, key: str | None) -> Op[JSON]:
    return Op(
        "DELETE",
        f"/payments/customer/payment-methods/{_p(payment_method_id)}",
        params={"customerId": customer_id},
        idempotency_key=key,
    )


@_operation("PATCH", "/payments/customer/default-payment-method")
def set_default_payment_method(
    customer_id: str, payment_method_id: str, key: str | None
) -> Op[JSON]:
    return Op(
        "PATCH",
        "/payments/customer/default-payment-method",
        params={"customerId": customer_id},
        body={"paymentMethodId": payment_method_id},
        idempotency_key=key,
    )


@_operation("POST", "/payments/customer/setup-intent")
def setup_intent(customer_id: str, key: str | None) -> Op[JSON]:
    return Op(
        "POST",
        "/payments/customer/setup-intent",
        params={"customerId": customer_id},
        idempotency_key=key,
    )


@_operation("GET", "/products")
def products() -> Op[list[JSON]]:
    return Op("GET", "/products")


@_operation("GET", "/products/{product_id}")
def product(product_id: str) -> Op[JSON]:
    return Op("GET", f"/products/{_p(product_id)}")


@_operation("POST", "/orders")
def create_order(customer_id: str, items: list[dict[str, Any]], key: str | None) -> Op[JSON]:
    return Op(
        "POST",
        "/orders",
        params={"customerId": customer_id},
        body={"items": items},
        idempotency_key=key,
    )


@_operation("GET", "/orders")
def orders(customer_id: str | None, status: str | None, limit: int) -> Op[list[JSON]]:
    params = _drop_none({"customerId": customer_id, "status": status, "limit": limit})
    return Op("GET", "/orders", params=params)


@_operation("GET", "/orders/{order_id}")
def order(order_id: str) -> Op[JSON]:
    return Op("GET", f"/orders/{_p(order_id)}")


@_operation("POST", "/orders/{order_id}/cancel")
def cancel_order(order_id: str, key: str | None) -> Op[JSON]:
    return Op("POST", f"/orders/{_p(order_id)}/cancel", idempotency_key=key)


# -- outbound webhook endpoints -----------------------------------------------------------


@_operation("GET", "/webhook-event-types")
def webhook_event_types() -> Op[list[JSON]]:
    return Op("GET", "/webhook-event-types")


@_operation("POST", "/webhook-endpoints")
def create_webhook_endpoint(
    url: str, event_types: list[str] | None, description: str | None, key: str | None
) -> Op[WebhookEndpointWithSecret]:
    body = _drop_none({"url": url, "eventTypes": event_types, "description": description})
    return Op("POST", "/webhook-endpoints", body=body, idempotency_key=key)


@_operation("GET", "/webhook-endpoints")
def webhook_endpoints() -> Op[list[WebhookEndpoint]]:
    return Op("GET", "/webhook-endpoints")


@_operation("GET", "/webhook-endpoints/{endpoint_id}")
def webhook_endpoint(endpoint_id: str) -> Op[WebhookEndpoint]:
    return Op("GET", f"/webhook-endpoints/{_p(endpoint_id)}")


@_operation("PATCH", "/webhook-endpoints/{endpoint_id}")
def update_webhook_endpoint(
    endpoint_id: str, changes: dict[str, Any], key: str | None
) -> Op[WebhookEndpoint]:
    return Op("PATCH", f"/webhook-endpoints/{_p(endpoint_id)}", body=changes, idempotency_key=key)


@_operation("DELETE", "/webhook-endpoints/{endpoint_id}")
def delete_webhook_endpoint(endpoint_id: str, key: str | None) -> Op[None]:
    return Op("DELETE", f"/webhook-endpoints/{_p(endpoint_id)}", idempotency_key=key)


@_operation("POST", "/webhook-endpoints/{endpoint_id}/rotate-secret")
def rotate_webhook_secret(endpoint_id: str, key: str | None) -> Op[WebhookEndpointWithSecret]:
    return Op("POST", f"/webhook-endpoints/{_p(endpoint_id)}/rotate-secret", idempotency_key=key)


@_operation("GET", "/webhook-endpoints/{endpoint_id}/deliveries")
def webhook_deliveries(endpoint_id: str, cursor: str | None, limit: int) -> Op[DeliveriesPage]:
    params = _drop_none({"cursor": cursor, "limit": limit})
    return Op("GET", f"/webhook-endpoints/{_p(endpoint_id)}/deliveries", params=params)


@_operation("POST", "/webhook-endpoints/{endpoint_id}/deliveries/{delivery_id}/redeliver")
def redeliver_webhook(endpoint_id: str, delivery_id: str, key: str | None) -> Op[Delivery]:
    path = f"/webhook-endpoints/{_p(endpoint_id)}/deliveries/{_p(delivery_id)}/redeliver"
    return Op("POST", path, idempotency_key=key)
