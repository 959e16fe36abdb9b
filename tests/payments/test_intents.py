"""One-off payments: the amount comes from our catalog; every path records one outcome."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import stripe
from conftest import WEBHOOK_SECRET
from factories import auth, register
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from support.netfault import FaultyLink
from support.payments import (
    GENERIC_DECLINE,
    INSUFFICIENT_FUNDS,
    THREE_D_SECURE,
    browser_pays,
    make_product,
    saved_card,
)
from support.stripe_events import delivery, event

from billfold.jobs.worker import Worker
from billfold.kit.audit import AuditEntry
from billfold.mail.models import OutboxMail
from billfold.services import Services
from billfold.standin import LocalStripe


def pay_intent(client: TestClient, headers: dict[str, str], **body: Any) -> httpx.Response:
    response: httpx.Response = client.post("/payments/create-intent", json=body, headers=headers)
    return response


def confirm(client: TestClient, headers: dict[str, str], intent_id: str) -> httpx.Response:
    body = {"payment_intent_id": intent_id}
    response: httpx.Response = client.post("/payments/confirm", json=body, headers=headers)
    return response


def stock(client: TestClient, admin: dict[str, str], product_id: str) -> int:
    value: int = client.get(f"/products/{product_id}", headers=admin).json()["data"]["stock"]
    return value


def order(client: TestClient, headers: dict[str, str], order_id: str) -> dict[str, Any]:
    data: dict[str, Any] = client.get(f"/orders/{order_id}", headers=headers).json()["data"]
    return data


def count(services: Services, model: Any, *where: Any) -> int:
    with services.db.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def receipts(services: Services, payment_id: str) -> int:
    return count(services, OutboxMail, OutboxMail.dedupe_key == f"receipt:{payment_id}")


def test_saved_card_payment_succeeds_fulfils_the_order_and_queues_one_receipt(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    stripe_api: stripe.StripeClient,
) -> None:
    product = make_product(client, admin, unit_amount=1250, stock=5)
    pm = saved_card(client, stripe_api, buyer["headers"])

    response = pay_intent(
        client, buyer["headers"], productId=product["id"], quantity=2, paymentMethodId=pm
    )

    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert (data["status"], data["amount"], data["currency"]) == ("succeeded", 2500, "usd")
    assert data["client_secret"] is None  # nothing left for the page to do
    assert stock(client, admin, product["id"]) == 3
    assert order(client, buyer["headers"], data["orderId"])["status"] == "paid"
    assert receipts(services, data["paymentId"]) == 1
    remote = stripe_api.v1.payment_intents.retrieve(data["payment_intent_id"])
    assert remote.amount == 2500
    assert remote.customer == buyer["stripeCustomerId"]
    assert remote.metadata is not None
    assert remote.metadata["payment_id"] == data["paymentId"]
    assert remote.metadata["order_id"] == data["orderId"]
    assert remote.metadata["customer_id"] == buyer["customerId"]


def test_elements_flow_answers_a_client_secret_and_confirm_records_success_once(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    stripe_api: stripe.StripeClient,
) -> None:
    product = make_product(client, admin, unit_amount=999, stock=2)
    created = pay_intent(client, buyer["headers"], productId=product["id"], quantity=1)
    assert created.status_code == 200, created.text
    data = created.json()["data"]
    assert data["status"] == "requires_payment_method"
    assert data["client_secret"].startswith(data["payment_intent_id"])
    assert data["publishable_key"] == "pk_test_billfold"
    assert data["amount"] == 999

    browser_pays(stripe_api, data["payment_intent_id"])
    for _ in range(2):
        confirmed = confirm(client, buyer["headers"], data["payment_intent_id"])
        assert confirmed.status_code == 200, confirmed.text
        assert confirmed.json()["data"]["status"] == "succeeded"

    assert stock(client, admin, product["id"]) == 1
    assert receipts(services, data["paymentId"]) == 1
    payment = client.get(f"/payments/{data['paymentId']}", headers=buyer["headers"]).json()["data"]
    assert payment["status"] == "succeeded"
    assert payment["refunds"] == []


def test_three_d_secure_requires_action_then_succeeds_after_authentication(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    localstripe: LocalStripe,
    stripe_api: stripe.StripeClient,
) -> None:
    product = make_product(client, admin, unit_amount=5000, stock=1)
    pm = saved_card(client, stripe_api, buyer["headers"], THREE_D_SECURE)

    started = pay_intent(
        client, buyer["headers"], productId=product["id"], quantity=1, paymentMethodId=pm
    )
    assert started.status_code == 200, started.text
    data = started.json()["data"]
    assert data["status"] == "requires_action"
    assert data["nextAction"] is not None
    assert data["client_secret"]
    assert stock(client, admin, product["id"]) == 1  # nothing taken until it is paid

    # What the page does: the customer passes the bank's challenge.
    httpx.post(
        f"{localstripe.url}/v1/payment_intents/{data['payment_intent_id']}/_authenticate",
        data={"client_secret": data["client_secret"], "success": "true", "key": "pk_test_x"},
    ).raise_for_status()
    confirmed = confirm(client, buyer["headers"], data["payment_intent_id"])

    assert confirmed.json()["data"]["status"] == "succeeded"
    payment = client.get(f"/payments/{data['paymentId']}", headers=buyer["headers"]).json()["data"]
    assert payment["requiredAction"] is True
    assert stock(client, admin, product["id"]) == 0


def test_failed_authentication_is_a_decline_and_leaves_the_order_unpaid(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    localstripe: LocalStripe,
    stripe_api: stripe.StripeClient,
) -> None:
    product = make_product(client, admin, stock=1)
    pm = saved_card(client, stripe_api, buyer["headers"], THREE_D_SECURE)
    data = pay_intent(
        client, buyer["headers"], productId=product["id"], quantity=1, paymentMethodId=pm
    ).json()["data"]
    httpx.post(
        f"{localstripe.url}/v1/payment_intents/{data['payment_intent_id']}/_authenticate",
        data={"client_secret": data["client_secret"], "success": "false", "key": "pk_test_x"},
    ).raise_for_status()

    response = confirm(client, buyer["headers"], data["payment_intent_id"])

    assert response.status_code == 402
    assert response.json()["error"]["details"]["decline_code"] == (
        "payment_intent_authentication_failure"
    )
    assert order(client, buyer["headers"], data["orderId"])["status"] == "pending"
    assert stock(client, admin, product["id"]) == 1


@pytest.mark.parametrize(
    ("number", "decline_code"),
    [(GENERIC_DECLINE, "generic_decline"), (INSUFFICIENT_FUNDS, "insufficient_funds")],
)
def test_declined_card_answers_402_with_the_decline_code_and_changes_nothing(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    stripe_api: stripe.StripeClient,
    number: str,
    decline_code: str,
) -> None:
    product = make_product(client, admin, stock=3)
    data = pay_intent(client, buyer["headers"], productId=product["id"], quantity=1).json()["data"]
    browser_pays(stripe_api, data["payment_intent_id"], number)

    response = confirm(client, buyer["headers"], data["payment_intent_id"])

    assert response.status_code == 402
    error = response.json()["error"]
    assert error["code"] == "card_declined"
    assert error["details"]["decline_code"] == decline_code
    assert order(client, buyer["headers"], data["orderId"])["status"] == "pending"
    assert stock(client, admin, product["id"]) == 3
    assert receipts(services, data["paymentId"]) == 0

    # The customer tries another card on the same order: the same intent, now paid.
    again = pay_intent(client, buyer["headers"], orderId=data["orderId"])
    assert again.json()["data"]["payment_intent_id"] == data["payment_intent_id"]
    browser_pays(stripe_api, data["payment_intent_id"])
    assert (
        confirm(client, buyer["headers"], data["payment_intent_id"]).json()["data"]["status"]
        == "succeeded"
    )
    assert stock(client, admin, product["id"]) == 2


def test_create_intent_twice_for_one_order_gives_one_payment_intent(
    client: TestClient, admin: dict[str, str], buyer: dict[str, Any]
) -> None:
    product = make_product(client, admin, unit_amount=700, stock=5)
    made = client.post(
        "/orders",
        json={"items": [{"productId": product["id"], "quantity": 3}]},
        headers=buyer["headers"],
    )
    order_id = made.json()["data"]["id"]

    with ThreadPoolExecutor(max_workers=3) as pool:
        answers = list(
            pool.map(lambda _: pay_intent(client, buyer["headers"], orderId=order_id), range(3))
        )
    answers.append(pay_intent(client, buyer["headers"], orderId=order_id))

    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    assert {a.json()["data"]["payment_intent_id"] for a in answers} == {
        answers[0].json()["data"]["payment_intent_id"]
    }
    assert {a.json()["data"]["paymentId"] for a in answers} == {
        answers[0].json()["data"]["paymentId"]
    }
    assert answers[0].json()["data"]["amount"] == 2100


def test_bad_payment_requests_are_clear_4xx_and_change_nothing(
    client: TestClient, admin: dict[str, str], buyer: dict[str, Any], services: Services
) -> None:
    product = make_product(client, admin, unit_amount=100, stock=2)
    pid = product["id"]
    bad_bodies: list[dict[str, Any]] = [
        {"productId": pid, "quantity": 0},
        {"productId": pid, "quantity": -1},
        {"productId": pid, "quantity": "2"},
        {"productId": pid, "quantity": 2.5},
        {"productId": pid, "quantity": 10**12},
        {"productId": pid},
        {"quantity": 1},
        {},
        {"productId": pid, "quantity": 1, "amount": 1},  # the amount is never the client's
        {"productId": pid, "quantity": 1, "orderId": "ord_" + "0" * 32},
        {"productId": "'; drop table products; --", "quantity": 1},
        {"productId": pid, "quantity": 1, "paymentMethodId": "pm with spaces"},
    ]
    for body in bad_bodies:
        response = pay_intent(client, buyer["headers"], **body)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["error"]["code"] == "validation_error"

    out_of_stock = pay_intent(client, buyer["headers"], productId=pid, quantity=3)
    assert out_of_stock.status_code == 409
    assert out_of_stock.json()["error"]["code"] == "out_of_stock"
    unknown = pay_intent(client, buyer["headers"], productId="prd_" + "0" * 32, quantity=1)
    assert unknown.status_code == 404
    from billfold.payments.models import Order, Payment

    assert count(services, Payment) == 0
    assert count(services, Order) == 0
    assert stock(client, admin, pid) == 2


def test_another_customers_order_and_payment_answer_404(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    stripe_api: stripe.StripeClient,
) -> None:
    product = make_product(client, admin, stock=5)
    data = pay_intent(client, buyer["headers"], productId=product["id"], quantity=1).json()["data"]
    intruder = register(client)
    headers = auth(intruder["access_token"])

    assert pay_intent(client, headers, orderId=data["orderId"]).status_code == 404
    assert confirm(client, headers, data["payment_intent_id"]).status_code == 404
    assert client.get(f"/payments/{data['paymentId']}", headers=headers).status_code == 404
    assert client.get("/payments", headers=headers).json()["data"] == []
    assert len(client.get("/payments", headers=buyer["headers"]).json()["data"]) == 1
    everything = client.get(
        "/payments",
        params={"customerId": buyer["customerId"], "status": "requires_payment_method"},
        headers=admin,
    )
    assert [p["id"] for p in everything.json()["data"]] == [data["paymentId"]]


def test_paid_order_cannot_be_paid_again(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    stripe_api: stripe.StripeClient,
) -> None:
    product = make_product(client, admin, stock=5)
    pm = saved_card(client, stripe_api, buyer["headers"])
    data = pay_intent(
        client, buyer["headers"], productId=product["id"], quantity=1, paymentMethodId=pm
    ).json()["data"]
    again = pay_intent(client, buyer["headers"], orderId=data["orderId"], paymentMethodId=pm)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "order_not_payable"
    assert stock(client, admin, product["id"]) == 4


def test_stripe_down_answers_503_and_a_retry_pays_the_same_order(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    stripe_api: stripe.StripeClient,
    stripe_link: FaultyLink,
) -> None:
    product = make_product(client, admin, stock=5)
    pm = saved_card(client, stripe_api, buyer["headers"])
    stripe_link.down()
    down = pay_intent(
        client, buyer["headers"], productId=product["id"], quantity=1, paymentMethodId=pm
    )
    assert down.status_code == 503
    assert down.json()["error"]["code"] == "stripe_unavailable"
    stripe_link.up()
    pending = client.get("/orders", headers=buyer["headers"]).json()["data"]
    assert [o["status"] for o in pending] == ["pending"]
    paid = pay_intent(client, buyer["headers"], orderId=pending[0]["id"], paymentMethodId=pm)
    assert paid.json()["data"]["status"] == "succeeded"
    assert stock(client, admin, product["id"]) == 4


def deliver_intent_event(
    client: TestClient, stripe_api: stripe.StripeClient, kind: str, intent_id: str
) -> None:
    obj = stripe_api.v1.payment_intents.retrieve(intent_id).to_dict()
    body, headers = delivery(event(kind, json.loads(json.dumps(obj, default=str))), WEBHOOK_SECRET)
    response = client.post("/webhooks/stripe", content=body, headers=headers)
    assert response.status_code == 200, response.text


def test_webhook_first_then_confirm_and_a_late_failure_change_nothing_twice(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
) -> None:
    product = make_product(client, admin, stock=4)
    data = pay_intent(client, buyer["headers"], productId=product["id"], quantity=1).json()["data"]
    browser_pays(stripe_api, data["payment_intent_id"])

    deliver_intent_event(client, stripe_api, "payment_intent.succeeded", data["payment_intent_id"])
    worker.run_until_idle()
    assert order(client, buyer["headers"], data["orderId"])["status"] == "paid"

    assert (
        confirm(client, buyer["headers"], data["payment_intent_id"]).json()["data"]["status"]
        == "succeeded"
    )
    deliver_intent_event(
        client, stripe_api, "payment_intent.payment_failed", data["payment_intent_id"]
    )
    deliver_intent_event(client, stripe_api, "payment_intent.succeeded", data["payment_intent_id"])
    worker.run_until_idle()

    payment = client.get(f"/payments/{data['paymentId']}", headers=buyer["headers"]).json()["data"]
    assert payment["status"] == "succeeded"
    assert stock(client, admin, product["id"]) == 3
    assert receipts(services, data["paymentId"]) == 1


def test_two_confirms_and_a_webhook_racing_record_one_success(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
) -> None:
    product = make_product(client, admin, stock=10)
    data = pay_intent(client, buyer["headers"], productId=product["id"], quantity=2).json()["data"]
    browser_pays(stripe_api, data["payment_intent_id"])
    deliver_intent_event(client, stripe_api, "payment_intent.succeeded", data["payment_intent_id"])

    start = threading.Barrier(3)

    def confirm_now() -> int:
        start.wait()
        return confirm(client, buyer["headers"], data["payment_intent_id"]).status_code

    def webhook_now() -> int:
        start.wait()
        return worker.run_until_idle()

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = [pool.submit(confirm_now), pool.submit(confirm_now), pool.submit(webhook_now)]
        outcomes = [r.result() for r in results]

    assert outcomes[:2] == [200, 200]
    assert stock(client, admin, product["id"]) == 8
    assert receipts(services, data["paymentId"]) == 1
    assert (
        count(
            services,
            AuditEntry,
            AuditEntry.action == "payment.succeeded",
            AuditEntry.subject_id == data["paymentId"],
        )
        == 1
    )


def test_twenty_parallel_saved_card_payments_of_one_order_answer_its_success_never_400(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    stripe_api: stripe.StripeClient,
) -> None:
    product = make_product(client, admin, unit_amount=700, stock=5)
    pm = saved_card(client, stripe_api, buyer["headers"])
    made = client.post(
        "/orders",
        json={"items": [{"productId": product["id"], "quantity": 1}]},
        headers=buyer["headers"],
    )
    order_id = made.json()["data"]["id"]
    start = threading.Barrier(20)

    def pay(_: int) -> httpx.Response:
        start.wait()
        return pay_intent(client, buyer["headers"], orderId=order_id, paymentMethodId=pm)

    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(pay, range(20)))

    # Each call answers the success, or (arriving once the order is paid) that it is paid.
    paid = [a for a in answers if a.status_code == 200]
    late = [a for a in answers if a.status_code != 200]
    assert paid, [a.text for a in answers]
    assert {a.json()["data"]["status"] for a in paid} == {"succeeded"}
    assert {a.json()["data"]["paymentId"] for a in paid} == {paid[0].json()["data"]["paymentId"]}
    assert {(a.status_code, a.json()["error"]["code"]) for a in late} <= {
        (409, "order_not_payable")
    }, [a.text for a in late]
    assert order(client, buyer["headers"], order_id)["status"] == "paid"
    assert receipts(services, paid[0].json()["data"]["paymentId"]) == 1
