"""Auto-recharge in the browser: set it up on the credits page, spend through the API, see
the recharge; and a recharge the bank wants confirmed, finished from the e-mail's link."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select
from support.waiting import wait_until

from billfold.credits import ledger
from billfold.credits.models import EntryKind
from billfold.mail.models import OutboxMail
from billfold.services import Services
from pages.journeys import (
    THREE_D_SECURE,
    VISA,
    notice,
    save_card,
    seed_shop,
    service_key,
    sign_up,
    spend,
    tab,
    three_d_secure,
)
from pages.test_browser_billing import customer_of

pytestmark = pytest.mark.sqlite_only  # the browser tests run on SQLite only


def give_credits(services: Services, customer_id: str, credits: int) -> None:
    with services.db.transaction() as session:
        ledger.post(
            session, customer_id, credits, EntryKind.GRANT, idempotency_key="welcome", actor="test"
        )


def turn_on_auto_recharge(page: Page, *, below: int, buy: int) -> None:
    tab(page, "Credits")
    page.get_by_label("Recharge automatically when my balance runs low").check()
    page.get_by_label("When the balance falls below (credits)").fill(str(below))
    page.get_by_label("Buy at least (credits)").fill(str(buy))
    page.get_by_role("button", name="Save auto-recharge").click()
    expect(notice(page)).to_have_text("Auto-recharge is on.")


def balance_of(services: Services, customer_id: str) -> int:
    with services.db.transaction() as session:
        return ledger.balance(session, customer_id)


def test_spending_below_the_threshold_recharges_and_the_page_shows_it(
    page: Page, services: Services, live_server: str
) -> None:
    seed_shop(services)
    email = sign_up(page)
    customer = customer_of(services, email)
    give_credits(services, customer.id, 1000)
    save_card(page, VISA)
    turn_on_auto_recharge(page, below=500, buy=1000)

    assert spend(live_server, service_key(services), customer.id, 600, "render-1") == 400
    assert wait_until(lambda: balance_of(services, customer.id) == 1400, timeout=30)

    page.reload()
    expect(page.get_by_test_id("credit-balance")).to_have_text("1,400 credits")
    expect(page.get_by_text("recharge of 1000 credits")).to_be_visible()
    expect(page.get_by_role("cell", name="-600")).to_be_visible()


def test_a_recharge_the_bank_must_confirm_is_finished_from_the_emails_link(
    page: Page, services: Services, live_server: str
) -> None:
    seed_shop(services)
    email = sign_up(page)
    customer = customer_of(services, email)
    give_credits(services, customer.id, 1000)
    save_card(page, THREE_D_SECURE)
    turn_on_auto_recharge(page, below=500, buy=1000)

    spend(live_server, service_key(services), customer.id, 600, "render-1")

    def mail() -> OutboxMail | None:
        with services.db.transaction() as session:
            return session.scalar(
                select(OutboxMail).where(
                    OutboxMail.to_address == email, OutboxMail.kind == "auto_recharge_failed"
                )
            )

    assert wait_until(lambda: mail() is not None, timeout=30)
    found = mail()
    assert found is not None
    link = re.search(r"https?://\S+/authenticate", found.body_text)
    assert link is not None, found.body_text
    assert link.group(0).startswith(live_server)

    page.goto(link.group(0))
    expect(page.get_by_role("heading", name="Complete your payment")).to_be_visible()
    expect(page.get_by_role("alert")).to_have_text("Your bank asks you to confirm this payment.")
    expect(page.get_by_label("Visa •••• 3155")).to_be_checked()
    page.get_by_role("button", name="Pay 9.00 USD").click()
    page.get_by_role("button", name="Confirm with my bank").click()
    three_d_secure(page, approve=True)

    expect(notice(page)).to_have_text("Payment complete: 1,000 credits added.")
    expect(page.get_by_test_id("credit-balance")).to_have_text("1,400 credits")
    assert balance_of(services, customer.id) == 1400
