"""Subscription changes and licenses write their outbound events, once each, in order."""

from __future__ import annotations

from typing import Any

import pytest
import stripe
from fastapi.testclient import TestClient
from sqlalchemy import select
from subscription_steps import ON_FIRST_PAYMENT, seed_plans, sign_up
from support.outbound_webhooks import FAST_WEBHOOKS

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


def test_trial_start_and_cancel_and_their_licenses_write_their_events(
    client: TestClient,
    admin: dict[str, str],
    services: Services,
    stripe_api: stripe.StripeClient,
) -> None:
    seed_plans(client, admin, stripe_api)
    member = sign_up(client)
    assert types(services, member.customer_id) == [
        "customer.created",
        "subscription.created",
        "license.issued",
    ]
    ended = client.post(
        "/subscriptions/cancel", json={"atPeriodEnd": False}, headers=member.headers
    )
    assert ended.status_code == 200, ended.text
    again = client.post(
        "/subscriptions/cancel", json={"atPeriodEnd": False}, headers=member.headers
    )
    assert again.status_code == 409  # refused: no second event

    written = [(t, d) for t, d in events(services, member.customer_id) if t.startswith("sub")]
    assert [(t, d["status"], d["previousStatus"]) for t, d in written] == [
        ("subscription.created", "trialing", None),
        ("subscription.canceled", "canceled", "trialing"),
    ]
    assert written[0][1]["plan"] == "trial"
    licenses = [d for t, d in events(services, member.customer_id) if t == "license.issued"]
    assert [d["status"] for d in licenses] == ["trialing", "canceled"]
    assert all(d["token"].count(".") == 2 for d in licenses)
