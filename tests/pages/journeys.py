"""Steps the browser tests share: signing up, typing a card into (the stand-in's) Stripe.js
field, answering its 3-D Secure dialog, and the catalog and packages a shop would have."""

from __future__ import annotations

import httpx
from factories import unique_email
from playwright.sync_api import Locator, Page, expect

from billfold.auth.service import create_api_key
from billfold.credits import packages
from billfold.payments import catalog
from billfold.services import Services

VISA = "4242424242424242"
THREE_D_SECURE = "4000002500003155"
INSUFFICIENT_FUNDS = "4000000000009995"
PASSWORD = "long enough 1"


def sign_up(page: Page, email: str | None = None) -> str:
    email = email or unique_email()
    page.goto("/billing/sign-up")
    page.get_by_label("Name").fill("Ada Lovelace")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("heading", name="Billing overview")).to_be_visible()
    return email


def type_card(page: Page, number: str) -> None:
    """Fill Stripe.js's card field (the stand-in's fake one: plain inputs)."""
    field = page.locator("#card-element")
    field.get_by_placeholder("number").fill(number)
    field.get_by_placeholder("exp_month").fill("12")
    field.get_by_placeholder("exp_year").fill("34")
    field.get_by_placeholder("cvc").fill("123")
    field.get_by_placeholder("postal_code").fill("10001")


def three_d_secure(page: Page, *, approve: bool) -> None:
    """Answer the bank's 3-D Secure dialog that Stripe.js shows."""
    name = "Complete authentication" if approve else "Fail authentication"
    page.get_by_role("button", name=name).click()


def tab(page: Page, name: str) -> None:
    """Go to one of the billing pages by its tab."""
    page.get_by_role("navigation", name="Billing").get_by_role("link", name=name).click()


def notice(page: Page) -> Locator:
    return page.get_by_role("status")


def alert(page: Page) -> Locator:
    return page.get_by_role("alert")


def save_card(page: Page, number: str = VISA) -> None:
    """Save a card on the Cards page (approving 3-D Secure when the card asks for it)."""
    tab(page, "Cards")
    type_card(page, number)
    page.get_by_role("button", name="Save card").click()
    if number == THREE_D_SECURE:
        three_d_secure(page, approve=True)
    expect(notice(page)).to_have_text(f"Visa ending in {number[-4:]} saved.")


def seed_shop(services: Services) -> tuple[str, str]:
    """A credit package and a product; answers their IDs."""
    with services.db.transaction() as session:
        package = packages.create_package(
            session,
            name="Starter",
            credits=1000,
            price=900,
            currency="usd",
            active=True,
            actor="test",
        )
        product = catalog.create_product(
            session,
            catalog.ProductFields(name="Widget", unit_amount=1999, currency="usd", stock=10),
            actor="test",
        )
        return package.id, product.id


def service_key(services: Services) -> str:
    with services.db.transaction() as session:
        _key, plaintext = create_api_key(session, "backend", actor="test")
    return plaintext


def spend(base_url: str, key: str, customer_id: str, amount: int, idempotency_key: str) -> int:
    """The host backend spends credits through the API (as it would on a billable action)."""
    answer = httpx.post(
        f"{base_url}/credits/consume",
        headers={"authorization": f"Bearer {key}"},
        json={
            "customerId": customer_id,
            "amount": amount,
            "idempotencyKey": idempotency_key,
            "reason": "render",
        },
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    balance: int = answer.json()["data"]["balance"]
    return balance
