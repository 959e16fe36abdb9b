"""The README's screenshots of the billing pages, taken with the browser tests' set-up.

Run on purpose only: `BILLFOLD_SCREENSHOTS=1 ./scripts/test tests/pages/test_browser_screenshots.py`
rewrites docs/screenshots/*.png (desktop and phone widths)."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
import stripe
from playwright.sync_api import Browser, Page, ViewportSize, expect
from support.stripe_events import EventRelay
from support.waiting import wait_until

from billfold.services import Services
from pages.journeys import VISA, save_card, seed_shop, sign_up, tab, three_d_secure, type_card
from pages.test_browser_billing import customer_of
from pages.test_browser_plan import plan_of, seed_plans, stored_invoices, upgrade_through_checkout

pytestmark = [
    pytest.mark.sqlite_only,
    pytest.mark.skipif(
        not os.environ.get("BILLFOLD_SCREENSHOTS"), reason="set BILLFOLD_SCREENSHOTS=1 to retake"
    ),
]
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
PHONE: ViewportSize = {"width": 390, "height": 844}


def shoot(page: Page, name: str, browser: Browser | None = None) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}-desktop.png"), full_page=True)
    if browser is not None:
        phone = browser.new_context(
            viewport=PHONE, device_scale_factor=2, storage_state=page.context.storage_state()
        )
        view = phone.new_page()
        view.goto(page.url)
        view.screenshot(path=str(SHOTS / f"{name}-phone.png"), full_page=True)
        phone.close()


def test_take_the_readme_screenshots(
    page: Page,
    browser: Browser,
    services: Services,
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
    live_server: str,
) -> None:
    seed_plans(services, stripe_api)
    seed_shop(services)
    page.goto("/billing/sign-in")
    shoot(page, "sign-in", browser)
    email = sign_up(page)
    save_card(page, VISA)
    shoot(page, "cards", browser)
    tab(page, "Credits")
    page.get_by_label("Starter").check()
    page.get_by_role("button", name="Buy credits").click()
    expect(page.get_by_test_id("credit-balance")).to_have_text("1,000 credits")
    page.get_by_label("Recharge automatically when my balance runs low").check()
    page.get_by_label("When the balance falls below (credits)").fill("200")
    page.get_by_label("Buy at least (credits)").fill("1000")
    page.get_by_role("button", name="Save auto-recharge").click()
    shoot(page, "credits", browser)
    tab(page, "Overview")
    shoot(page, "overview", browser)
    tab(page, "Plan")
    shoot(page, "plan", browser)
    upgrade_through_checkout(page, "Starter")
    with httpx.Client(base_url=live_server) as webhooks:
        assert wait_until(lambda: "invoice.paid" in stripe_events.relay(webhooks), timeout=30)
    customer_id = customer_of(services, email).id
    assert wait_until(lambda: bool(stored_invoices(services, customer_id)), timeout=30)
    assert wait_until(lambda: plan_of(services, customer_id) == "starter", timeout=30)
    tab(page, "Plan")
    expect(page.get_by_role("link", name="View invoice")).to_be_visible()
    shoot(page, "plan-paid", browser)
    page.get_by_role("button", name="Switch to Professional").click()
    expect(page.get_by_test_id("due-now")).to_be_visible()
    shoot(page, "change-plan", browser)
    tab(page, "Orders")
    page.get_by_role("button", name="Order Widget").click()
    page.get_by_label("A new card").check()
    type_card(page, "4000002500003155")
    page.get_by_role("button", name="Pay 19.99 USD").click()
    three_d_secure(page, approve=True)
    expect(page.get_by_role("button", name="Confirm with my bank")).to_be_visible()
    shoot(page, "authenticate", browser)
    page.get_by_role("button", name="Confirm with my bank").click()
    expect(page.get_by_role("button", name="Complete authentication")).to_be_visible()
    shoot(page, "three-d-secure")
    three_d_secure(page, approve=True)
    expect(page.get_by_test_id("order-status")).to_have_text("Paid")
    shoot(page, "order-paid", browser)
