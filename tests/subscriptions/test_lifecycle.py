"""Trial → checkout → active → renewal → failed payment → cancel, end to end."""

from __future__ import annotations

from typing import Any

import stripe
from conftest import WEBHOOK_SECRET
from factories import auth, register
from fastapi.testclient import TestClient
from support.payments import saved_card
from support.stripe_events import delivery, event
from support.stripe_fakes import StandInWithFixtures

from billfold.jobs.worker import Worker
from billfold.services import Services
from billfold.subscriptions.licenses import verify


def seed_plans(client: TestClient, admin: dict[str, str], stripe_api: stripe.StripeClient) -> None:
    for code, price in (("starter", 900), ("professional", 2900)):
        price_id = f"price_test_{code}"
        try:
            stripe_api.v1.plans.retrieve(price_id)
        except stripe.InvalidRequestError:
            stripe_api.v1.plans.create(
                params={
                    "id": price_id,
                    "amount": price,
                    "currency": "usd",
                    "interval": "month",
                    "product": {"name": code},
                }
            )
        client.post(
            "/plans",
            json={
                "code": code,
                "name": code.title(),
                "stripePriceId": price_id,
                "features": {"limits": {"projects": 5 if code == "starter" else 50}},
            },
            headers=admin,
        ).raise_for_status()
    client.post(
        "/plans",
        json={
            "code": "trial",
            "name": "Trial",
            "trialDays": 14,
            "features": {"limits": {"projects": 1}},
        },
        headers=admin,
    ).raise_for_status()


def deliver(client: TestClient, kind: str, obj: dict[str, Any], created: int | None = None) -> None:
    body, headers = delivery(event(kind, obj, created=created), WEBHOOK_SECRET)
    assert client.post("/webhooks/stripe", content=body, headers=headers).status_code == 200


def test_trial_checkout_active_renewal_failed_payment_cancel(
    client: TestClient,
    admin: dict[str, str],
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_fakes: list[StandInWithFixtures],
) -> None:
    seed_plans(client, admin, stripe_api)
    data = register(client)
    headers = auth(data["access_token"])
    me = client.get("/subscriptions/me", headers=headers).json()["data"]
    assert (me["plan"], me["status"]) == ("trial", "trialing")
    assert data["user"]["stripeCustomerId"]  # on_registration by default
    lic = client.get("/licenses/me", headers=headers).json()["data"]
    claims = verify(lic["token"], services.licenses.public_keys())
    assert claims["plan"] == "trial"
    assert claims["customer_id"] == data["user"]["customerId"]
    assert "cus_" not in lic["token"]

    answer = client.post(
        "/subscriptions/checkout",
        json={
            "plan": "starter",
            "success_url": "https://app.example/ok",
            "cancel_url": "https://app.example/no",
        },
        headers=headers,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"]["checkout_url"].startswith("https://checkout.stripe.com/")
    faked = [p for c in stripe_fakes for p in c.faked]
    assert faked[0][1]["mode"] == "subscription"
    assert faked[0][1]["metadata"]["customer_id"] == data["user"]["customerId"]

    # The customer pays on Stripe's page: Stripe makes the subscription, then tells us.
    pm = saved_card(client, stripe_api, headers)
    stripe_api.v1.customers.update(
        data["user"]["stripeCustomerId"],
        params={"invoice_settings": {"default_payment_method": pm}},
    )
    sub = stripe_api.v1.subscriptions.create(
        params={
            "customer": data["user"]["stripeCustomerId"],
            "items": [{"plan": "price_test_starter"}],
            "metadata": {"customer_id": data["user"]["customerId"]},
        }
    )
    session = {
        **faked[0][1],
        "id": "cs_test_x",
        "object": "checkout.session",
        "subscription": sub.id,
        "client_reference_id": data["user"]["customerId"],
        "status": "complete",
    }
    deliver(client, "checkout.session.completed", session)
    worker.run_until_idle()
    me = client.get("/subscriptions/me", headers=headers).json()["data"]
    assert (me["plan"], me["status"]) == ("starter", "active")
    assert me["current_period_ends_at"] is not None
    claims = verify(
        client.get("/licenses/me", headers=headers).json()["data"]["token"],
        services.licenses.public_keys(),
    )
    assert (claims["plan"], claims["status"]) == ("starter", "active")

    canceled = client.post("/subscriptions/cancel", json={"atPeriodEnd": True}, headers=headers)
    assert canceled.json()["data"]["cancel_at_period_end"] is True
    now_canceled = client.post(
        "/subscriptions/cancel", json={"atPeriodEnd": False}, headers=headers
    )
    assert now_canceled.json()["data"]["status"] == "canceled"
    lic = client.get("/licenses/me", headers=headers).json()["data"]
    assert lic["status"] == "canceled"
