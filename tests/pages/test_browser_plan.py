"""The plan in the browser: Upgrade leads to the stand-in's Checkout page, paid there; the
overview then shows the new plan and license; the customer cancels at period end, and resumes."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import stripe
from conftest import WEBHOOK_SECRET
from playwright.sync_api import Page, expect
from support.stripe_events import delivery, event
from support.waiting import wait_until

from billfold.services import Services
from billfold.subscriptions import lifecycle, plans
from billfold.subscriptions.models import Subscription
from pages.journeys import VISA, notice, sign_up, tab
from pages.test_browser_billing import customer_of

pytestmark = pytest.mark.sqlite_only  # the browser tests run on SQLite only

STARTER = {"limits": {"projects": 5, "seats": 3}, "flags": {"api": True}}


def seed_plans(services: Services, stripe_api: stripe.StripeClient) -> None:
    with services.db.transaction() as session:
        plans.create_plan(
            session,
            {"code": "trial", "name": "Trial", "trial_days": 14, "features": {}},
            actor="test",
            stripe=services.stripe,
        )
        for code, amount in (("starter", 900), ("professional", 2900)):
            price = f"price_pages_{code}"
            try:
                stripe_api.v1.plans.retrieve(price)
            except stripe.InvalidRequestError:
                stripe_api.v1.plans.create(
                    params={
                        "id": price,
                        "amount": amount,
                        "currency": "usd",
                        "interval": "month",
                        "product": {"name": code},
                    }
                )
            plans.create_plan(
                session,
                {
                    "code": code,
                    "name": code.title(),
                    "stripe_price_id": price,
                    "interval": "month",
                    "features": STARTER,
                },
                actor="test",
                stripe=services.stripe,
            )


def deliver_subscription(
    stripe_api: stripe.StripeClient, live_server: str, session_id: str
) -> None:
    """The webhook Stripe sends once a Checkout is paid (the shared test stand-in has no
    endpoint registered for this server, so the test delivers it, signed)."""
    session = stripe_api.v1.checkout.sessions.retrieve(session_id)
    made = stripe_api.v1.subscriptions.retrieve(str(session.subscription))
    obj: dict[str, Any] = json.loads(json.dumps(made.to_dict()))
    body, headers = delivery(event("customer.subscription.created", obj), WEBHOOK_SECRET)
    answer = httpx.post(f"{live_server}/webhooks/stripe", content=body, headers=headers)
    assert answer.status_code == 200, answer.text


def test_customer_upgrades_then_cancels_at_period_end_and_resumes(
    page: Page,
    services: Services,
    live_server: str,
    stripe_api: stripe.StripeClient,
) -> None:
    seed_plans(services, stripe_api)
    email = sign_up(page)
    expect(page.get_by_test_id("plan-name")).to_have_text("Trial")
    tab(page, "Plan")
    expect(page.get_by_role("button", name="Upgrade to Starter")).to_be_visible()

    page.get_by_role("button", name="Upgrade to Starter").click()
    # The stand-in's Checkout page, as Stripe's would be.
    page.get_by_label("Card number").fill(VISA)
    page.get_by_label("Expiration (MM/YY)").fill("12/34")
    page.get_by_label("CVC").fill("123")
    session_id = page.url.rstrip("/").rsplit("/", 1)[1]
    page.get_by_role("button").last.click()
    expect(page.get_by_role("heading", name="Billing overview")).to_be_visible()
    customer = customer_of(services, email)
    deliver_subscription(stripe_api, live_server, session_id)

    def upgraded() -> bool:
        with services.db.transaction() as session:
            found = session.get(Subscription, lifecycle.subscription_of(session, customer.id).id)
            return found is not None and found.plan.code == "starter"

    assert wait_until(upgraded, timeout=30)
    tab(page, "Overview")
    expect(page.get_by_test_id("plan-name")).to_have_text("Starter")
    expect(page.get_by_text("Active", exact=True)).to_be_visible()
    expect(page.get_by_text("starter · active")).to_be_visible()  # the new license
    expect(page.get_by_text("Renews on")).to_be_visible()

    tab(page, "Plan")
    page.get_by_role("button", name="Cancel at period end").click()
    expect(notice(page)).to_have_text("Your plan will end at the end of the current period.")
    expect(page.get_by_text("Active (cancels at period end)")).to_be_visible()
    expect(page.get_by_text("Ends on")).to_be_visible()

    page.get_by_role("button", name="Resume plan").click()
    expect(notice(page)).to_have_text("Your plan will renew as usual.")
    expect(page.get_by_text("Renews on")).to_be_visible()
