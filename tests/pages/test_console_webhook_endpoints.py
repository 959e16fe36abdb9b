"""The console's webhook endpoints over HTTP (no browser): add one and see its secret once,
filter, disable, rotate, read the delivery log and redeliver to a real receiver, delete;
bad input is a message on the page, never a 500; only admins see any of it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from factories import admin_token, auth, register, unique_email
from fastapi.testclient import TestClient
from sqlalchemy import select
from support.outbound_webhooks import FAST_WEBHOOKS, emit_events
from support.pages import sign_in
from support.transactions import transaction_open_at_lookups
from support.webhook_receiver import WebhookReceiver

from billfold.auth.models import Role
from billfold.customers import service
from billfold.jobs.worker import Worker
from billfold.kit.audit import AuditEntry
from billfold.services import Services
from billfold.webhooks.outbound.models import WebhookEndpoint

PASSWORD = "admin-password-1"
LIST = "/admin/webhook-endpoints"
_SECRET = re.compile(r"whsec_[A-Za-z0-9+/=]+")


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


def _operator(client: TestClient, services: Services) -> str:
    email = unique_email("operator")
    with services.db.transaction() as session:
        made = service.register(
            session, name="Operator", email=email, password=PASSWORD, role=Role.ADMIN
        )
        admin_id = made.user_id
    sign_in(client, email, PASSWORD)
    return admin_id


def _post(client: TestClient, path: str, form: dict[str, Any], *, page: str) -> Any:
    """Post the form whose action is `path` on `page`, with that form's CSRF token."""
    html = client.get(page).text
    chunk = html.split(f'action="{path}"', 1)[1].split("</form>", 1)[0]
    token = re.search(r'name="csrf_token" value="([0-9a-f]+)"', chunk)
    assert token, f"no form posting to {path} on {page}"
    return client.post(path, data={**form, "csrf_token": token.group(1)}, follow_redirects=False)


def _message(client: TestClient, response: Any) -> str:
    """The flash message of the page a redirect lands on."""
    assert response.status_code == 303, response.text
    page = client.get(response.headers["location"])
    assert page.status_code == 200
    found = re.search(r'<p class="message (\w+)" role="\w+">([^<]*)</p>', page.text)
    assert found, page.text
    return f"{found.group(1)}: {found.group(2)}"


def _endpoints(services: Services) -> list[WebhookEndpoint]:
    with services.db.transaction() as session:
        found = list(session.scalars(select(WebhookEndpoint)))
        session.expunge_all()
        return found


def _create(client: TestClient, url: str, **form: Any) -> tuple[str, str]:
    """Add an endpoint on the list page; answers its ID and the secret the page showed."""
    made = _post(client, LIST, {"url": url, "filter": "all", **form}, page=LIST)
    assert made.status_code == 303, made.text  # a reload of the next page posts nothing
    endpoint_id = re.fullmatch(rf"{LIST}/(whe_\w+)", made.headers["location"])
    assert endpoint_id, made.headers["location"]
    shown = client.get(made.headers["location"]).text
    assert "Endpoint added: its signing secret" in shown
    secret = _SECRET.search(shown)
    assert secret, shown
    return endpoint_id.group(1), secret.group(0)


def test_operator_adds_an_endpoint_sees_its_secret_once_and_deliveries_verify_with_it(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    receiver: WebhookReceiver,
) -> None:
    admin_id = _operator(client, services)
    endpoint_id, secret = _create(client, receiver.url, description="CRM sync")
    page = f"{LIST}/{endpoint_id}"

    again = client.get(page)
    assert again.status_code == 200
    assert secret not in again.text  # shown once
    assert not client.cookies.get("bf_new_signing_secret")
    assert "CRM sync" in client.get(LIST).text
    [row] = _endpoints(services)
    assert secret not in row.secret_encrypted
    with services.db.transaction() as session:
        audited = session.scalars(
            select(AuditEntry.action).where(AuditEntry.actor == admin_id)
        ).all()
    assert "webhook_endpoint.create" in audited

    receiver.secrets.append(secret)
    [event_id] = emit_events(services, "cust_console", 1)
    worker.run_until_idle()
    assert receiver.accepted_ids() == [event_id]
    assert receiver.accepted[0].verified_with == (secret,)

    log = client.get(page).text
    assert event_id in log
    assert "customer.updated" in log
    delivery_id = re.search(r'data-delivery="(whd_\w+)"', log)
    assert delivery_id
    redelivered = _post(
        client, f"{page}/deliveries/{delivery_id.group(1)}/redeliver", {}, page=page
    )
    assert _message(client, redelivered) == (
        f"notice: customer.updated ({event_id}) will be sent again."
    )
    worker.run_until_idle()
    assert receiver.accepted_ids() == [event_id, event_id]  # the same webhook-id
    assert len(re.findall(r'data-delivery="whd_', client.get(page).text)) == 2
    # An older page of the log, asked for with a time without an offset (read as UTC).
    older = client.get(page, params={"before": "2000-01-01T00:00:00"})
    assert older.status_code == 200
    assert 'data-delivery="whd_' not in older.text


