"""Managing webhook endpoints by the API and the CLI: who may, what is refused (SSRF)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from support.outbound_webhooks import FAST_WEBHOOKS
from support.transactions import transaction_open_at_lookups
from typer.testing import CliRunner

from billfold.cli import app as cli_app
from billfold.config import Settings
from billfold.services import Services
from billfold.webhooks.outbound.catalog import EVENT_TYPES

RECEIVER = "http://127.0.0.1:9/hooks"  # never called: these tests only manage endpoints


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return dict(FAST_WEBHOOKS)


def _create(client: TestClient, headers: dict[str, str], **body: Any) -> Any:
    return client.post("/webhook-endpoints", json={"url": RECEIVER, **body}, headers=headers)


def test_service_key_manages_endpoints_from_create_to_delete(
    client: TestClient, admin: dict[str, str]
) -> None:
    key = client.post("/api-keys", json={"name": "backend"}, headers=admin).json()["data"]["key"]
    service = {"Authorization": f"Bearer {key}"}
    created = _create(client, service, eventTypes=["payment.succeeded", "order.paid"])
    assert created.status_code == 201, created.text
    endpoint = created.json()["data"]
    assert endpoint["eventTypes"] == ["order.paid", "payment.succeeded"]
    assert endpoint["enabled"] is True

    listed = client.get("/webhook-endpoints", headers=service).json()["data"]
    assert [e["id"] for e in listed] == [endpoint["id"]]
    assert "secret" not in listed[0]

    path = f"/webhook-endpoints/{endpoint['id']}"
    patched = client.patch(path, json={"enabled": False, "eventTypes": None}, headers=service)
    assert patched.status_code == 200, patched.text
    assert (patched.json()["data"]["enabled"], patched.json()["data"]["eventTypes"]) == (
        False,
        None,
    )
    assert client.patch(path, json={"enabled": True}, headers=service).json()["data"]["enabled"]

    assert client.delete(path, headers=service).status_code == 204
    assert client.get(path, headers=service).status_code == 404
    assert client.get("/webhook-endpoints", headers=service).json()["data"] == []


def test_a_customer_may_not_manage_endpoints(
    client: TestClient, buyer: dict[str, Any], admin: dict[str, str]
) -> None:
    assert _create(client, buyer["headers"]).status_code == 403
    assert client.get("/webhook-endpoints", headers=buyer["headers"]).status_code == 403
    assert client.get("/webhook-endpoints", headers=admin).json()["data"] == []


def test_unknown_event_type_is_refused(client: TestClient, admin: dict[str, str]) -> None:
    response = _create(client, admin, eventTypes=["payment_intent.succeeded"])
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "unknown_event_type"


def test_event_catalog_lists_our_types_only(client: TestClient, admin: dict[str, str]) -> None:
    listed = client.get("/webhook-event-types", headers=admin).json()["data"]
    assert [t["type"] for t in listed] == list(EVENT_TYPES)
    assert "credits.low_balance" in EVENT_TYPES
    assert not any(t.startswith(("payment_intent", "invoice", "charge")) for t in EVENT_TYPES)


@pytest.mark.parametrize(
    "url",
    [
        "http://10.1.2.3/hooks",  # private
        "http://192.168.0.10/hooks",
        "http://169.254.169.254/latest/meta-data",  # link-local (cloud metadata)
        "http://[fe80::1]/hooks",
        "http://[::1]:8080/hooks",  # loopback, refused unless allowed
        "http://127.0.0.1:8080/hooks",
        "http://localhost:8080/hooks",
        "http://0.0.0.0/hooks",
    ],
)
@pytest.mark.parametrize("settings_overrides", [{"webhook_allow_private_urls": "none"}])
def test_endpoint_urls_reaching_private_addresses_are_refused(
    client: TestClient, admin: dict[str, str], url: str
) -> None:
    response = _create(client, admin, url=url)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "unsafe_url"


def test_loopback_is_allowed_when_the_setting_says_so_but_private_networks_are_not(
    client: TestClient, admin: dict[str, str]
) -> None:
    assert _create(client, admin, url="http://localhost:8080/hooks").status_code == 201
    refused = _create(client, admin, url="http://10.0.0.5/hooks")
    assert refused.json()["error"]["code"] == "unsafe_url"


@pytest.mark.parametrize("url", ["ftp://example.com/x", "http://user:pw@127.0.0.1/x", "hooks"])
def test_malformed_endpoint_urls_are_refused(
    client: TestClient, admin: dict[str, str], url: str
) -> None:
    response = _create(client, admin, url=url)
    assert response.status_code == 422
    assert response.json()["error"]["code"] in {"invalid_url", "validation_error"}


def test_patching_a_url_checks_it_too(client: TestClient, admin: dict[str, str]) -> None:
    endpoint = _create(client, admin).json()["data"]
    response = client.patch(
        f"/webhook-endpoints/{endpoint['id']}", json={"url": "http://10.0.0.1/x"}, headers=admin
    )
    assert response.json()["error"]["code"] == "unsafe_url"


def test_adding_and_changing_an_endpoint_looks_its_host_up_with_no_transaction_open(
    client: TestClient, admin: dict[str, str], services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The URL check resolves the host (DNS, which has no timeout of its own): inside a
    transaction it would hold SQLite's one write lock, and every other write, meanwhile."""
    lookups = transaction_open_at_lookups(monkeypatch, services, port=8089)
    created = _create(client, admin, url="http://localhost:8089/a")
    assert created.status_code == 201, created.text
    path = f"/webhook-endpoints/{created.json()['data']['id']}"
    patched = client.patch(path, json={"url": "http://localhost:8089/b"}, headers=admin)
    assert patched.status_code == 200, patched.text
    assert patched.json()["data"]["url"] == "http://localhost:8089/b"
    assert lookups == [False, False]


