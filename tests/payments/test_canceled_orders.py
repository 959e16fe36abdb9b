"""A canceled order is never paid: its PaymentIntent is canceled in Stripe, and money that
arrives all the same is given back, the order left canceled and its stock untouched."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import stripe
from conftest import WEBHOOK_SECRET
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from support.payments import browser_pays, make_product
from support.stripe_events import delivery, event
from support.waiting import wait_until

from billfold.jobs.models import Job, JobStatus
from billfold.jobs.worker import Worker
from billfold.mail.models import OutboxMail
from billfold.services import Services


def open_payment(
    client: TestClient, admin: dict[str, str], buyer: dict[str, Any], *, amount: int = 1500
) -> dict[str, Any]:
    """An order of one unit and its PaymentIntent, not yet paid (the Elements flow)."""
    product = make_product(client, admin, unit_amount=amount, stock=3)
    response = client.post(
        "/payments/create-intent",
        json={"productId": product["id"], "quantity": 1},
        headers=buyer["headers"],
    )
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    assert data["status"] == "requires_payment_method"
    return {**data, "product_id": product["id"]}


def cancel(client: TestClient, headers: dict[str, str], order_id: str) -> None:
    response = client.post(f"/orders/{order_id}/cancel", headers=headers)
    assert response.status_code == 200, response.text


def confirm(client: TestClient, headers: dict[str, str], intent_id: str) -> httpx.Response:
    response: httpx.Response = client.post(
        "/payments/confirm", json={"payment_intent_id": intent_id}, headers=headers
    )
    return response


def get(client: TestClient, admin: dict[str, str], path: str) -> dict[str, Any]:
    response = client.get(path, headers=admin)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def open_jobs(services: Services) -> int:
    with services.db.transaction() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(Job)
                .where(Job.status.in_([JobStatus.PENDING, JobStatus.RUNNING]))
            )
            or 0
        )


def drain(services: Services, worker: Worker[Services]) -> None:
    def idle() -> bool:
        worker.run_until_idle()
        return open_jobs(services) == 0

    assert wait_until(idle, 15, interval=0.1), "jobs still open"


def test_canceling_an_order_cancels_its_intent_so_the_card_cannot_be_charged(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
) -> None:
    opened = open_payment(client, admin, buyer)
    cancel(client, buyer["headers"], opened["orderId"])
    drain(services, worker)

    assert stripe_api.v1.payment_intents.retrieve(opened["payment_intent_id"]).status == "canceled"
    with pytest.raises(stripe.InvalidRequestError):
        browser_pays(stripe_api, opened["payment_intent_id"])
    answer = confirm(client, buyer["headers"], opened["payment_intent_id"])
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"]["status"] == "canceled"
    order = get(client, admin, f"/orders/{opened['orderId']}")
    assert (order["status"], order["paidAt"]) == ("canceled", None)
    assert get(client, admin, f"/products/{opened['product_id']}")["stock"] == 3
    assert get(client, admin, f"/payments/{opened['paymentId']}")["status"] == "canceled"


def test_payment_succeeding_after_its_order_was_canceled_is_refunded_never_fulfilled(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
) -> None:
    opened = open_payment(client, admin, buyer, amount=1500)
    cancel(client, buyer["headers"], opened["orderId"])
    # The page confirms the card before the cancellation reaches Stripe.
    assert browser_pays(stripe_api, opened["payment_intent_id"]).status == "succeeded"

    answer = confirm(client, buyer["headers"], opened["payment_intent_id"])
    again = confirm(client, buyer["headers"], opened["payment_intent_id"])
    body, headers = delivery(
        event("payment_intent.succeeded", {"id": opened["payment_intent_id"]}), WEBHOOK_SECRET
    )
    late_webhook = client.post("/webhooks/stripe", content=body, headers=headers)
    assert late_webhook.status_code == 200, late_webhook.text
    drain(services, worker)  # the cancel job, the webhook, the refund job

    for response in (answer, again):
        assert response.status_code == 409, response.text
        assert response.json()["error"]["code"] == "order_canceled"
    order = get(client, admin, f"/orders/{opened['orderId']}")
    assert (order["status"], order["paidAt"]) == ("canceled", None)
    assert get(client, admin, f"/products/{opened['product_id']}")["stock"] == 3
    paid = get(client, admin, f"/payments/{opened['paymentId']}")
    assert (paid["status"], paid["amountRefunded"]) == ("succeeded", 1500)
    assert [(r["status"], r["amount"]) for r in paid["refunds"]] == [("succeeded", 1500)]
    in_stripe = stripe_api.v1.refunds.list(params={"payment_intent": opened["payment_intent_id"]})
    assert [r.amount for r in in_stripe.data] == [1500]
    with services.db.transaction() as session:
        receipts = session.scalar(
            select(func.count())
            .select_from(OutboxMail)
            .where(OutboxMail.dedupe_key == f"receipt:{opened['paymentId']}")
        )
    assert receipts == 0
