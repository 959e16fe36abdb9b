"""The janitor settles what a lost webhook and a killed process left open, exactly once; a
PaymentIntent Stripe refuses to create leaves a failed payment, never one `creating`."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe
from conftest import STRIPE_KEY, WEBHOOK_SECRET
from fastapi.testclient import TestClient
from sqlalchemy import select
from support.credits import balance, ledger
from support.netfault import FaultyLink
from support.payments import browser_pays, make_product, saved_card
from support.server_process import start_server_process
from support.stripe_events import delivery, event
from support.waiting import wait_until
from support.worker_process import output, start_worker_process

from billfold.app import create_app
from billfold.config import Settings
from billfold.credits.models import CreditPurchase
from billfold.jobs.models import Job
from billfold.jobs.queue import recurring_job_id
from billfold.jobs.worker import Worker
from billfold.payments.janitor import JANITOR_JOB, sweep
from billfold.payments.models import Payment
from billfold.registry import build_worker
from billfold.services import Services

# A short lease (it must outlast a Stripe call) and a janitor that runs twice a second.
JANITOR = pytest.mark.parametrize(
    "settings_overrides",
    [{"payment_janitor_lease_seconds": 4.0, "payment_janitor_interval_seconds": 0.5}],
)
CREATE_INTENT = b"POST /v1/payment_intents HTTP"


def make_package(client: TestClient, admin: dict[str, str], credits: int, price: int) -> str:
    response = client.post(
        "/credits/packages",
        json={"name": f"{credits} credits", "credits": credits, "price": price},
        headers=admin,
    )
    assert response.status_code == 201, response.text
    package_id: str = response.json()["data"]["id"]
    return package_id


def payments_of(services: Services, customer_id: str) -> list[Payment]:
    with services.db.transaction() as session:
        return list(
            session.scalars(
                select(Payment).where(Payment.customer_id == customer_id).order_by(Payment.id)
            )
        )


def purchase_entries(client: TestClient, headers: dict[str, str]) -> list[int]:
    return [e["amount"] for e in ledger(client, headers) if e["kind"] == "purchase"]


def send_event(client: TestClient, kind: str, intent_id: str) -> None:
    body, headers = delivery(event(kind, {"id": intent_id}), WEBHOOK_SECRET)
    response = client.post("/webhooks/stripe", content=body, headers=headers)
    assert response.status_code == 200, response.text


@JANITOR
def test_server_killed_after_stripe_charged_a_saved_card_is_credited_once_by_the_janitor(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    settings: Settings,
    stripe_link: FaultyLink,
    stripe_api: stripe.StripeClient,
    worker: Worker[Services],
    tmp_path: Path,
    settings_overrides: Any,
) -> None:
    package_id = make_package(client, admin, credits=1000, price=900)
    pm = saved_card(client, stripe_api, buyer["headers"])
    server, url = start_server_process(settings, stripe_link.url, STRIPE_KEY, tmp_path)
    answers: list[Any] = []

    def buy() -> None:
        try:
            answers.append(
                httpx.post(
                    f"{url}/credits/purchase",
                    json={"packageId": package_id, "paymentMethodId": pm},
                    headers=buyer["headers"],
                    timeout=30,
                )
            )
        except httpx.TransportError as exc:
            answers.append(exc)

    # Stripe charges the card, but its answer is held: the server never learns the intent.
    stripe_link.hold_responses(only=CREATE_INTENT)
    caller = threading.Thread(target=buy)
    try:
        caller.start()
        assert stripe_link.wait_for_held_response(timeout=30)
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=10)
    finally:
        if server.poll() is None:
            server.kill()
        stripe_link.up()
        caller.join(timeout=30)
    assert isinstance(answers[0], httpx.TransportError)  # the caller never got an answer
    charged = stripe_api.v1.payment_intents.list(params={"customer": buyer["stripeCustomerId"]})
    assert [i.status for i in charged.data] == ["succeeded"]
    [stuck] = payments_of(services, buyer["customerId"])
    assert (stuck.status, stuck.stripe_payment_intent_id) == ("creating", None)
    assert balance(client, buyer["headers"]) == 0  # charged, not credited; no webhook comes

    process = start_worker_process(settings, stripe_link.url, STRIPE_KEY, tmp_path)
    try:  # a real `billfold worker`: it schedules the janitor, which finds the intent
        credited = wait_until(lambda: balance(client, buyer["headers"]) == 1000, 120, 0.2)
        assert credited, output(process)
    finally:
        process.kill()
        process.wait(timeout=10)

    [settled] = payments_of(services, buyer["customerId"])
    assert (settled.status, settled.stripe_payment_intent_id) == ("succeeded", charged.data[0].id)
    # Later janitor runs and the late webhook change nothing.
    sweep(services)
    send_event(client, "payment_intent.succeeded", charged.data[0].id)
    worker.run_until_idle()
    assert balance(client, buyer["headers"]) == 1000
    assert purchase_entries(client, buyer["headers"]) == [1000]
    with services.db.transaction() as session:
        purchase = session.scalar(
            select(CreditPurchase).where(CreditPurchase.payment_id == stuck.id)
        )
        assert purchase is not None
        assert purchase.status == "succeeded"


@JANITOR
def test_janitor_records_a_payment_whose_confirm_and_webhook_were_both_lost_once(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    stripe_api: stripe.StripeClient,
    settings_overrides: Any,
) -> None:
    product = make_product(client, admin, unit_amount=700, stock=2)
    opened = client.post(
        "/payments/create-intent",
        json={"productId": product["id"], "quantity": 1},
        headers=buyer["headers"],
    ).json()["data"]
    assert browser_pays(stripe_api, opened["payment_intent_id"]).status == "succeeded"
    assert sweep(services).payments == 0  # not past its lease yet: a live page may confirm

    def settled() -> bool:
        sweep(services)
        return payments_of(services, buyer["customerId"])[0].status == "succeeded"

    assert wait_until(settled, 20, interval=0.5)
    sweep(services)
    order = client.get(f"/orders/{opened['orderId']}", headers=buyer["headers"]).json()["data"]
    assert order["status"] == "paid"
    stock = client.get(f"/products/{product['id']}", headers=admin).json()["data"]["stock"]
    assert stock == 1


@JANITOR
def test_janitor_fails_a_payment_stripe_never_made_an_intent_for(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    stripe_link: FaultyLink,
    settings_overrides: Any,
) -> None:
    package_id = make_package(client, admin, credits=500, price=450)
    stripe_link.down()  # Stripe is away when the intent would be made
    answer = client.post(
        "/credits/purchase", json={"packageId": package_id}, headers=buyer["headers"]
    )
    assert answer.status_code == 503, answer.text
    stripe_link.up()
    [stuck] = payments_of(services, buyer["customerId"])
    assert stuck.status == "creating"

    def settled() -> bool:
        sweep(services)
        return payments_of(services, buyer["customerId"])[0].status == "failed"

    assert wait_until(settled, 20, interval=0.5)
    with services.db.transaction() as session:
        purchase = session.scalar(
            select(CreditPurchase).where(CreditPurchase.payment_id == stuck.id)
        )
        assert purchase is not None
        assert purchase.status == "failed"
    assert balance(client, buyer["headers"]) == 0


def test_create_intent_refused_by_stripe_fails_the_payment_and_the_order_stays_payable(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    stripe_api: stripe.StripeClient,
) -> None:
    product = make_product(client, admin, unit_amount=1200, stock=2)
    order = client.post(
        "/orders",
        json={"items": [{"productId": product["id"], "quantity": 1}]},
        headers=buyer["headers"],
    ).json()["data"]
    # Someone deleted the customer in Stripe's dashboard: Stripe refuses the intent.
    stripe_api.v1.customers.delete(buyer["stripeCustomerId"])

    refused = client.post(
        "/payments/create-intent", json={"orderId": order["id"]}, headers=buyer["headers"]
    )
    credits = client.post(
        "/credits/purchase",
        json={"packageId": make_package(client, admin, credits=100, price=90)},
        headers=buyer["headers"],
    )

    assert refused.status_code == 404, refused.text
    assert credits.status_code == 404, credits.text
    statuses = sorted(p.status for p in payments_of(services, buyer["customerId"]))
    assert statuses == ["failed", "failed"]
    with services.db.transaction() as session:
        purchase = session.scalar(select(CreditPurchase))
        assert purchase is not None
        assert purchase.status == "failed"
    after = client.get(f"/orders/{order['id']}", headers=buyer["headers"]).json()["data"]
    assert after["status"] == "pending"


def test_janitor_is_scheduled_once_by_the_servers_worker_and_any_other(
    services: Services, settings: Settings
) -> None:
    with TestClient(create_app(services=services, run_worker=True)):

        def scheduled() -> bool:
            with services.db.transaction() as session:
                return session.get(Job, recurring_job_id(JANITOR_JOB)) is not None

        assert wait_until(scheduled, 10)
    build_worker(services).schedule_recurring()  # a `billfold worker` starting beside it
    with services.db.transaction() as session:
        jobs = session.scalars(select(Job).where(Job.kind == JANITOR_JOB)).all()
        assert len(jobs) == 1
        assert jobs[0].status in ("pending", "running")
