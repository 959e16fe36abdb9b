"""One-off payments: the amount comes from our catalog; every path records one outcome."""

from __future__ import annotations

from typing import Any

import stripe
from fastapi.testclient import TestClient
from support.payments import make_product, saved_card


def test_card_payment_with_saved_card_succeeds_and_takes_stock(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    stripe_api: stripe.StripeClient,
) -> None:
    product = make_product(client, admin, unit_amount=1250, stock=5)
    pm = saved_card(client, stripe_api, buyer["headers"])
    response = client.post(
        "/payments/create-intent",
        json={"productId": product["id"], "quantity": 2, "paymentMethodId": pm},
        headers=buyer["headers"],
    )
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["status"] == "succeeded"
    assert data["amount"] == 2500
    assert client.get(f"/products/{product['id']}", headers=admin).json()["data"]["stock"] == 3
