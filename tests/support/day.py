"""A scripted day of Billfold through the real API against the stand-in: sign-ups (one while
Stripe is down), payments of every outcome, a refund, credits, an auto-recharge, webhooks.
The dashboard test checks its figures against the rows; the console's screenshots show it."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx
import stripe
from conftest import WEBHOOK_SECRET
from factories import auth, register
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from billfold.customers.service import LINK_JOB
from billfold.jobs.models import Job
from billfold.jobs.worker import Worker
from billfold.kit.db import utcnow
from billfold.payments.models import Payment
from billfold.services import Services
from billfold.standin import LocalStripe
from support.netfault import FaultyLink
from support.payments import GENERIC_DECLINE, THREE_D_SECURE, browser_pays, make_product, saved_card
from support.stripe_events import delivery, event
from support.waiting import wait_until


def _member(client: TestClient) -> dict[str, Any]:
    data = register(client)
    return {**data["user"], "headers": auth(data["access_token"])}


def _buy(
    client: TestClient, member: dict[str, Any], product_id: str, pm: str | None = None
) -> httpx.Response:
    body: dict[str, Any] = {"productId": product_id, "quantity": 1}
    if pm is not None:
        body["paymentMethodId"] = pm
    response: httpx.Response = client.post(
        "/payments/create-intent", json=body, headers=member["headers"]
    )
    return response


def _authenticate(localstripe: LocalStripe, data: dict[str, Any], success: bool) -> None:
    httpx.post(
        f"{localstripe.url}/v1/payment_intents/{data['payment_intent_id']}/_authenticate",
        data={
            "client_secret": data["client_secret"],
            "success": "true" if success else "false",
            "key": "pk_test_x",
        },
    ).raise_for_status()


def _confirm(client: TestClient, member: dict[str, Any], intent_id: str) -> httpx.Response:
    response: httpx.Response = client.post(
        "/payments/confirm", json={"payment_intent_id": intent_id}, headers=member["headers"]
    )
    return response


def a_day_of_billfold(
    client: TestClient,
    admin: dict[str, str],
    services: Services,
    worker: Worker[Services],
    stripe_link: FaultyLink,
    stripe_api: stripe.StripeClient,
    localstripe: LocalStripe,
) -> dict[str, str]:
    """Sign-ups (one while Stripe is down, whose link job dies), card payments that succeed,
    are declined, pass or fail 3-D Secure or wait on it, a partial refund, credits granted,
    bought, spent and auto-recharged, webhooks processed and ignored. Answers a few IDs."""
    stripe_link.down()
    dan = _member(client)
    assert dan["stripeCustomerId"] is None

    def link_job_dead() -> bool:
        worker.run_once()
        with services.db.transaction() as session:
            return session.scalar(select(Job.status).where(Job.kind == LINK_JOB)) == "dead"

    assert wait_until(link_job_dead, timeout=30)
    stripe_link.up()

    ada, bob, cy, eve, fay = (_member(client) for _ in range(5))
    widget = make_product(client, admin, unit_amount=1000, stock=100)
    gadget = make_product(client, admin, unit_amount=2000, stock=100)

    ada_card = saved_card(client, stripe_api, ada["headers"])
    for product in (widget, gadget):
        paid = _buy(client, ada, product["id"], ada_card)
        assert paid.json()["data"]["status"] == "succeeded", paid.text
    gadget_payment = paid.json()["data"]["paymentId"]
    refund = client.post(
        f"/payments/{gadget_payment}/refund",
        json={"amount": 500, "reason": "requested_by_customer", "notes": "scratched"},
        headers=admin,
    )
    assert refund.status_code == 201, refund.text

    declined = _buy(client, bob, widget["id"]).json()["data"]
    browser_pays(stripe_api, declined["payment_intent_id"], GENERIC_DECLINE)
    assert _confirm(client, bob, declined["payment_intent_id"]).status_code == 402

    for member, outcome in ((cy, True), (eve, False), (fay, None)):
        pm = saved_card(client, stripe_api, member["headers"], THREE_D_SECURE)
        started = _buy(client, member, widget["id"], pm).json()["data"]
        assert started["status"] == "requires_action"
        if outcome is not None:
            _authenticate(localstripe, started, outcome)
            answer = _confirm(client, member, started["payment_intent_id"])
            assert answer.status_code == (200 if outcome else 402), answer.text

    granted = client.post(
        "/credits/grants",
        json={
            "customerId": ada["customerId"],
            "amount": 100,
            "reason": "welcome",
            "idempotencyKey": "welcome",
        },
        headers=admin,
    )
    assert granted.status_code == 201, granted.text
    package = client.post(
        "/credits/packages", json={"name": "1000", "credits": 1000, "price": 900}, headers=admin
    ).json()["data"]
    bought = client.post(
        "/credits/purchase",
        json={"packageId": package["id"], "paymentMethodId": ada_card},
        headers=ada["headers"],
    )
    assert bought.status_code == 200, bought.text
    enabled = client.put(
        "/credits/auto-recharge",
        json={
            "enabled": True,
            "thresholdCredits": 1000,
            "rechargeCredits": 500,
            "paymentMethodId": ada_card,
        },
        headers=ada["headers"],
    )
    assert enabled.status_code == 200, enabled.text
    spent = client.post(
        "/credits/consume",
        json={"amount": 200, "idempotencyKey": uuid.uuid4().hex, "reason": "render"},
        headers=ada["headers"],
    )
    assert spent.status_code == 200, spent.text

    now = int(utcnow().timestamp())
    customer = stripe_api.v1.customers.retrieve(ada["stripeCustomerId"]).to_dict()
    for evt in (
        event("customer.updated", customer, created=now - 40),
        event("invoice.created", {"id": "in_x", "object": "invoice"}, created=now - 5),
    ):
        body, headers = delivery(evt, WEBHOOK_SECRET)
        assert client.post("/webhooks/stripe", content=body, headers=headers).status_code == 200
    worker.run_until_idle()

    # Bob's decline happened two days ago: in the 7- and 30-day windows, not in the last 24 h.
    with services.db.transaction() as session:
        session.execute(
            update(Payment)
            .where(Payment.customer_id == bob["customerId"])
            .values(created_at=utcnow() - timedelta(days=2))
        )
    return {"ada": ada["customerId"], "bob": bob["customerId"]}
