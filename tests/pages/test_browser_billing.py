"""Customers' journeys through the billing pages, in Chromium, against a live Billfold and
the Stripe stand-in (its Stripe.js, its 3-D Secure dialog)."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from billfold.auth.models import User
from billfold.credits import ledger
from billfold.customers.models import Customer
from billfold.payments.models import Order, Payment, PaymentStatus
from billfold.services import Services
from pages.journeys import (
    INSUFFICIENT_FUNDS,
    THREE_D_SECURE,
    VISA,
    alert,
    notice,
    save_card,
    seed_shop,
    sign_up,
    tab,
    three_d_secure,
    type_card,
)

pytestmark = pytest.mark.sqlite_only  # the browser tests run on SQLite only


def customer_of(services: Services, email: str) -> Customer:
    with services.db.transaction() as session:
        customer = session.scalar(
            select(Customer).join(User).where(User.email_normalized == email.lower())
        )
        assert customer is not None
        return customer


def order_widget(page: Page) -> None:
    tab(page, "Orders")
    page.get_by_role("button", name="Order Widget").click()
    expect(page.get_by_role("heading", name="Order")).to_be_visible()


def test_customer_saves_a_card_buys_credits_and_sees_them(page: Page, services: Services) -> None:
    seed_shop(services)
    email = sign_up(page)
    save_card(page, VISA)
    expect(page.get_by_text("Visa •••• 4242")).to_be_visible()

    tab(page, "Credits")
    page.get_by_label("Starter").check()
    page.get_by_label("Visa •••• 4242").check()
    page.get_by_role("button", name="Buy credits").click()

    expect(notice(page)).to_have_text("Payment complete: 1,000 credits added.")
    expect(page.get_by_test_id("credit-balance")).to_have_text("1,000 credits")
    history = page.get_by_role("table")
    expect(history.get_by_role("cell", name="+1,000")).to_be_visible()
    with services.db.transaction() as session:
        assert ledger.balance(session, customer_of(services, email).id) == 1000


def test_customer_pays_an_order_with_a_3ds_card(page: Page, services: Services) -> None:
    seed_shop(services)
    sign_up(page)
    order_widget(page)
    page.get_by_label("A new card").check()
    type_card(page, THREE_D_SECURE)
    page.get_by_role("button", name="Pay 19.99 USD").click()
    three_d_secure(page, approve=True)  # the bank checks the card as it is saved
    page.get_by_role("button", name="Confirm with my bank").click()
    three_d_secure(page, approve=True)  # and the payment itself

    expect(notice(page)).to_have_text("Payment complete: your order is paid.")
    expect(page.get_by_test_id("order-status")).to_have_text("Paid")


def test_refusing_3ds_says_so_and_charges_nothing(page: Page, services: Services) -> None:
    seed_shop(services)
    email = sign_up(page)
    order_widget(page)
    order_url = page.url
    type_card(page, THREE_D_SECURE)
    page.get_by_role("button", name="Pay 19.99 USD").click()
    three_d_secure(page, approve=False)

    expect(alert(page)).to_contain_text("authentication failed")
    expect(page.get_by_test_id("order-status")).to_have_text("Pending")
    assert page.url == order_url
    customer = customer_of(services, email)
    with services.db.transaction() as session:
        paid = session.scalars(
            select(Payment).where(
                Payment.customer_id == customer.id, Payment.status == PaymentStatus.SUCCEEDED
            )
        ).all()
        assert paid == []


def test_a_card_without_funds_is_refused_with_the_reason(page: Page, services: Services) -> None:
    seed_shop(services)
    sign_up(page)
    order_widget(page)
    type_card(page, INSUFFICIENT_FUNDS)
    page.get_by_role("button", name="Pay 19.99 USD").click()

    expect(alert(page)).to_contain_text("insufficient funds")
    expect(page.get_by_test_id("order-status")).to_have_text("Pending")


def test_another_customers_ids_are_not_found(page: Page, services: Services) -> None:
    seed_shop(services)
    sign_up(page)
    order_widget(page)
    theirs = page.url.rsplit("/", 1)[1]
    page.get_by_role("button", name="Sign out").click()

    sign_up(page)
    for path in (
        f"/billing/orders/{theirs}",
        "/billing/orders/ord_nonexistent",
        "/billing/payments/pay_nonexistent/authenticate",
    ):
        answer = page.goto(path)
        assert answer is not None
        assert answer.status == 404, path
        expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    with services.db.transaction() as session:
        order = session.get(Order, theirs)
        assert order is not None
        assert order.payment_id is None
    assert re.search(r"/billing/payments/pay_nonexistent/authenticate$", page.url)
