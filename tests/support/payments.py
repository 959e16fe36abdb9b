"""Builders for payment tests: products, saved cards, and what Stripe.js does in a browser."""

from __future__ import annotations

from typing import Any

import stripe
from fastapi.testclient import TestClient

VISA = "4242424242424242"
THREE_D_SECURE = "4000002500003155"
GENERIC_DECLINE = "4000000000000002"
INSUFFICIENT_FUNDS = "4000000000009995"


def make_product(
    client: TestClient,
    admin: dict[str, str],
    *,
    unit_amount: int = 1999,
    stock: int = 10,
    **extra: Any,
) -> dict[str, Any]:
    body = {"name": "Widget", "unitAmount": unit_amount, "currency": "usd", "stock": stock, **extra}
    response = client.post("/products", json=body, headers=admin)
    assert response.status_code == 201, response.text
    product: dict[str, Any] = response.json()["data"]
    return product


def card(stripe_api: stripe.StripeClient, number: str = VISA) -> str:
    """A PaymentMethod as Stripe.js would create it in the browser."""
    pm = stripe_api.v1.payment_methods.create(
        params={
            "type": "card",
            "card": {"number": number, "exp_month": 12, "exp_year": 2034, "cvc": "123"},
        }
    )
    return pm.id


def saved_card(
    client: TestClient, stripe_api: stripe.StripeClient, headers: dict[str, str], number: str = VISA
) -> str:
    pm = card(stripe_api, number)
    response = client.post(
        "/payments/customer/payment-methods", json={"paymentMethodId": pm}, headers=headers
    )
    assert response.status_code == 200, response.text
    return pm


def browser_pays(
    stripe_api: stripe.StripeClient, payment_intent_id: str, number: str = VISA
) -> Any:
    """What Stripe.js does with the client_secret: attach a card to the intent and confirm."""
    pm = card(stripe_api, number)
    stripe_api.v1.payment_intents.update(payment_intent_id, params={"payment_method": pm})
    try:
        return stripe_api.v1.payment_intents.confirm(payment_intent_id)
    except stripe.CardError:
        return stripe_api.v1.payment_intents.retrieve(payment_intent_id)