def test_operator_filters_disables_rotates_and_deletes_through_the_apis_services(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    receiver: WebhookReceiver,
) -> None:
    api = auth(admin_token(client, services))  # before the endpoint: its sign-up is an event
    _operator(client, services)
    endpoint_id, first_secret = _create(client, receiver.url)
    receiver.secrets.append(first_secret)
    page = f"{LIST}/{endpoint_id}"

    saved = _post(
        client,
        page,
        {
            "url": receiver.url,
            "description": "only payments",
            "filter": "chosen",
            "event_type": ["payment.succeeded", "payment.refunded"],
        },
        page=page,
    )
    assert _message(client, saved) == "notice: Endpoint saved."
    seen = client.get(f"/webhook-endpoints/{endpoint_id}", headers=api).json()["data"]
    assert seen["eventTypes"] == ["payment.refunded", "payment.succeeded"]
    assert seen["description"] == "only payments"
    emit_events(services, "cust_filtered", 1)  # customer.updated: not wanted any more
    worker.run_until_idle()
    assert receiver.requests == 0

    off = _post(client, f"{page}/enabled", {"enabled": "false"}, page=page)
    assert _message(client, off) == "notice: Endpoint disabled: nothing is sent to it."
    assert (
        client.get(f"/webhook-endpoints/{endpoint_id}", headers=api).json()["data"]["enabled"]
        is False
    )
    assert "disabled" in client.get(LIST).text
    on = _post(client, f"{page}/enabled", {"enabled": "true"}, page=page)
    assert _message(client, on) == "notice: Endpoint enabled."

    rotated = _post(client, f"{page}/rotate-secret", {}, page=page)
    assert rotated.status_code == 303
    shown = client.get(rotated.headers["location"]).text
    new_secret = _SECRET.search(shown)
    assert new_secret
    assert new_secret.group(0) != first_secret
    assert "The old secret also signs until" in shown
    assert not _SECRET.search(client.get(page).text)  # once

    gone = _post(client, f"{page}/delete", {}, page=page)
    assert _message(client, gone) == f"notice: Endpoint {receiver.url} deleted."
    assert client.get(f"/webhook-endpoints/{endpoint_id}", headers=api).status_code == 404
    assert _endpoints(services) == []
    missing = client.get(page, follow_redirects=False)
    assert _message(client, missing) == "error: No such webhook endpoint"


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"url": "http://10.1.2.3/hooks"}, "private, loopback or link-local"),
        ({"url": "http://169.254.169.254/latest/meta-data"}, "private, loopback or link-local"),
        ({"url": "ftp://example.com/hooks"}, "must be http:// or https://"),
        ({"url": "http://user:pw@127.0.0.1/x"}, "may not carry credentials"),
        ({"url": "short"}, "Url: String should have at least 8 characters"),
        ({"url": "http://127.0.0.1/" + "x" * 3000}, "Url: String should have at most"),
        (
            {"url": "http://127.0.0.1/h", "filter": "chosen", "event_type": ["payment.stolen"]},
            "Unknown event type(s): payment.stolen",
        ),
        ({"url": "http://127.0.0.1/h", "filter": "chosen"}, "Tick at least one event type"),
        ({"url": "http://127.0.0.1/h", "description": "d" * 600}, "Description: String should"),
    ],
)
def test_bad_endpoint_input_is_a_message_on_the_page_and_adds_nothing(
    client: TestClient, services: Services, form: dict[str, Any], message: str
) -> None:
    _operator(client, services)
    refused = _post(client, LIST, {"filter": "all", **form}, page=LIST)
    shown = _message(client, refused)
    assert shown.startswith("error: ")
    assert message in shown
    assert _endpoints(services) == []


def test_bad_edit_keeps_the_endpoint_as_it_was(
    client: TestClient, services: Services, receiver: WebhookReceiver
) -> None:
    _operator(client, services)
    endpoint_id, _ = _create(client, receiver.url)
    page = f"{LIST}/{endpoint_id}"
    for form in (
        {"url": "http://192.168.1.20/hooks", "filter": "all"},
        {"url": receiver.url, "filter": "chosen", "event_type": ["nope"]},
    ):
        refused = _post(client, page, form, page=page)
        assert _message(client, refused).startswith("error: ")
    [row] = _endpoints(services)
    assert (row.url, row.event_types, row.enabled) == (receiver.url, None, True)


def test_adding_and_editing_an_endpoint_on_the_page_looks_its_host_up_with_no_transaction_open(
    client: TestClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As on the API: the URL's DNS lookup would otherwise hold SQLite's write lock."""
    _operator(client, services)
    lookups = transaction_open_at_lookups(monkeypatch, services, port=8089)
    endpoint_id, _ = _create(client, "http://localhost:8089/a")
    page = f"{LIST}/{endpoint_id}"
    saved = _post(client, page, {"url": "http://localhost:8089/b", "filter": "all"}, page=page)
    assert _message(client, saved) == "notice: Endpoint saved."
    [row] = _endpoints(services)
    assert row.url == "http://localhost:8089/b"
    assert lookups == [False, False]


def test_customers_and_strangers_never_reach_the_endpoint_pages(
    client: TestClient, services: Services
) -> None:
    user = register(client)["user"]
    sign_in(client, user["email"], "correct horse 1")
    assert client.get(LIST, follow_redirects=False).status_code == 404
    refused = client.post(LIST, data={"url": "http://127.0.0.1/x"}, follow_redirects=False)
    assert refused.status_code in (403, 404)
    assert _endpoints(services) == []


def test_a_new_secret_shows_only_on_its_own_endpoints_page(
    client: TestClient, services: Services, receiver: WebhookReceiver
) -> None:
    _operator(client, services)
    other_id, other_secret = _create(client, receiver.url)
    made = _post(client, LIST, {"url": receiver.url, "filter": "all"}, page=LIST)
    assert made.status_code == 303
    elsewhere = client.get(f"{LIST}/{other_id}").text
    assert not _SECRET.search(elsewhere)  # the cookie is bound to the new endpoint
    client.cookies.set("bf_new_signing_secret", "created.bm90IHNlYWxlZA==")
    assert not _SECRET.search(client.get(made.headers["location"]).text)  # forged: ignored
    assert other_secret not in elsewhere
