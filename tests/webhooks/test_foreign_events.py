"""Events about objects that are not ours cost no Stripe call; objects gone from Stripe are final.

A Stripe account is often shared with other systems (the SaaS app sells other things too):
their events reach our endpoint as well. We decide from what we hold whether an event is
ours before asking Stripe anything, and an object Stripe no longer has ends `ignored` at
once instead of being retried until it is dead.
"""

from __future__ import annotations

from typing import Any

import stripe
from conftest import WEBHOOK_SECRET
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from support.netfault import FaultyLink
from support.payments import browser_pays, card, make_product
from support.stripe_events import delivery, event

from billfold.jobs.models import Job, JobStatus
from billfold.jobs.worker import Worker
from billfold.payments.models import Payment
from billfold.services import Services
from billfold.webhooks.inbox import PROCESS_JOB
from billfold.webhooks.models import StripeEvent


def deliver(client: TestClient, evt: dict[str, Any]) -> None:
    body, headers = delivery(evt, WEBHOOK_SECRET)
    response = client.post("/webhooks/stripe", content=body, headers=headers)
    assert response.status_code == 200, response.text


def stored(services: Services, stripe_event_id: str) -> StripeEvent:
    with services.db.transaction() as session:
        row = session.scalar(
            select(StripeEvent).where(StripeEvent.stripe_event_id == stripe_event_id)
        )
        assert row is not None
        return row


def process_jobs(services: Services) -> list[Job]:
    with services.db.transaction() as session:
        return list(session.scalars(select(Job).where(Job.kind == PROCESS_JOB)))


def stripe_calls_while(link: FaultyLink, worker: Worker[Services]) -> int:
    """How many requests reached Stripe while the worker processed what was queued."""
    before = link.counts["requests"]
    worker.run_until_idle()
    return link.counts["requests"] - before


def foreign_intent(stripe_api: stripe.StripeClient, *, paid: bool = True) -> dict[str, Any]:
    """A PaymentIntent another system made on the shared account (its own metadata)."""
    other = stripe_api.v1.customers.create(params={"email": "shop@other.example"})
    intent = stripe_api.v1.payment_intents.create(
        params={
            "amount": 1200,
            "currency": "usd",
            "customer": other.id,
            "metadata": {"shop_order": "A-1001"},
        }
    )
    if paid:
        browser_pays(stripe_api, intent.id)
    found: dict[str, Any] = stripe_api.v1.payment_intents.retrieve(intent.id).to_dict()
    return found


def test_foreign_payment_intent_events_make_no_stripe_call_and_end_ignored(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_link: FaultyLink,
    stripe_api: stripe.StripeClient,
) -> None:
    intent = foreign_intent(stripe_api)
    events = [
        event(kind, intent)
        for kind in (
            "payment_intent.succeeded",
            "payment_intent.payment_failed",
            "payment_intent.canceled",
            "payment_intent.processing",
            "payment_intent.requires_action",
        )
    ]
    for evt in events:
        deliver(client, evt)

    assert stripe_calls_while(stripe_link, worker) == 0

    for evt in events:
        row = stored(services, evt["id"])
        assert row.status == "ignored"
        assert row.error == f"no payment of ours for {intent['id']}"
        assert row.attempts == 1


