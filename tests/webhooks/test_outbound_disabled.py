"""A disabled endpoint is paused, not emptied: its waiting deliveries are not sent and not
failed, and when it is enabled again they go out, each customer's in order. A 410 Gone in
the middle of a batch disables the endpoint there and loses nothing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support.outbound_webhooks import (
    FAST_WEBHOOKS,
    accepted_by_customer,
    add_endpoint,
    deliveries,
    emit_events,
    emit_round_robin,
    endpoint_row,
)
from support.waiting import wait_until
from support.webhook_receiver import Answer, WebhookReceiver

from billfold.jobs.worker import Worker
from billfold.services import Services
from billfold.webhooks.outbound.models import DeliveryStatus


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return dict(FAST_WEBHOOKS)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver.start()
    yield server
    server.stop()


def _all_delivered(services: Services, endpoint_id: str, count: int) -> bool:
    rows = deliveries(services, endpoint_id)
    return len(rows) == count and all(d.status == DeliveryStatus.DELIVERED for d in rows)


def _enable_and_drain(
    client: TestClient,
    admin: dict[str, str],
    services: Services,
    worker: Worker[Services],
    endpoint_id: str,
    count: int,
) -> None:
    enabled = client.patch(
        f"/webhook-endpoints/{endpoint_id}", json={"enabled": True}, headers=admin
    )
    assert enabled.status_code == 200, enabled.text
    stop = threading.Event()
    thread = worker.start_in_thread(stop)
    try:
        assert wait_until(lambda: _all_delivered(services, endpoint_id, count), timeout=60)
    finally:
        stop.set()
        thread.join(timeout=10)


def test_410_in_the_middle_of_a_batch_disables_the_endpoint_and_keeps_the_rest_for_later(
    client: TestClient,
    admin: dict[str, str],
    services: Services,
    receiver: WebhookReceiver,
    worker: Worker[Services],
) -> None:
    endpoint = add_endpoint(client, admin, receiver)
    written = emit_round_robin(services, ["cust_a", "cust_b", "cust_c"], 3)
    gone = written["cust_b"][1]
    receiver.respond = lambda r: Answer(410 if r.webhook_id == gone else 200)

    assert worker.run_once()  # one batch takes all nine; cust_b's second answers 410
    worker.run_until_idle()  # the other deliveries' jobs find the endpoint disabled

    row = endpoint_row(services, endpoint["id"])
    assert not row.enabled
    assert "410" in (row.disabled_reason or "")
    sent_before = receiver.requests
    rows = {d.id: d for d in deliveries(services, endpoint["id"])}
    gone_row = next(d for d in rows.values() if d.last_status_code == 410)
    # The refused one is not failed: it waits, its try counted, first in its customer's line.
    assert (gone_row.status, gone_row.attempts) == (DeliveryStatus.PENDING, 1)
    accepted = set(receiver.accepted_ids())
    assert gone not in accepted
    assert written["cust_b"][2] not in accepted  # behind the refused one
    # Nothing failed, nothing lost: what was not delivered waits, untried.
    assert all(d.status != DeliveryStatus.FAILED for d in rows.values())
    delivered = [d for d in rows.values() if d.status == DeliveryStatus.DELIVERED]
    assert len(delivered) == len(accepted) < 9
    waiting = [d for d in rows.values() if d.status == DeliveryStatus.PENDING and d is not gone_row]
    assert all(d.attempts == 0 for d in waiting)
    worker.run_until_idle()
    assert receiver.requests == sent_before  # a disabled endpoint is sent nothing

    receiver.respond = lambda _r: Answer(200)
    _enable_and_drain(client, admin, services, worker, endpoint["id"], 9)

    # Each event accepted once, each customer's in the order written.
    assert accepted_by_customer(receiver.accepted) == written
    assert receiver.rejected == []


def test_disabled_endpoint_is_sent_nothing_and_resumes_in_order_when_enabled_again(
    client: TestClient,
    admin: dict[str, str],
    services: Services,
    receiver: WebhookReceiver,
    worker: Worker[Services],
) -> None:
    endpoint = add_endpoint(client, admin, receiver)
    waiting = emit_events(services, "cust_paused", 4)
    disabled = client.patch(
        f"/webhook-endpoints/{endpoint['id']}", json={"enabled": False}, headers=admin
    )
    assert disabled.status_code == 200, disabled.text

    worker.run_until_idle()
    assert receiver.requests == 0
    rows = deliveries(services, endpoint["id"])
    assert [(d.status, d.attempts) for d in rows] == [(DeliveryStatus.PENDING, 0)] * 4
    # An event written while it is disabled is not queued for it.
    emit_events(services, "cust_paused", 1)
    assert len(deliveries(services, endpoint["id"])) == 4

    _enable_and_drain(client, admin, services, worker, endpoint["id"], 4)

    assert receiver.accepted_ids() == waiting  # each once, in the order written