def test_cli_manages_endpoints(settings: Settings, client: TestClient) -> None:
    env = {
        "DATABASE_URL": settings.database_url,
        "STRIPE_SECRET_KEY": "sk_test_billfold",
        "JWT_SECRET": "test-jwt-secret-" + "x" * 32,
        "WEBHOOK_ALLOW_PRIVATE_URLS": "loopback",
        "COLUMNS": "200",
    }
    runner = CliRunner()
    created = runner.invoke(
        cli_app,
        ["webhook-endpoints", "create", "--url", RECEIVER, "--event-type", "order.paid"],
        env=env,
    )
    assert created.exit_code == 0, created.output
    secret = created.output.strip().splitlines()[-1]
    assert secret.startswith("whsec_")
    endpoint_id = created.output.split("endpoint ", 1)[1].split(".", 1)[0]

    listed = runner.invoke(cli_app, ["webhook-endpoints", "list"], env=env)
    assert endpoint_id in listed.output
    assert "order.paid" in listed.output
    assert secret not in listed.output
    disabled = runner.invoke(
        cli_app, ["webhook-endpoints", "update", endpoint_id, "--disable"], env=env
    )
    assert disabled.exit_code == 0
    assert "disabled" in disabled.output
    rotated = runner.invoke(cli_app, ["webhook-endpoints", "rotate-secret", endpoint_id], env=env)
    assert rotated.output.strip().splitlines()[-1].startswith("whsec_")
    refused = runner.invoke(
        cli_app, ["webhook-endpoints", "create", "--url", "http://10.0.0.1/x"], env=env
    )
    assert refused.exit_code == 1
    assert "unsafe_url" in refused.output
    deleted = runner.invoke(cli_app, ["webhook-endpoints", "delete", endpoint_id], env=env)
    assert deleted.exit_code == 0
    assert endpoint_id not in runner.invoke(cli_app, ["webhook-endpoints", "list"], env=env).output
