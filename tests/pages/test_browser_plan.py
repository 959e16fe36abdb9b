"""The plan in the browser: Upgrade leads to the stand-in's Checkout page, paid there; the
overview then shows the new plan and license, the plan page its invoice; the customer pauses
payments and resumes, cancels at period end and resumes, and changes plan after a preview."""

from __future__ import annotations

import httpx
import pytest
import stripe
from playwright.sync_api import Page, expect
from sqlalchemy import select
from support.stripe_events import EventRelay
from support.waiting import wait_until

from billfold.services import Services
from billfold.subscriptions import lifecycle, plans
from billfold.subscriptions.models import Invoice
from pages.journeys import VISA, alert, notice, sign_up, tab
from pages.test_browser_billing import customer_of

pytestmark = pytest.mark.sqlite_only  # the browser tests run on SQLite only

STARTER = {"limits": {"projects": 5, "seats": 3}, "flags": {"api": True}}


def seed_plans(services: Services, stripe_api: stripe.StripeClient) -> None:
    plans.create_plan(
        services,
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
            services,
            {
                "code": code,
                "name": code.title(),
                "stripe_price_id": price,
                "interval": "month",
                "features": STARTER,
            },
            actor="test",
        )


def upgrade_through_checkout(page: Page, plan: str, number: str = VISA) -> str:
    """Upgrade on the Plan page and pay on the stand-in's Checkout page; answers the
    Checkout Session's ID."""
    tab(page, "Plan")
    page.get_by_role("button", name=f"Upgrade to {plan}").click()
    # The stand-in's Checkout page, as Stripe's would be.
    page.get_by_label("Card number").fill(number)
    page.get_by_label("Expiration (MM/YY)").fill("12/34")
    page.get_by_label("CVC").fill("123")
    session_id = page.url.rstrip("/").rsplit("/", 1)[1]
    page.get_by_role("button").last.click()
    expect(page.get_by_role("heading", name="Billing overview")).to_be_visible()
    return session_id


def stored_invoices(services: Services, customer_id: str) -> list[Invoice]:
    with services.db.transaction() as session:
        return list(session.scalars(select(Invoice).where(Invoice.customer_id == customer_id)))


def plan_of(services: Services, customer_id: str) -> str:
    """The code of the customer's subscription's plan, as Billfold holds it now."""
    with services.db.transaction() as session:
        return lifecycle.subscription_of(session, customer_id).plan.code


def test_customer_upgrades_sees_invoices_pauses_cancels_resumes_and_changes_plan(
    page: Page,
    services: Services,
    live_server: str,
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
) -> None:
    seed_plans(services, stripe_api)
    email = sign_up(page)
    expect(page.get_by_test_id("plan-name")).to_have_text("Trial")
    tab(page, "Plan")
    expect(page.get_by_text("No invoices yet.")).to_be_visible()
    expect(page.get_by_role("button", name="Upgrade to Starter")).to_be_visible()

    upgrade_through_checkout(page, "Starter")
    customer = customer_of(services, email)
    # What `stripe listen --forward-to` would deliver: the subscription and its invoice.
    with httpx.Client(base_url=live_server) as webhooks:
        assert wait_until(lambda: "invoice.paid" in stripe_events.relay(webhooks), timeout=30)

    assert wait_until(lambda: plan_of(services, customer.id) == "starter", timeout=30)
    assert wait_until(lambda: len(stored_invoices(services, customer.id)) == 1, timeout=30)
    tab(page, "Overview")
    expect(page.get_by_test_id("plan-name")).to_have_text("Starter")
    expect(page.get_by_text("Active", exact=True)).to_be_visible()
    expect(page.get_by_text("starter · active")).to_be_visible()  # the new license
    expect(page.get_by_text("Renews on")).to_be_visible()

    # The invoice, with Stripe's hosted page and PDF.
    tab(page, "Plan")
    (invoice,) = stored_invoices(services, customer.id)
    row = page.get_by_role("row").filter(has_text=str(invoice.number))
    expect(row).to_contain_text("9.00 USD paid")
    expect(row).to_contain_text("Paid")
    expect(row.get_by_role("link", name="View invoice")).to_have_attribute(
        "href", str(invoice.hosted_invoice_url)
    )
    expect(row.get_by_role("link", name="PDF of invoice")).to_have_attribute(
        "href", str(invoice.invoice_pdf)
    )

    # Pause payments; the license follows. A second tab's stale button is refused in words.
    page.get_by_role("button", name="Pause payments").click()
    expect(notice(page)).to_have_text(
        "Payments are paused: nothing is charged until you resume them."
    )
    expect(page.get_by_text("Payments paused", exact=True)).to_be_visible()
    expect(page.get_by_test_id("license-status")).to_have_text("Paused")
    stale = page.context.new_page()
    stale.goto("/billing/plan")
    page.get_by_role("button", name="Resume payments").click()
    expect(notice(page)).to_have_text("Your plan will renew as usual.")
    expect(page.get_by_test_id("license-status")).to_have_text("Active")
    stale.get_by_role("button", name="Resume payments").click()
    expect(alert(stale)).to_have_text("The subscription is neither set to cancel nor paused")
    stale.close()

    page.get_by_role("button", name="Cancel at period end").click()
    expect(notice(page)).to_have_text("Your plan will end at the end of the current period.")
    expect(page.get_by_text("Active (cancels at period end)")).to_be_visible()
    expect(page.get_by_text("Ends on")).to_be_visible()

    page.get_by_role("button", name="Resume plan").click()
    expect(notice(page)).to_have_text("Your plan will renew as usual.")
    expect(page.get_by_text("Renews on")).to_be_visible()

    # A plan change shows what it charges before it is made (prorations go on the next
    # invoice by default: nothing now).
    page.get_by_role("button", name="Switch to Professional").click()
    expect(page.get_by_role("heading", name="Change to Professional")).to_be_visible()
    expect(page.get_by_test_id("due-now")).to_have_text("0.00 USD")
    expect(page.get_by_test_id("next-charge")).to_contain_text(" USD on ")
    page.get_by_role("button", name="Confirm change to Professional").click()
    expect(notice(page)).to_have_text("You are now on the Professional plan.")
    expect(page.get_by_role("listitem").filter(has_text="Professional")).to_contain_text(
        "Your plan"
    )
