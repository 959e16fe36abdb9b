"""Outbound webhooks go straight to the endpoint: a proxy named in the environment
(HTTP_PROXY, HTTPS_PROXY, ALL_PROXY) is not used, silently or otherwise. httpx would route
through it with its own transport, outside the deadline that bounds each try."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support.outbound_webhooks import FAST_WEBHOOKS, add_endpoint, deliveries, emit_events
from support.waiting import wait_until
from support.webhook_receiver import WebhookReceiver

from billfold.jobs.worker import Worker
from billfold.services import Services
from billfold.webhooks.outbound.models import DeliveryStatus


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture
def settings_overrides(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Set before the services (and their webhook client) are built: every proxy variable
    names a port nobody listens on, and nothing is exempt from it."""
    dead_proxy = f"http://127.0.0.1:{_closed_port()}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, dead_proxy)
        monkeypatch.setenv(name.lower(), dead_proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    return dict(FAST_WEBHOOKS)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver.start()
    yield server
    server.stop()


def test_a_delivery_ignores_the_environments_proxy_and_reaches_the_endpoint(
    client: TestClient,
    admin: dict[str, str],
    services: Services,
    worker: Worker[Services],
    receiver: WebhookReceiver,
) -> None:
    endpoint = add_endpoint(client, admin, receiver)
    [event_id] = emit_events(services, "cust_proxied", 1)

    assert wait_until(lambda: (worker.run_until_idle(), len(receiver.accepted) == 1)[1], timeout=20)
    assert receiver.accepted[0].webhook_id == event_id
    [row] = deliveries(services, endpoint["id"])
    assert (row.status, row.attempts, row.last_status_code) == (DeliveryStatus.DELIVERED, 1, 200)
