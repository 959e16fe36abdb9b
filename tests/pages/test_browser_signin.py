"""In a real browser: a new customer signs up and lands on the overview; /docs renders
offline under the pages' Content-Security-Policy."""

from __future__ import annotations

import pytest
from factories import unique_email
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.sqlite_only  # the browser tests run on SQLite only


def sign_up(page: Page, email: str, password: str = "long enough 1") -> None:
    page.goto("/billing")
    page.get_by_role("link", name="Create an account").click()
    page.get_by_label("Name").fill("Ada Lovelace")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("heading", name="Billing overview")).to_be_visible()


def test_customer_signs_up_signs_out_and_signs_in_again(page: Page) -> None:
    email = unique_email()
    sign_up(page, email)
    expect(page.get_by_text(email)).to_be_visible()

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("status")).to_have_text("You are signed out.")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill("wrong password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("E-mail or password is wrong")
    page.get_by_label("Password").fill("long enough 1")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Billing overview")).to_be_visible()


def test_api_docs_render_without_the_internet(page: Page, live_server: str) -> None:
    elsewhere: list[str] = []
    page.on(
        "request",
        lambda r: None if r.url.startswith(live_server + "/") else elsewhere.append(r.url),
    )
    page.goto("/docs")
    expect(page.get_by_role("heading", name="Billfold")).to_be_visible()
    expect(page.get_by_text("OAS 3.1")).to_be_visible()
    # Swagger UI puts zero-width spaces after the slashes of the paths it shows.
    expect(page.locator("[data-path='/credits/consume']").first).to_be_visible()
    assert elsewhere == []
