"""The plan in the browser: after a paid Checkout the overview shows the new plan and
license; the customer cancels at the end of the period, and resumes."""

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

from billfold.auth.models import User
from billfold.auth.service import Caller
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
            )


def pay_checkout(
    services: Services,
    stripe_api: stripe.StripeClient,
    live_server: str,
    user: User,
) -> None:
    """A paid Checkout: the session Billfold asks for, paid on the stand-in's Checkout page
    (its form posted), and the webhook Stripe then sends."""
    url = lifecycle.checkout(
        services,
        Caller(user=user),
        plan_code="starter",
        success_url=f"{live_server}/billing",
        cancel_url=f"{live_server}/billing/plan",
    )
    paid = httpx.post(url, data={"number": VISA, "exp": "12/34", "cvc": "123"})
    assert paid.status_code == 303, paid.text
    session = stripe_api.v1.checkout.sessions.retrieve(url.rsplit("/", 1)[1])
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

    customer = customer_of(services, email)
    pay_checkout(services, stripe_api, live_server, customer.user)

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
