"""Shared set-up of the outbound webhook tests: an endpoint at a real receiver, events."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from billfold.services import Services
from billfold.webhooks.outbound.events import emit
from billfold.webhooks.outbound.models import WebhookDelivery, WebhookEndpoint
from support.webhook_receiver import Received, WebhookReceiver

# Short enough to watch a whole retry schedule in a test; WEBHOOK_RETRY_SCHEDULE's shape.
FAST_WEBHOOKS: dict[str, Any] = {
    "webhook_allow_private_urls": "loopback",
    "webhook_retry_schedule": "0.2,0.2,0.2,0.2",
    "webhook_timeout_seconds": 1.0,
}


def add_endpoint(
    client: TestClient,
    headers: dict[str, str],
    receiver: WebhookReceiver,
    **fields: Any,
) -> dict[str, Any]:
    """An endpoint at `receiver`, whose secret the receiver then verifies with."""
    response = client.post(
        "/webhook-endpoints", json={"url": receiver.url, **fields}, headers=headers
    )
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    receiver.secrets.append(data["secret"])
    return data


def emit_events(services: Services, customer_id: str, count: int) -> list[str]:
    """`count` events about one customer, each in its own transaction, in order."""
    ids = []
    for n in range(count):
        with services.db.transaction() as session:
            ids.append(
                emit(session, "customer.updated", customer_id, {"customerId": customer_id, "n": n})
            )
    return ids


def deliveries(services: Services, endpoint_id: str) -> list[WebhookDelivery]:
    with services.db.transaction() as session:
        return list(
            session.scalars(
                select(WebhookDelivery)
                .where(WebhookDelivery.endpoint_id == endpoint_id)
                .order_by(WebhookDelivery.event_seq, WebhookDelivery.created_at)
            )
        )


def endpoint_row(services: Services, endpoint_id: str) -> WebhookEndpoint:
    with services.db.transaction() as session:
        endpoint = session.get(WebhookEndpoint, endpoint_id)
        assert endpoint is not None
        return endpoint


def emit_round_robin(services: Services, customers: list[str], each: int) -> dict[str, list[str]]:
    """`each` events per customer, the customers taking turns, each event in its own
    transaction; answers every customer's event IDs in the order they were written."""
    written: dict[str, list[str]] = {c: [] for c in customers}
    for n in range(each):
        for customer in customers:
            with services.db.transaction() as session:
                written[customer].append(
                    emit(session, "customer.updated", customer, {"customerId": customer, "n": n})
                )
    return written


def accepted_by_customer(received: list[Received]) -> dict[str, list[str]]:
    """The webhook-ids the receiver accepted, per customer, in the order they arrived."""
    by_customer: dict[str, list[str]] = {}
    for r in received:
        by_customer.setdefault(r.data["customerId"], []).append(r.webhook_id)
    return by_customer
