"""In a real browser, an operator manages the host app's webhook endpoints: adds one for a
few event types and copies its secret (shown once), watches a delivery reach a real
receiver that verifies it, redelivers it, is told why a private URL is refused, disables
the endpoint, rotates its secret and deletes it.

With BILLFOLD_CONSOLE_SCREENSHOTS=<dir>, the test also leaves screenshots of the pages."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from factories import unique_email
from playwright.sync_api import Page, expect
from support.outbound_webhooks import FAST_WEBHOOKS, emit_events
from support.waiting import wait_until
from support.webhook_receiver import WebhookReceiver

from billfold.auth.models import Role
from billfold.customers import service
from billfold.services import Services

pytestmark = pytest.mark.sqlite_only  # the browser tests run on SQLite only

PASSWORD = "operator-password-1"
SHOTS = os.environ.get("BILLFOLD_CONSOLE_SCREENSHOTS")


@pytest.fixture
def settings_overrides(server_port: int) -> dict[str, Any]:
    return {
        "pages_secure_cookies": False,
        "backend_url": f"http://127.0.0.1:{server_port}",
        **FAST_WEBHOOKS,
    }


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver.start()
    yield server
    server.stop()


def _snap(page: Page, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)


def _sign_in_operator(page: Page, services: Services) -> None:
    email = unique_email("operator")
    with services.db.transaction() as session:
        service.register(session, name="Operator", email=email, password=PASSWORD, role=Role.ADMIN)
    page.goto("/admin")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()


def test_operator_adds_an_endpoint_redelivers_disables_rotates_and_deletes_it(
    page: Page, services: Services, receiver: WebhookReceiver
) -> None:
    _sign_in_operator(page, services)
    page.get_by_role("navigation", name="Console").get_by_role("link", name="Endpoints").click()
    expect(page.get_by_role("heading", name="Webhook endpoints")).to_be_visible()

    # A private address is refused, with the reason on the page.
    page.get_by_label("URL").fill("http://10.20.30.40/hooks")
    page.get_by_role("button", name="Add endpoint").click()
    expect(page.get_by_role("alert")).to_contain_text("private, loopback or link-local")

    page.get_by_label("URL").fill(receiver.url)
    page.get_by_label("Description").fill("CRM sync")
    page.get_by_label("Only the ones ticked").check()
    page.get_by_label("customer.updated").check()
    page.get_by_label("payment.succeeded").check()
    page.get_by_role("button", name="Add endpoint").click()
    expect(page.get_by_role("heading", name="Endpoint added: its signing secret")).to_be_visible()
    secret = page.get_by_role("textbox", name="Signing secret").input_value()
    assert secret.startswith("whsec_")
    page.get_by_role("button", name="Copy secret").click()
    expect(page.get_by_text("Copied.")).to_be_visible()
    _snap(page, "console-webhook-endpoint-created")
    receiver.secrets.append(secret)

    [event_id] = emit_events(services, "cust_browser", 1)
    assert wait_until(lambda: receiver.accepted_ids() == [event_id], timeout=20)
    page.reload()
    expect(page.get_by_role("textbox", name="Signing secret")).to_have_count(0)  # shown only once
    row = page.locator("tr[data-delivery]")
    expect(row).to_have_count(1)
    expect(row.get_by_text("delivered")).to_be_visible()
    page.get_by_role("button", name=f"Redeliver customer.updated {event_id}").click()
    expect(page.get_by_role("status")).to_contain_text("will be sent again")
    assert wait_until(lambda: receiver.accepted_ids() == [event_id, event_id], timeout=20)
    page.reload()
    expect(page.locator("tr[data-delivery]")).to_have_count(2)
    _snap(page, "console-webhook-endpoint")

    page.get_by_role("button", name="Disable").click()
    expect(page.get_by_role("status")).to_contain_text("Endpoint disabled")
    expect(page.get_by_role("button", name="Enable")).to_be_visible()

    page.get_by_role("button", name="Rotate secret").click()
    expect(page.get_by_role("heading", name="New signing secret")).to_be_visible()
    rotated = page.get_by_role("textbox", name="Signing secret").input_value()
    assert rotated.startswith("whsec_")
    assert rotated != secret

    page.get_by_role("link", name="All endpoints").click()
    expect(page.get_by_role("cell", name="customer.updated, payment.succeeded")).to_be_visible()
    expect(page.locator("tr[data-endpoint]").get_by_text("disabled", exact=True)).to_be_visible()
    _snap(page, "console-webhook-endpoints")
    page.get_by_role("link", name=receiver.url).click()
    page.get_by_role("button", name="Delete endpoint").click()
    expect(page.get_by_role("status")).to_contain_text(f"Endpoint {receiver.url} deleted.")
    expect(page.get_by_text("No endpoint yet.")).to_be_visible()
