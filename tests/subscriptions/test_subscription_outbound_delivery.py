"""Subscription changes that Stripe causes (a checkout paid on Stripe's page, a plan change
made in Stripe, a renewal the bank declines, a cancel in Stripe) reach the host app's real
receiver as signed outbound events. Every Stripe event is one the stand-in sent, relayed to
Billfold's webhook endpoint as `stripe listen` would; every delivery is verified with the
`standardwebhooks` library."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import stripe
from fastapi.testclient import TestClient
from subscription_steps import (
    DECLINED_AT_CHARGE,
    ON_FIRST_PAYMENT,
    PRICE,
    Member,
    advance,
    checkout,
    checkout_session,
    pay_on_page,
    seed_plans,
    sign_up,
)
from support.outbound_webhooks import FAST_WEBHOOKS, add_endpoint
from support.payments import card
from support.stripe_events import EventRelay
from support.webhook_receiver import Received, WebhookReceiver

from billfold.jobs.worker import Worker
from billfold.services import Services
from billfold.standin import LocalStripe

MASTERCARD = "5555555555554444"
SUBSCRIPTION_EVENTS = [
    "subscription.created",
    "subscription.updated",
    "subscription.past_due",
    "subscription.canceled",
]


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {**FAST_WEBHOOKS, **ON_FIRST_PAYMENT}


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver.start()
    yield server
    server.stop()


@pytest.fixture
def member(client: TestClient, admin: dict[str, str], stripe_api: stripe.StripeClient) -> Member:
    seed_plans(client, admin, stripe_api)
    return sign_up(client)


def _sync(client: TestClient, worker: Worker[Services], events: EventRelay) -> list[str]:
    """Relay what the stand-in sent, let the worker apply it and deliver what it caused."""
    sent = events.relay(client)
    worker.run_until_idle()
    return sent


def _of(receiver: WebhookReceiver, member: Member) -> list[Received]:
    return [r for r in receiver.accepted if r.data.get("customerId") == member.customer_id]


def _subscribed(
    client: TestClient,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
    member: Member,
) -> str:
    url = checkout(client, member)["checkout_url"]
    assert pay_on_page(url).status_code == 303
    _sync(client, worker, stripe_events)
    subscription_id: str = checkout_session(stripe_api, url)["subscription"]
    return subscription_id


def test_stripe_driven_plan_change_declined_renewal_and_recovery_reach_the_receiver_signed(
    client: TestClient,
    admin: dict[str, str],
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
    localstripe: LocalStripe,
    receiver: WebhookReceiver,
    member: Member,
) -> None:
    endpoint = add_endpoint(client, admin, receiver, eventTypes=SUBSCRIPTION_EVENTS)
    subscription_id = _subscribed(client, worker, stripe_api, stripe_events, member)
    paid = _of(receiver, member)
    assert [(r.type, r.data["plan"], r.data["status"]) for r in paid] == [
        ("subscription.updated", "starter", "active")
    ]
    assert paid[0].data["previousStatus"] == "trialing"

    # A plan change made in Stripe (its dashboard, its portal): Billfold learns it by webhook.
    remote = stripe_api.v1.subscriptions.retrieve(subscription_id)
    item = remote["items"]["data"][0]["id"]
    stripe_api.v1.subscriptions.update(
        subscription_id, params={"items": [{"id": item, "price": PRICE["professional"]}]}
    )
    assert "customer.subscription.updated" in _sync(client, worker, stripe_events)
    changed = _of(receiver, member)[1:]
    assert [(r.type, r.data["plan"], r.data["status"]) for r in changed] == [
        ("subscription.updated", "professional", "active")
    ]

    # The renewal's charge is declined: past due.
    pm = card(stripe_api, DECLINED_AT_CHARGE)
    stripe_api.v1.payment_methods.attach(pm, params={"customer": str(remote.customer)})
    stripe_api.v1.subscriptions.update(subscription_id, params={"default_payment_method": pm})
    renewed = advance(localstripe.url, subscription_id)
    assert "invoice.payment_failed" in _sync(client, worker, stripe_events)
    overdue = _of(receiver, member)[2:]
    assert [(r.type, r.data["status"], r.data["previousStatus"]) for r in overdue] == [
        ("subscription.past_due", "past_due", "active")
    ]

    # The customer pays the invoice on Stripe's page with another card: active again.
    invoice = stripe_api.v1.invoices.retrieve(renewed["latest_invoice"])
    assert pay_on_page(str(invoice.hosted_invoice_url), MASTERCARD).status_code == 200
    assert "invoice.paid" in _sync(client, worker, stripe_events)
    recovered = _of(receiver, member)[3:]
    assert [(r.type, r.data["status"], r.data["previousStatus"]) for r in recovered] == [
        ("subscription.updated", "active", "past_due")
    ]

    every = _of(receiver, member)
    assert all(r.verified_with == (endpoint["secret"],) for r in every)
    assert len({r.webhook_id for r in every}) == len(every)  # each event delivered once
    assert receiver.rejected == []
    assert {r.type for r in receiver.accepted} <= set(SUBSCRIPTION_EVENTS)


def test_a_cancel_made_in_stripe_reaches_the_receiver_as_subscription_canceled(
    client: TestClient,
    admin: dict[str, str],
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
    receiver: WebhookReceiver,
    member: Member,
) -> None:
    endpoint = add_endpoint(client, admin, receiver)
    subscription_id = _subscribed(client, worker, stripe_api, stripe_events, member)
    stripe_api.v1.subscriptions.cancel(subscription_id)
    assert "customer.subscription.deleted" in _sync(client, worker, stripe_events)

    ours = [r for r in _of(receiver, member) if r.type.startswith("subscription.")]
    assert [(r.type, r.data["status"]) for r in ours] == [
        ("subscription.updated", "active"),
        ("subscription.canceled", "canceled"),
    ]
    assert ours[-1].data["previousStatus"] == "active"
    assert ours[-1].data["canceledAt"] is not None
    # The license that follows is announced as well, signed the same way.
    licenses = [r for r in _of(receiver, member) if r.type == "license.issued"]
    assert licenses[-1].data["status"] == "canceled"
    assert all(r.verified_with == (endpoint["secret"],) for r in receiver.accepted)
