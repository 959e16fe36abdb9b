"""The privacy export holds every record of the customer: orders, payments, refunds, cards,
the credits ledger, the subscription, licenses and e-mails — and no secret."""

from __future__ import annotations

from typing import Any

import stripe
from factories import auth, register
from fastapi.testclient import TestClient
from support.credits import starting_balance
from support.payments import make_product, saved_card

from billfold.jobs.worker import Worker
from billfold.services import Services


def test_export_holds_orders_payments_refunds_cards_ledger_subscription_licenses_and_mails(
    client: TestClient,
    admin: dict[str, str],
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
) -> None:
    trial = {"code": "trial", "name": "Trial", "trialDays": 14, "features": {}}
    client.post("/plans", json=trial, headers=admin).raise_for_status()
    data = register(client)
    user, headers = data["user"], auth(data["access_token"])
    product = make_product(client, admin, unit_amount=1500, stock=3)
    pm = saved_card(client, stripe_api, headers)
    paid = client.post(
        "/payments/create-intent",
        json={"productId": product["id"], "quantity": 1, "paymentMethodId": pm},
        headers=headers,
    ).json()["data"]
    refunded = client.post(
        f"/payments/{paid['paymentId']}/refund", json={"amount": 500}, headers=admin
    ).json()["data"]
    starting_balance(client, admin, user["customerId"], 250)
    worker.run_until_idle()

    response = client.get(f"/users/{user['id']}/export", headers=headers)

    assert response.status_code == 200, response.text
    export: dict[str, Any] = response.json()["data"]
    assert [o["id"] for o in export["orders"]] == [paid["orderId"]]
    assert export["orders"][0]["lines"][0]["quantity"] == 1
    [payment] = export["payments"]
    assert (payment["id"], payment["amount"], payment["amountRefunded"]) == (
        paid["paymentId"],
        1500,
        500,
    )
    assert [r["id"] for r in payment["refunds"]] == [refunded["id"]]
    assert [r["amount"] for r in export["refunds"]] == [500]
    assert [c["stripePaymentMethodId"] for c in export["cards"]] == [pm]
    assert export["cards"][0]["last4"] == "4242"
    assert [e["amount"] for e in export["credits"]["ledger"]] == [250]
    assert export["credits"]["account"]["balance"] == 250
    assert export["subscription"]["status"] == "trialing"
    assert export["licenses"]
    assert all("token" not in lic for lic in export["licenses"])
    kinds = {m["kind"] for m in export["emails"]}
    assert {"verify_email", "receipt", "refund"} <= kinds
    assert all(m["toAddress"] == user["email"] for m in export["emails"])
    for secret in ("$argon2", "passwordHash", "tokenHash", "linkClaimToken"):
        assert secret not in response.text
