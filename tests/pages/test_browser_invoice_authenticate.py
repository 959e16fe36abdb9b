"""A renewal the bank wants the customer to confirm, in Chromium: the dunning e-mail links to
Billfold's own page for the invoice, whose button confirms the invoice's payment with the
stand-in's Stripe.js and its 3-D Secure dialog; the invoice is then paid."""

from __future__ import annotations

import re

import httpx
import pytest
import stripe
from conftest import STRIPE_KEY
from playwright.sync_api import Page, expect
from sqlalchemy import select
from support.stripe_events import EventRelay
from support.waiting import wait_until

from billfold.mail.models import OutboxMail
from billfold.services import Services
from billfold.standin import LocalStripe
from billfold.subscriptions import lifecycle
from billfold.subscriptions.models import Invoice
from pages.journeys import notice, sign_up, tab, three_d_secure
from pages.test_browser_billing import customer_of
from pages.test_browser_plan import plan_of, seed_plans

pytestmark = pytest.mark.sqlite_only  # the browser tests run on SQLite only

ALWAYS_AUTHENTICATE = "4000002760003184"  # 3-D Secure on every charge, even off-session


def subscribe_with_3ds_card(page: Page) -> None:
    """Upgrade to Starter on the stand-in's Checkout page, approving its 3-D Secure step."""
    tab(page, "Plan")
    page.get_by_role("button", name="Upgrade to Starter").click()
    page.get_by_label("Card number").fill(ALWAYS_AUTHENTICATE)
    page.get_by_label("Expiration (MM/YY)").fill("12/34")
    page.get_by_label("CVC").fill("123")
    page.get_by_role("button", name="Subscribe").click()
    page.get_by_role("button", name="Complete authentication").click()
    expect(page.get_by_role("heading", name="Billing overview")).to_be_visible()


def confirm_mail_link(services: Services, email: str) -> str | None:
    """The link in the "please confirm your payment" e-mail, once it is queued."""
    with services.db.transaction() as session:
        body = session.scalar(
            select(OutboxMail.body_text).where(
                OutboxMail.to_address == email, OutboxMail.subject.startswith("Please confirm")
            )
        )
    found = re.search(r"https?://\S+/authenticate", body or "")
    return found.group(0) if found else None


def invoice_status(services: Services, invoice_id: str) -> str | None:
    with services.db.transaction() as session:
        return session.scalar(select(Invoice.status).where(Invoice.id == invoice_id))


def test_a_renewal_needing_authentication_is_confirmed_from_the_mail_link_and_paid(
    page: Page,
    services: Services,
    live_server: str,
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
    localstripe: LocalStripe,
) -> None:
    seed_plans(services, stripe_api)
    email = sign_up(page)
    subscribe_with_3ds_card(page)
    customer = customer_of(services, email)
    webhooks = httpx.Client(base_url=live_server)
    assert wait_until(lambda: "invoice.paid" in stripe_events.relay(webhooks), timeout=30)
    assert wait_until(lambda: plan_of(services, customer.id) == "starter", timeout=30)

    # The renewal: the bank wants the customer (the card asks even off-session).
    with services.db.transaction() as session:
        stripe_subscription = lifecycle.subscription_of(session, customer.id)
        subscription_id = str(stripe_subscription.stripe_subscription_id)
    renewed = httpx.post(
        f"{localstripe.url}/v1/test_helpers/subscriptions/{subscription_id}/advance",
        headers={"Authorization": f"Bearer {STRIPE_KEY}"},
    )
    assert renewed.status_code == 200, renewed.text
    stripe_invoice_id = renewed.json()["latest_invoice"]
    assert wait_until(
        lambda: "invoice.payment_action_required" in stripe_events.relay(webhooks), timeout=30
    )
    assert wait_until(lambda: confirm_mail_link(services, email) is not None, timeout=30)
    link = str(confirm_mail_link(services, email))
    with services.db.transaction() as session:
        invoice = session.scalar(
            select(Invoice).where(Invoice.stripe_invoice_id == stripe_invoice_id)
        )
        assert invoice is not None
        invoice_id, number = invoice.id, str(invoice.number)
    assert link == f"{live_server}/billing/invoices/{invoice_id}/authenticate"

    page.goto(link)
    expect(page.get_by_role("heading", name="Confirm your payment")).to_be_visible()
    expect(page.get_by_test_id("invoice-number")).to_have_text(number)
    expect(page.get_by_test_id("invoice-amount")).to_have_text("9.00 USD")
    page.get_by_role("button", name="Confirm with my bank").click()
    three_d_secure(page, approve=True)

    expect(notice(page)).to_have_text("Payment complete: your invoice is paid.")
    expect(page.get_by_test_id("invoice-paid")).to_be_visible()
    assert stripe_api.v1.invoices.retrieve(stripe_invoice_id).status == "paid"
    assert wait_until(lambda: "invoice.paid" in stripe_events.relay(webhooks), timeout=30)
    assert wait_until(lambda: invoice_status(services, invoice_id) == "paid", timeout=30)
    webhooks.close()