def test_foreign_refund_card_subscription_and_invoice_events_make_no_stripe_call(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_link: FaultyLink,
    stripe_api: stripe.StripeClient,
) -> None:
    intent = foreign_intent(stripe_api)
    refund = stripe_api.v1.refunds.create(params={"payment_intent": intent["id"]})
    charge = stripe_api.v1.charges.retrieve(refund.charge).to_dict()  # type: ignore[arg-type]
    other = stripe_api.v1.customers.create(params={"email": "member@other.example"})
    pm = stripe_api.v1.payment_methods.attach(card(stripe_api), params={"customer": other.id})
    subscription = {
        "id": "sub_other_system_1",
        "object": "subscription",
        "customer": other.id,
        "status": "active",
        "metadata": {"member": "42"},
        "items": {"data": []},
    }
    invoice = {
        "id": "in_other_system_1",
        "object": "invoice",
        "customer": other.id,
        "subscription": "sub_other_system_1",
    }
    checkout = {
        "id": "cs_other_system_1",
        "object": "checkout.session",
        "mode": "subscription",
        "customer": other.id,
        "subscription": "sub_other_system_1",
        "metadata": {},
    }
    events = [
        event("charge.refunded", charge),
        event("payment_method.attached", pm.to_dict()),
        event("payment_method.detached", {**pm.to_dict(), "customer": None}),
        event("customer.subscription.updated", subscription),
        event("customer.subscription.deleted", subscription),
        event("invoice.paid", invoice),
        event("checkout.session.completed", checkout),
    ]
    for evt in events:
        deliver(client, evt)

    assert stripe_calls_while(stripe_link, worker) == 0

    for evt in events:
        row = stored(services, evt["id"])
        assert (row.type, row.status) == (evt["type"], "ignored")
        assert "of ours" in (row.error or "")


def test_our_payment_event_still_re_reads_the_intent_and_pays_the_order(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    worker: Worker[Services],
    stripe_link: FaultyLink,
    stripe_api: stripe.StripeClient,
) -> None:
    product = make_product(client, admin)
    body = {"productId": product["id"], "quantity": 1}
    data = client.post("/payments/create-intent", json=body, headers=buyer["headers"]).json()[
        "data"
    ]
    browser_pays(stripe_api, data["payment_intent_id"])
    snapshot = stripe_api.v1.payment_intents.retrieve(data["payment_intent_id"]).to_dict()
    deliver(client, event("payment_intent.succeeded", snapshot))

    assert stripe_calls_while(stripe_link, worker) >= 1

    with services.db.transaction() as session:
        payment = session.get(Payment, data["paymentId"])
        assert payment is not None
        assert payment.status == "succeeded"


def test_our_intent_gone_from_stripe_ends_ignored_at_once_not_retried(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    worker: Worker[Services],
) -> None:
    product = make_product(client, admin)
    body = {"productId": product["id"], "quantity": 1}
    data = client.post("/payments/create-intent", json=body, headers=buyer["headers"]).json()[
        "data"
    ]
    # As after Stripe lost the object (a fresh stand-in): we hold an ID Stripe does not know.
    vanished = "pi_vanished0000000000000"
    with services.db.transaction() as session:
        session.execute(
            update(Payment)
            .where(Payment.id == data["paymentId"])
            .values(stripe_payment_intent_id=vanished)
        )
    gone = {"id": vanished, "object": "payment_intent", "metadata": {}, "status": "succeeded"}
    events = [
        event("payment_intent.succeeded", gone),
        event("charge.refunded", {"id": "ch_vanished", "object": "charge", "payment_intent": gone}),
    ]
    for evt in events:
        deliver(client, evt)

    worker.run_until_idle()

    for evt in events:
        row = stored(services, evt["id"])
        assert row.status == "ignored"
        assert row.error == f"{vanished} no longer exists in Stripe"
        assert row.attempts == 1
    assert {job.status for job in process_jobs(services)} == {JobStatus.DONE}
    assert all(job.attempts <= 1 for job in process_jobs(services))


def test_card_event_for_a_card_gone_from_stripe_ends_ignored(
    client: TestClient, buyer: dict[str, Any], services: Services, worker: Worker[Services]
) -> None:
    gone = {"id": "pm_vanished000000", "object": "payment_method", "customer": None}
    customer = buyer["stripeCustomerId"]
    evt = event("payment_method.attached", {**gone, "customer": customer})
    deliver(client, evt)

    worker.run_until_idle()

    row = stored(services, evt["id"])
    assert (row.status, row.attempts) == ("ignored", 1)
    assert row.error == "pm_vanished000000 no longer exists in Stripe"
