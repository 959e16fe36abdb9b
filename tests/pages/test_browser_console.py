"""In a real browser, an operator runs the console: finds a customer by e-mail and refunds
part of a payment, grants credits, replays a failed webhook, retries a dead job; a customer
is refused every console page.

With BILLFOLD_CONSOLE_SCREENSHOTS=<dir>, the tests also leave screenshots of the pages
there (docs/screenshots/ holds the README's)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import stripe
from conftest import WEBHOOK_SECRET
from factories import register, unique_email
from fastapi.testclient import TestClient
from playwright.sync_api import Page, expect
from sqlalchemy import select
from support.day import a_day_of_billfold
from support.netfault import FaultyLink
from support.payments import make_product, saved_card
from support.stripe_events import delivery, event
from support.waiting import wait_until

from billfold.auth.models import Role
from billfold.customers import service
from billfold.customers.models import Customer
from billfold.customers.service import LINK_JOB
from billfold.customers.stripe_sync import ensure_stripe_customer
from billfold.jobs.models import Job, JobStatus
from billfold.jobs.worker import Worker
from billfold.services import Services
from billfold.standin import LocalStripe
from billfold.webhooks.models import EventStatus, StripeEvent

pytestmark = pytest.mark.sqlite_only  # the browser tests run on SQLite only

PASSWORD = "operator-password-1"
SHOTS = os.environ.get("BILLFOLD_CONSOLE_SCREENSHOTS")


def _snap(page: Page, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)


def _operator(services: Services) -> str:
    email = unique_email("operator")
    with services.db.transaction() as session:
        service.register(session, name="Operator", email=email, password=PASSWORD, role=Role.ADMIN)
    return email


def _sign_in(page: Page, email: str, password: str = PASSWORD, start: str = "/admin") -> None:
    page.goto(start)
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def _paid(
    client: TestClient,
    admin: dict[str, str],
    stripe_api: stripe.StripeClient,
    customer: dict[str, Any],
    amount: int,
) -> str:
    product = make_product(client, admin, unit_amount=amount)
    pm = saved_card(client, stripe_api, customer["headers"])
    paid = client.post(
        "/payments/create-intent",
        json={"productId": product["id"], "quantity": 1, "paymentMethodId": pm},
        headers=customer["headers"],
    )
    assert paid.json()["data"]["status"] == "succeeded", paid.text
    payment_id: str = paid.json()["data"]["paymentId"]
    return payment_id


def _stored(services: Services, model: Any, object_id: str) -> Any:
    with services.db.transaction() as session:
        return session.get(model, object_id)


def test_admin_finds_a_customer_by_email_refunds_part_of_a_payment_and_sees_the_refund(
    page: Page,
    client: TestClient,
    services: Services,
    admin: dict[str, str],
    buyer: dict[str, Any],
    stripe_api: stripe.StripeClient,
) -> None:
    payment_id = _paid(client, admin, stripe_api, buyer, 4200)
    _sign_in(page, _operator(services))
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    _snap(page, "console-dashboard")

    page.get_by_role("link", name="Customers").click()
    page.get_by_label("Find a customer").fill(buyer["email"])
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_role("cell", name=buyer["email"])).to_be_visible()
    _snap(page, "console-customers")
    page.get_by_role("link", name=buyer["name"]).click()
    expect(page.get_by_role("heading", name=buyer["email"])).to_be_visible()

    payment = page.locator(f"tr[data-payment='{payment_id}']")
    payment.get_by_text("Refund…").click()
    payment.get_by_label(re.compile(r"^Amount")).fill("15.00")
    payment.get_by_label("Reason").select_option("requested_by_customer")
    payment.get_by_label("Note").fill("one item arrived broken")
    payment.get_by_role("button", name="Refund payment").click()

    expect(page.get_by_role("status")).to_contain_text("Refund ref_")
    expect(page.get_by_test_id(f"refunded-{payment_id}")).to_have_text("15.00 USD")
    expect(page.get_by_text("one item arrived broken")).to_be_visible()
    _snap(page, "console-customer")
    refunded = client.get(f"/payments/{payment_id}", headers=admin).json()["data"]
    assert refunded["amountRefunded"] == 1500
    assert [r["notes"] for r in refunded["refunds"]] == ["one item arrived broken"]


def test_admin_grants_credits_and_sees_the_balance_and_the_ledger(
    page: Page, services: Services, buyer: dict[str, Any]
) -> None:
    _sign_in(page, _operator(services), start=f"/admin/customers/{buyer['customerId']}")
    expect(page.get_by_test_id("credit-balance")).to_have_text("0")

    page.get_by_label("Change").select_option("grant")
    page.get_by_label("Credits", exact=True).fill("250")
    page.get_by_label("Reason").last.fill("goodwill after an outage")
    page.get_by_role("button", name="Record credits").click()

    expect(page.get_by_role("status")).to_contain_text("balance is now 250 credits")
    expect(page.get_by_test_id("credit-balance")).to_have_text("250")
    expect(page.get_by_role("cell", name="goodwill after an outage", exact=True)).to_be_visible()


def test_admin_replays_a_failed_webhook(
    page: Page,
    client: TestClient,
    services: Services,
    buyer: dict[str, Any],
    stripe_link: FaultyLink,
    stripe_api: stripe.StripeClient,
) -> None:
    # Under load the inline link at sign-up may have given up (the worker links it later).
    stripe_id = ensure_stripe_customer(services, buyer["customerId"], wait=30)
    customer = stripe_api.v1.customers.retrieve(stripe_id).to_dict()
    stripe_link.down()  # the handler re-reads the customer from Stripe, so it fails until…
    body, headers = delivery(event("customer.updated", customer), WEBHOOK_SECRET)
    received = client.post("/webhooks/stripe", content=body, headers=headers)
    assert received.status_code == 200, received.text
    event_id = received.json()["data"]["id"]
    assert wait_until(
        lambda: _stored(services, StripeEvent, event_id).status == EventStatus.FAILED, 60
    )
    stripe_link.up()  # …Stripe is back.

    _sign_in(page, _operator(services), start="/admin/webhooks")
    page.get_by_label("Status").select_option("failed")
    page.get_by_role("button", name="Filter").click()
    row = page.locator(f"tr[data-event='{event_id}']")
    expect(row.get_by_text("failed", exact=True)).to_be_visible()
    _snap(page, "console-webhooks")
    row.get_by_role("button", name=re.compile("^Replay customer.updated")).click()

    expect(page.get_by_role("status")).to_contain_text("Replaying customer.updated")
    assert wait_until(
        lambda: _stored(services, StripeEvent, event_id).status == EventStatus.PROCESSED, 30
    )
    page.goto("/admin/webhooks?status=processed")
    expect(page.locator(f"tr[data-event='{event_id}']").get_by_text("processed")).to_be_visible()


def test_admin_retries_a_dead_job_and_the_customer_gets_linked(
    page: Page, client: TestClient, services: Services, stripe_link: FaultyLink
) -> None:
    stripe_link.down()
    customer_id = register(client)["user"]["customerId"]
    with services.db.transaction() as session:
        job_id = session.scalar(select(Job.id).where(Job.kind == LINK_JOB))
    assert job_id is not None
    assert wait_until(lambda: _stored(services, Job, job_id).status == JobStatus.DEAD, 60)
    stripe_link.up()

    _sign_in(page, _operator(services), start="/admin/jobs")
    row = page.locator(f"tr[data-job='{job_id}']")
    expect(row.get_by_text("dead", exact=True)).to_be_visible()
    _snap(page, "console-jobs")
    row.get_by_role("button", name=f"Retry {LINK_JOB} {job_id}").click()

    expect(page.get_by_role("status")).to_contain_text(f"Job {job_id} ({LINK_JOB}) will run again")
    assert wait_until(
        lambda: _stored(services, Customer, customer_id).stripe_customer_id is not None, 30
    )
    page.goto(f"/admin/customers/{customer_id}")
    expect(page.get_by_test_id("stripe-link")).to_contain_text("cus_")


def test_a_customer_is_refused_every_console_page(page: Page, client: TestClient) -> None:
    email = unique_email()
    register(client, email=email)
    _sign_in(page, email, "correct horse 1", start="/billing")
    expect(page.get_by_role("heading", name="Billing overview")).to_be_visible()
    for path in ("/admin", "/admin/customers", "/admin/jobs", "/admin/webhooks", "/admin/audit"):
        answer = page.goto(path)
        assert answer is not None
        assert answer.status == 404, path
        expect(page.get_by_role("link", name="Customers")).to_have_count(0)


@pytest.mark.skipif(not SHOTS, reason="set BILLFOLD_CONSOLE_SCREENSHOTS to take the screenshots")
def test_console_tour_for_the_readme(
    page: Page,
    client: TestClient,
    services: Services,
    admin: dict[str, str],
    worker: Worker[Services],
    stripe_link: FaultyLink,
    stripe_api: stripe.StripeClient,
    localstripe: LocalStripe,
) -> None:
    """A day of Billfold, then every console page as an operator sees it."""
    ids = a_day_of_billfold(client, admin, services, worker, stripe_link, stripe_api, localstripe)
    _sign_in(page, _operator(services))
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    for name, path in [
        ("console-dashboard", "/admin"),
        ("console-customers", "/admin/customers"),
        ("console-customer", f"/admin/customers/{ids['ada']}"),
        ("console-payments", "/admin/payments"),
        ("console-refunds", "/admin/refunds"),
        ("console-webhooks", "/admin/webhooks"),
        ("console-jobs", "/admin/jobs"),
        ("console-catalog", "/admin/catalog"),
        ("console-audit", "/admin/audit"),
    ]:
        page.goto(path)
        expect(page.locator("main h1")).to_be_visible()
        _snap(page, name)
