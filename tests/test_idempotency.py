"""The Idempotency-Key header: a retried call answers the first answer and does nothing twice."""

from __future__ import annotations

from typing import Any

import stripe
from factories import auth, register
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from support.netfault import FaultyLink
from support.payments import make_product, saved_card

from billfold.payments.models import Order, Payment
from billfold.services import Services


def orders(services: Services) -> int:
    with services.db.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(Order)) or 0)


def test_same_key_and_body_replays_the_answer_and_does_the_work_once(
    client: TestClient, admin: dict[str, str], buyer: dict[str, Any], services: Services
) -> None:
    product = make_product(client, admin)
    body = {"items": [{"productId": product["id"], "quantity": 1}]}
    headers = {**buyer["headers"], "Idempotency-Key": "order-1"}

    first = client.post("/orders", json=body, headers=headers)
    second = client.post("/orders", json=body, headers=headers)

    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert orders(services) == 1


def test_same_key_with_another_body_is_refused(
    client: TestClient, admin: dict[str, str], buyer: dict[str, Any], services: Services
) -> None:
    product = make_product(client, admin)
    headers = {**buyer["headers"], "Idempotency-Key": "order-2"}
    client.post(
        "/orders", json={"items": [{"productId": product["id"], "quantity": 1}]}, headers=headers
    )
    other = client.post(
        "/orders", json={"items": [{"productId": product["id"], "quantity": 2}]}, headers=headers
    )
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert orders(services) == 1


def test_keys_belong_to_their_caller(
    client: TestClient, admin: dict[str, str], buyer: dict[str, Any], services: Services
) -> None:
    product = make_product(client, admin)
    body = {"items": [{"productId": product["id"], "quantity": 1}]}
    someone = auth(register(client)["access_token"])
    for headers in (buyer["headers"], someone):
        response = client.post("/orders", json=body, headers={**headers, "Idempotency-Key": "same"})
        assert response.status_code == 201
    assert orders(services) == 2


def test_errors_are_replayed_but_an_outage_is_not(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    stripe_api: stripe.StripeClient,
    stripe_link: FaultyLink,
) -> None:
    product = make_product(client, admin, stock=1)
    headers = {**buyer["headers"], "Idempotency-Key": "too-many"}
    too_many = {"items": [{"productId": product["id"], "quantity": 2}]}
    assert client.post("/orders", json=too_many, headers=headers).status_code == 409
    assert client.post("/orders", json=too_many, headers=headers).status_code == 409

    pm = saved_card(client, stripe_api, buyer["headers"])
    pay = {"productId": product["id"], "quantity": 1, "paymentMethodId": pm}
    pay_headers = {**buyer["headers"], "Idempotency-Key": "pay-1"}
    stripe_link.down()
    assert client.post("/payments/create-intent", json=pay, headers=pay_headers).status_code == 503
    stripe_link.up()
    paid = client.post("/payments/create-intent", json=pay, headers=pay_headers)
    assert paid.status_code == 200, paid.text
    assert paid.json()["data"]["status"] == "succeeded"
    again = client.post("/payments/create-intent", json=pay, headers=pay_headers)
    assert again.json() == paid.json()
    with services.db.transaction() as session:
        succeeded = session.scalar(
            select(func.count()).select_from(Payment).where(Payment.status == "succeeded")
        )
    assert succeeded == 1


def test_overlong_key_is_a_clear_400(client: TestClient, buyer: dict[str, Any]) -> None:
    response = client.post(
        "/orders", json={"items": []}, headers={**buyer["headers"], "Idempotency-Key": "k" * 256}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_idempotency_key"
