"""Subscription changes and licenses write their outbound events, once each, in order."""

from __future__ import annotations

from typing import Any

import pytest
import stripe
from fastapi.testclient import TestClient
from sqlalchemy import select
from subscription_steps import (
    DECLINED_AT_CHARGE,
    ON_FIRST_PAYMENT,
    PRICE,
    as_dict,
    checkout,
    checkout_requests,
    complete_checkout,
    deliver,
    deliver_paid_checkout,
    seed_plans,
    sign_up,
    use_card,
)
from support.outbound_webhooks import FAST_WEBHOOKS
from support.stripe_fakes import StandInWithFixtures

from billfold.jobs.worker import Worker
from billfold.services import Services
from billfold.webhooks.outbound.models import WebhookEvent


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {**FAST_WEBHOOKS, **ON_FIRST_PAYMENT}


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


def test_subscription_changes_and_licenses_write_their_events(
    client: TestClient,
    admin: dict[str, str],
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_fakes: list[StandInWithFixtures],
) -> None:
    seed_plans(client, admin, stripe_api)
    member = sign_up(client)
    assert types(services, member.customer_id) == [
        "customer.created",
        "subscription.created",
        "license.issued",
    ]

    checkout(client, member)
    [request] = checkout_requests(stripe_fakes)
    paid = complete_checkout(stripe_api, request)
    deliver_paid_checkout(client, paid)
    worker.run_until_idle()
    worker.run_until_idle()
    deliver_paid_checkout(client, paid)  # Stripe resends: nothing new
    worker.run_until_idle()

    use_card(stripe_api, request["customer"], DECLINED_AT_CHARGE)
    item = paid.subscription["items"]["data"][0]["id"]
    switched = stripe_api.v1.subscriptions.update(
        paid.subscription["id"], params={"items": [{"id": item, "plan": PRICE["starter_annual"]}]}
    )
    deliver(
        client,
        "invoice.payment_failed",
        as_dict(stripe_api.v1.invoices.retrieve(str(switched.latest_invoice))),
    )
    worker.run_until_idle()
    ended = client.post(
        "/subscriptions/cancel", json={"atPeriodEnd": False}, headers=member.headers
    )
    assert ended.status_code == 200, ended.text

    written = [(t, d) for t, d in events(services, member.customer_id) if t.startswith("sub")]
    assert [(t, d["status"], d["previousStatus"]) for t, d in written] == [
        ("subscription.created", "trialing", None),
        ("subscription.updated", "active", "trialing"),
        ("subscription.past_due", "past_due", "active"),
        ("subscription.canceled", "canceled", "past_due"),
    ]
    assert written[1][1]["plan"] == "starter"
    licenses = [d for t, d in events(services, member.customer_id) if t == "license.issued"]
    assert [d["status"] for d in licenses] == ["trialing", "active", "past_due", "canceled"]
    assert all(d["token"].count(".") == 2 for d in licenses)
