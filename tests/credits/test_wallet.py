"""The wallet end to end: buy credits, spend them, refund a purchase, recharge automatically."""

from __future__ import annotations

from typing import Any

import stripe
from fastapi.testclient import TestClient
from support.credits import balance
from support.payments import saved_card

from billfold.jobs.worker import Worker
from billfold.services import Services


def make_package(
    client: TestClient, admin: dict[str, str], credits: int, price: int
) -> dict[str, Any]:
    response = client.post(
        "/credits/packages",
        json={"name": f"{credits} credits", "credits": credits, "price": price},
        headers=admin,
    )
    assert response.status_code == 201, response.text
    package: dict[str, Any] = response.json()["data"]
    return package


def test_buy_with_saved_card_spend_and_refund_claws_back_unspent_credits(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
) -> None:
    package = make_package(client, admin, credits=1000, price=900)
    pm = saved_card(client, stripe_api, buyer["headers"])
    bought = client.post(
        "/credits/purchase",
        json={"packageId": package["id"], "paymentMethodId": pm},
        headers=buyer["headers"],
    )
    assert bought.status_code == 200, bought.text
    assert bought.json()["data"]["status"] == "succeeded"
    assert bought.json()["data"]["balance"] == 1000

    spent = client.post(
        "/credits/consume",
        json={"amount": 600, "idempotencyKey": "job-1", "reason": "render"},
        headers=buyer["headers"],
    )
    assert spent.status_code == 200, spent.text
    assert spent.json()["data"]["balance"] == 400
    again = client.post(
        "/credits/consume",
        json={"amount": 600, "idempotencyKey": "job-1", "reason": "render"},
        headers=buyer["headers"],
    )
    assert again.json()["data"]["balance"] == 400
    assert again.json()["data"]["replayed"] is True
    short = client.post(
        "/credits/consume",
        json={"amount": 401, "idempotencyKey": "job-2"},
        headers=buyer["headers"],
    )
    assert short.status_code == 402
    assert short.json()["error"]["code"] == "insufficient_credits"

    refunded = client.post(
        f"/payments/{bought.json()['data']['paymentId']}/refund", json={}, headers=admin
    )
    assert refunded.status_code == 201, refunded.text
    assert balance(client, buyer["headers"]) == 0  # the 400 unspent came back, not more
    kinds = [
        t["kind"]
        for t in client.get("/credits/transactions", headers=buyer["headers"]).json()["data"][
            "transactions"
        ]
    ]
    assert kinds == ["refund", "consume", "purchase"]


def test_crossing_the_threshold_starts_one_recharge_that_grants_once(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
) -> None:
    small = make_package(client, admin, credits=500, price=500)
    make_package(client, admin, credits=2000, price=1800)
    pm = saved_card(client, stripe_api, buyer["headers"])
    client.post(
        "/credits/purchase",
        json={"packageId": small["id"], "paymentMethodId": pm},
        headers=buyer["headers"],
    )
    configured = client.put(
        "/credits/auto-recharge",
        json={
            "enabled": True,
            "thresholdCredits": 200,
            "rechargeCredits": 1000,
            "paymentMethodId": pm,
        },
        headers=buyer["headers"],
    )
    assert configured.status_code == 200, configured.text
    for i in range(3):
        client.post(
            "/credits/consume",
            json={"amount": 150, "idempotencyKey": f"c{i}"},
            headers=buyer["headers"],
        )
    worker.run_until_idle()
    assert balance(client, buyer["headers"]) == 500 - 450 + 2000
    state = client.get("/credits/auto-recharge", headers=buyer["headers"]).json()["data"]
    assert state["rechargeInFlightId"] is None
