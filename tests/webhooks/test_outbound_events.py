"""Each change writes its event once, in its own transaction: customers, payments, orders,
refunds, subscriptions, licenses and credits (both consume paths, purchases, recharges)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import stripe
from fastapi.testclient import TestClient
from sqlalchemy import select
from support.credits import starting_balance
from support.outbound_webhooks import FAST_WEBHOOKS, add_endpoint
from support.payments import make_product, saved_card
from support.waiting import wait_until
from support.webhook_receiver import WebhookReceiver

from billfold.jobs.worker import Worker
from billfold.services import Services
from billfold.webhooks.outbound.models import WebhookEvent

DECLINES_AT_CHARGE = "4000000000000341"


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {**FAST_WEBHOOKS, "stripe_customer_creation": "on_first_payment"}


def events(services: Services, customer_id: str) -> list[tuple[str, dict[str, Any]]]:
    with services.db.transaction() as session:
        rows = session.scalars(
            select(WebhookEvent)
            .where(WebhookEvent.customer_id == customer_id)
            .order_by(WebhookEvent.seq)
        )
        return [(e.type, e.data) for e in rows]


def types(services: Services, customer_id: str) -> list[str]:
    return [t for t, _ in events(services, customer_id)]


def consume(
    client: TestClient, headers: dict[str, str], amount: int, *, header_key: bool = False
) -> httpx.Response:
    key = uuid.uuid4().hex
    extra = {"Idempotency-Key": key} if header_key else {}
    response: httpx.Response = client.post(
        "/credits/consume",
        json={"amount": amount, "idempotencyKey": key, "reason": "work"},
        headers={**headers, **extra},
    )
    return response


def test_customer_sign_up_edit_and_deletion_each_write_one_event(
    client: TestClient, buyer: dict[str, Any], services: Services
) -> None:
    customer_id, headers = buyer["customerId"], buyer["headers"]
    [(kind, created)] = events(services, customer_id)
    assert kind == "customer.created"
    assert created == {
        "customerId": customer_id,
        "userId": buyer["id"],
        "email": buyer["email"],
        "name": buyer["name"],
        "companyName": None,
        "phone": None,
        "metadata": {},
    }
    patched = client.patch(f"/users/{buyer['id']}", json={"name": "Ada King"}, headers=headers)
    assert patched.status_code == 200, patched.text
    refused = client.patch(f"/users/{buyer['id']}", json={"email": "bad"}, headers=headers)
    assert refused.status_code == 422  # refused: no event
    assert client.delete(f"/users/{buyer['id']}", headers=headers).status_code in (200, 204)

    written = events(services, customer_id)
    assert [t for t, _ in written] == ["customer.created", "customer.updated", "customer.deleted"]
    assert written[1][1]["name"] == "Ada King"
    assert written[2][1] == {"customerId": customer_id, "userId": buyer["id"]}


def test_registration_refused_for_a_taken_email_writes_no_event(
    client: TestClient, buyer: dict[str, Any], services: Services
) -> None:
    body = {"name": "Twin", "email": buyer["email"], "password": "correct horse 1"}
    assert client.post("/users", json=body).status_code == 409
    with services.db.transaction() as session:
        created = session.scalars(
            select(WebhookEvent.id).where(WebhookEvent.type == "customer.created")
        ).all()
    assert len(created) == 1  # the buyer's own


def test_paid_order_then_refund_write_payment_order_and_refund_events(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    stripe_api: stripe.StripeClient,
) -> None:
    product = make_product(client, admin, unit_amount=1000, stock=5)
    pm = saved_card(client, stripe_api, buyer["headers"])
    paid = client.post(
        "/payments/create-intent",
        json={"productId": product["id"], "quantity": 2, "paymentMethodId": pm},
        headers=buyer["headers"],
    ).json()["data"]
    assert paid["status"] == "succeeded"
    # Confirming again records nothing new.
    again = client.post(
        "/payments/confirm",
        json={"payment_intent_id": paid["payment_intent_id"]},
        headers=buyer["headers"],
    )
    assert again.status_code == 200, again.text
    refunded = client.post(
        f"/payments/{paid['paymentId']}/refund", json={"amount": 500}, headers=admin
    )
    assert refunded.status_code == 201, refunded.text

    written = dict(events(services, buyer["customerId"])[1:])
    assert types(services, buyer["customerId"])[1:] == [
        "order.paid",
        "payment.succeeded",
        "payment.refunded",
    ]
    assert written["payment.succeeded"]["paymentId"] == paid["paymentId"]
    assert written["payment.succeeded"]["amount"] == 2000
    assert written["order.paid"]["orderId"] == paid["orderId"]
    assert written["payment.refunded"] == {
        "paymentId": paid["paymentId"],
        "refundId": refunded.json()["data"]["id"],
        "customerId": buyer["customerId"],
        "orderId": paid["orderId"],
        "amount": 500,
        "amountRefunded": 500,
        "currency": "usd",
    }
    assert not any("pi_" in str(data) for data in written.values())  # our IDs, never Stripe's


def test_declined_payment_writes_payment_failed(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    stripe_api: stripe.StripeClient,
) -> None:
    product = make_product(client, admin, unit_amount=1000, stock=5)
    pm = saved_card(client, stripe_api, buyer["headers"], DECLINES_AT_CHARGE)
    answer = client.post(
        "/payments/create-intent",
        json={"productId": product["id"], "quantity": 1, "paymentMethodId": pm},
        headers=buyer["headers"],
    )
    assert answer.status_code == 402, answer.text
    written = events(services, buyer["customerId"])
    assert [t for t, _ in written] == ["customer.created", "payment.failed"]
    assert written[1][1]["declineCode"]


@pytest.mark.parametrize("header_key", [False, True], ids=["hot-path", "plain-path"])
def test_debits_crossing_the_threshold_and_reaching_zero_write_one_event_each(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    stripe_api: stripe.StripeClient,
    header_key: bool,
) -> None:
    customer_id, headers = buyer["customerId"], buyer["headers"]
    starting_balance(client, admin, customer_id, 100)
    pm = saved_card(client, stripe_api, headers)
    enabled = client.put(
        "/credits/auto-recharge",
        json={
            "enabled": True,
            "thresholdCredits": 50,
            "rechargeCredits": 100,
            "paymentMethodId": pm,
        },
        headers=headers,
    )
    assert enabled.status_code == 200, enabled.text

    for amount in (30, 30, 30):  # 70 (above), 40 (crosses 50), 10 (below already)
        assert consume(client, headers, amount, header_key=header_key).status_code == 200
    assert consume(client, headers, 11, header_key=header_key).status_code == 402
    assert consume(client, headers, 10, header_key=header_key).status_code == 200  # to zero

    written = [(t, d) for t, d in events(services, customer_id) if t.startswith("credits.")]
    assert written == [
        ("credits.low_balance", {"customerId": customer_id, "balance": 40, "threshold": 50}),
        ("credits.exhausted", {"customerId": customer_id, "balance": 0}),
    ]


def test_auto_recharge_success_and_failure_write_their_events(
    client: TestClient,
    admin: dict[str, str],
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
) -> None:
    client.post(
        "/credits/packages", json={"name": "100", "credits": 100, "price": 100}, headers=admin
    )
    outcomes = {}
    for number in ("4242424242424242", DECLINES_AT_CHARGE):
        data = client.post(
            "/users",
            json={"name": "Ada", "email": f"{uuid.uuid4().hex}@example.com", "password": "x" * 12},
        ).json()["data"]
        customer_id = data["user"]["customerId"]
        headers = {"Authorization": f"Bearer {data['access_token']}"}
        worker.run_until_idle()  # the Stripe customer link
        starting_balance(client, admin, customer_id, 60)
        pm = saved_card(client, stripe_api, headers, number)
        client.put(
            "/credits/auto-recharge",
            json={
                "enabled": True,
                "thresholdCredits": 50,
                "rechargeCredits": 100,
                "paymentMethodId": pm,
            },
            headers=headers,
        )
        assert consume(client, headers, 20).status_code == 200
        worker.run_until_idle()
        outcomes[number] = [
            (t, d) for t, d in events(services, customer_id) if t.startswith("credits.")
        ]

    ok = outcomes["4242424242424242"]
    assert [t for t, _ in ok] == [
        "credits.low_balance",
        "credits.purchased",
        "credits.recharge_succeeded",
    ]
    assert ok[1][1]["credits"] == 100
    assert ok[1][1]["balance"] == 140
    failed = outcomes[DECLINES_AT_CHARGE]
    assert [t for t, _ in failed] == ["credits.low_balance", "credits.recharge_failed"]
    assert "decline" in failed[1][1]["reason"]


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver.start()
    yield server
    server.stop()


def test_a_new_customer_reaches_the_receiver_verified(
    client: TestClient,
    admin: dict[str, str],
    services: Services,
    worker: Worker[Services],
    receiver: WebhookReceiver,
) -> None:
    add_endpoint(client, admin, receiver, eventTypes=["customer.created"])
    stop = threading.Event()
    thread = worker.start_in_thread(stop)
    try:
        data = client.post(
            "/users",
            json={
                "name": "Grace",
                "email": f"{uuid.uuid4().hex}@example.com",
                "password": "x" * 12,
            },
        ).json()["data"]
        assert wait_until(lambda: len(receiver.accepted) == 1, timeout=10)
    finally:
        stop.set()
        thread.join(timeout=10)
    [got] = receiver.accepted
    assert (got.type, got.data["customerId"]) == ("customer.created", data["user"]["customerId"])
    assert receiver.rejected == []
