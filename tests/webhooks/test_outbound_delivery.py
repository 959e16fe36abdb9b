"""Outbound webhooks reach a real receiver, signed (Standard Webhooks), through faults:
a receiver down then up, 500s, 429 with Retry-After, 410, a slow receiver, a killed worker."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import STRIPE_KEY
from fastapi.testclient import TestClient
from sqlalchemy import select
from support.netfault import FaultyLink
from support.outbound_webhooks import (
    FAST_WEBHOOKS,
    add_endpoint,
    deliveries,
    emit_events,
    endpoint_row,
)
from support.waiting import wait_until
from support.webhook_receiver import Answer, Received, WebhookReceiver
from support.worker_process import output, start_worker_process

from billfold.jobs.worker import Worker
from billfold.kit.db import utcnow
from billfold.mail.models import OutboxMail
from billfold.services import Services
from billfold.webhooks.outbound.models import DeliveryStatus, WebhookEndpoint


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return dict(FAST_WEBHOOKS)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver.start()
    yield server
    server.stop()


@pytest.fixture
def running_worker(worker: Worker[Services]) -> Iterator[Worker[Services]]:
    stop = threading.Event()
    thread = worker.start_in_thread(stop)
    yield worker
    stop.set()
    thread.join(timeout=10)


def _all_settled(services: Services, endpoint_id: str, count: int) -> bool:
    rows = deliveries(services, endpoint_id)
    return len(rows) == count and all(d.status != DeliveryStatus.PENDING for d in rows)


def test_delivery_is_signed_with_the_endpoints_secret_and_carries_our_ids(
    client: TestClient,
    admin: dict[str, str],
    services: Services,
    receiver: WebhookReceiver,
    running_worker: Worker[Services],
) -> None:
    endpoint = add_endpoint(client, admin, receiver)
    assert endpoint["secret"].startswith("whsec_")
    [event_id] = emit_events(services, "cust_one", 1)

    assert wait_until(lambda: len(receiver.accepted) == 1, timeout=10)
    got = receiver.accepted[0]
    assert got.webhook_id == event_id
    assert got.type == "customer.updated"
    assert got.data == {"customerId": "cust_one", "n": 0}
    assert got.verified_with == (endpoint["secret"],)
    assert receiver.rejected == []
    assert wait_until(lambda: _all_settled(services, endpoint["id"], 1), timeout=5)
    [row] = deliveries(services, endpoint["id"])
    assert (row.status, row.attempts, row.last_status_code) == (DeliveryStatus.DELIVERED, 1, 200)


def test_endpoint_gets_only_the_event_types_it_asked_for(
    client: TestClient, admin: dict[str, str], services: Services, receiver: WebhookReceiver
) -> None:
    only_payments = add_endpoint(client, admin, receiver, eventTypes=["payment.succeeded"])
    emit_events(services, "cust_one", 2)
    assert deliveries(services, only_payments["id"]) == []


def test_receiver_down_then_up_gets_each_event_once_in_order(
    client: TestClient,
    admin: dict[str, str],
    services: Services,
    receiver: WebhookReceiver,
    running_worker: Worker[Services],
) -> None:
    endpoint = add_endpoint(client, admin, receiver)
    receiver.stop()
    event_ids = emit_events(services, "cust_ordered", 5)
    assert wait_until(
        lambda: all(d.attempts >= 1 for d in deliveries(services, endpoint["id"])[:1]), timeout=10
    )
    receiver.restart()

    assert wait_until(lambda: _all_settled(services, endpoint["id"], 5), timeout=30)
    assert receiver.accepted_ids() == event_ids  # each once, in the order they were written
    assert all(d.status == DeliveryStatus.DELIVERED for d in deliveries(services, endpoint["id"]))


def test_500s_then_200_is_retried_until_delivered(
    client: TestClient,
    admin: dict[str, str],
    services: Services,
    receiver: WebhookReceiver,
    running_worker: Worker[Services],
) -> None:
    endpoint = add_endpoint(client, admin, receiver)
    answers = iter([Answer(500), Answer(503)])
    receiver.respond = lambda _r: next(answers, Answer(200))
    [event_id] = emit_events(services, "cust_one", 1)

    assert wait_until(lambda: _all_settled(services, endpoint["id"], 1), timeout=90)
    [row] = deliveries(services, endpoint["id"])
    assert (row.status, row.attempts, row.last_status_code) == (DeliveryStatus.DELIVERED, 3, 200)
    assert receiver.accepted_ids() == [event_id]
    assert endpoint_row(services, endpoint["id"]).failing_since is None


def test_429_retry_after_is_honoured(
    client: TestClient,
    admin: dict[str, str],
    services: Services,
    receiver: WebhookReceiver,
    worker: Worker[Services],
) -> None:
    endpoint = add_endpoint(client, admin, receiver)
    receiver.respond = lambda _r: Answer(429, headers={"Retry-After": "120"})
    emit_events(services, "cust_one", 1)
    before = utcnow()
    worker.run_until_idle()

    [row] = deliveries(services, endpoint["id"])
    assert (row.status, row.attempts, row.last_status_code) == (DeliveryStatus.PENDING, 1, 429)
    assert row.next_attempt_at is not None
    assert row.next_attempt_at >= before + timedelta(seconds=119)


def test_410_gone_disables_the_endpoint_and_pauses_its_events(
    client: TestClient,
    admin: dict[str, str],
    services: Services,
    receiver: WebhookReceiver,
    worker: Worker[Services],
) -> None:
    endpoint = add_endpoint(client, admin, receiver)
    receiver.respond = lambda _r: Answer(410)
    emit_events(services, "cust_one", 1)
    worker.run_until_idle()

    [row] = deliveries(services, endpoint["id"])
    # Not failed: it waits for the endpoint to be enabled again (test_outbound_disabled.py).
    assert (row.status, row.attempts, row.last_status_code) == (DeliveryStatus.PENDING, 1, 410)
    gone = endpoint_row(services, endpoint["id"])
    assert not gone.enabled
    assert "410" in (gone.disabled_reason or "")
    emit_events(services, "cust_one", 1)
    assert len(deliveries(services, endpoint["id"])) == 1  # a disabled endpoint gets nothing new
    listed = client.get(f"/webhook-endpoints/{endpoint['id']}", headers=admin).json()["data"]
    assert listed["enabled"] is False


def test_receiver_slower_than_the_timeout_is_tried_again(
    client: TestClient,
    admin: dict[str, str],
    services: Services,
    receiver: WebhookReceiver,
    running_worker: Worker[Services],
) -> None:
    endpoint = add_endpoint(client, admin, receiver)
    answers = iter([Answer(200, delay=2.5)])  # WEBHOOK_TIMEOUT_SECONDS is 1 here
    receiver.respond = lambda _r: next(answers, Answer(200))
    [event_id] = emit_events(services, "cust_one", 1)

    assert wait_until(lambda: _all_settled(services, endpoint["id"], 1), timeout=90)
    [row] = deliveries(services, endpoint["id"])
    assert (row.status, row.attempts) == (DeliveryStatus.DELIVERED, 2)
    # The slow try reached the receiver too: a duplicate, with the same webhook-id.
    assert {r.webhook_id for r in receiver.received} == {event_id}


def test_delivery_fails_after_the_last_scheduled_retry(
    client: TestClient,
    admin: dict[str, str],
    services: Services,
    receiver: WebhookReceiver,
    running_worker: Worker[Services],
) -> None:
    endpoint = add_endpoint(client, admin, receiver)
    receiver.respond = lambda _r: Answer(500)
    emit_events(services, "cust_one", 1)

    assert wait_until(lambda: _all_settled(services, endpoint["id"], 1), timeout=90)
    [row] = deliveries(services, endpoint["id"])
    # One try and one per step of the four-step schedule.
    assert (row.status, row.attempts, row.last_status_code) == (DeliveryStatus.FAILED, 5, 500)
    assert endpoint_row(services, endpoint["id"]).enabled  # failing briefly does not disable


@pytest.mark.parametrize(
    "settings_overrides", [{**FAST_WEBHOOKS, "webhook_disable_after_hours": 0.0001}]
)
def test_endpoint_failing_too_long_is_disabled_and_the_admins_told(
    client: TestClient,
    admin: dict[str, str],
    services: Services,
    receiver: WebhookReceiver,
    running_worker: Worker[Services],
) -> None:
    endpoint = add_endpoint(client, admin, receiver)
    receiver.respond = lambda _r: Answer(500)
    emit_events(services, "cust_one", 1)

    assert wait_until(lambda: not endpoint_row(services, endpoint["id"]).enabled, timeout=20)
    assert "failing since" in (endpoint_row(services, endpoint["id"]).disabled_reason or "")
    with services.db.transaction() as session:
        mails = session.scalars(
            select(OutboxMail).where(OutboxMail.kind == "webhook_endpoint_disabled")
        ).all()
        assert len(mails) >= 1
        assert endpoint["id"] in mails[0].body_text


def test_rotated_secret_and_the_old_one_both_sign_during_the_overlap(
    client: TestClient,
    admin: dict[str, str],
    services: Services,
    receiver: WebhookReceiver,
    running_worker: Worker[Services],
) -> None:
    endpoint = add_endpoint(client, admin, receiver)
    rotated = client.post(f"/webhook-endpoints/{endpoint['id']}/rotate-secret", headers=admin)
    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["data"]["secret"]
    assert new_secret != endpoint["secret"]
    receiver.secrets.append(new_secret)
    emit_events(services, "cust_one", 1)

    assert wait_until(lambda: len(receiver.accepted) == 1, timeout=10)
    assert set(receiver.accepted[0].verified_with) == {endpoint["secret"], new_secret}
    assert len(receiver.accepted[0].headers["webhook-signature"].split(" ")) == 2


@pytest.mark.parametrize(
    "settings_overrides", [{**FAST_WEBHOOKS, "webhook_secret_overlap_hours": 0}]
)
def test_after_the_overlap_only_the_new_secret_signs(
    client: TestClient,
    admin: dict[str, str],
    services: Services,
    receiver: WebhookReceiver,
    running_worker: Worker[Services],
) -> None:
    endpoint = add_endpoint(client, admin, receiver)
    rotated = client.post(f"/webhook-endpoints/{endpoint['id']}/rotate-secret", headers=admin)
    new_secret = rotated.json()["data"]["secret"]
    receiver.secrets.append(new_secret)
    emit_events(services, "cust_one", 1)

    assert wait_until(lambda: len(receiver.accepted) == 1, timeout=10)
    assert receiver.accepted[0].verified_with == (new_secret,)


def test_redelivery_sends_the_same_webhook_id_again_as_a_new_log_entry(
    client: TestClient,
    admin: dict[str, str],
    services: Services,
    receiver: WebhookReceiver,
    running_worker: Worker[Services],
) -> None:
    endpoint = add_endpoint(client, admin, receiver)
    [event_id] = emit_events(services, "cust_one", 1)
    assert wait_until(lambda: _all_settled(services, endpoint["id"], 1), timeout=10)
    log = client.get(f"/webhook-endpoints/{endpoint['id']}/deliveries", headers=admin)
    [first] = log.json()["data"]["deliveries"]
    assert (first["eventId"], first["status"]) == (event_id, "delivered")

    again = client.post(
        f"/webhook-endpoints/{endpoint['id']}/deliveries/{first['id']}/redeliver", headers=admin
    )
    assert again.status_code == 201, again.text
    assert wait_until(lambda: _all_settled(services, endpoint["id"], 2), timeout=10)
    assert receiver.accepted_ids() == [event_id, event_id]
    log = client.get(f"/webhook-endpoints/{endpoint['id']}/deliveries", headers=admin)
    assert [d["status"] for d in log.json()["data"]["deliveries"]] == ["delivered", "delivered"]


# A failed try waits 60 s: a redelivery failing would hold the customer's line that long.
@pytest.mark.parametrize(
    "settings_overrides", [{**FAST_WEBHOOKS, "webhook_retry_schedule": "60,60"}]
)
def test_failing_redelivery_of_an_old_event_neither_holds_back_nor_reorders_the_customers_queue(
    client: TestClient,
    admin: dict[str, str],
    services: Services,
    receiver: WebhookReceiver,
    running_worker: Worker[Services],
) -> None:
    endpoint = add_endpoint(client, admin, receiver)
    first = emit_events(services, "cust_one", 2)
    assert wait_until(lambda: _all_settled(services, endpoint["id"], 2), timeout=30)
    old = deliveries(services, endpoint["id"])[0]  # in event order
    # The receiver refuses the old event from now on: the redelivery fails and waits.
    receiver.respond = lambda r: Answer(500 if r.webhook_id == first[0] else 200)
    again = client.post(
        f"/webhook-endpoints/{endpoint['id']}/deliveries/{old.id}/redeliver", headers=admin
    )
    assert again.status_code == 201, again.text
    redelivery_id = again.json()["data"]["id"]
    assert wait_until(
        lambda: any(
            d.id == redelivery_id and d.attempts == 1 for d in deliveries(services, endpoint["id"])
        ),
        timeout=30,
    )
    later = emit_events(services, "cust_one", 3)

    # The customer's new events go out at once, in order, though the redelivery still waits.
    assert wait_until(lambda: receiver.accepted_ids() == first + later, timeout=30)

    def others_recorded() -> bool:  # the receiver answers before the sender records it
        found = [d for d in deliveries(services, endpoint["id"]) if d.id != redelivery_id]
        return all(d.status == DeliveryStatus.DELIVERED for d in found)

    assert wait_until(others_recorded, timeout=30)
    rows = {d.id: d for d in deliveries(services, endpoint["id"])}
    redelivery = rows.pop(redelivery_id)
    assert (redelivery.status, redelivery.attempts, redelivery.last_status_code) == (
        DeliveryStatus.PENDING,
        1,
        500,
    )
    assert all(d.status == DeliveryStatus.DELIVERED for d in rows.values())
    log = client.get(f"/webhook-endpoints/{endpoint['id']}/deliveries", headers=admin).json()
    assert [d["eventId"] for d in log["data"]["deliveries"]].count(first[0]) == 2


@pytest.mark.parametrize("settings_overrides", [{**FAST_WEBHOOKS, "webhook_timeout_seconds": 10.0}])
def test_worker_killed_mid_delivery_loses_nothing_and_repeats_only_the_same_webhook_id(
    client: TestClient,
    admin: dict[str, str],
    services: Services,
    receiver: WebhookReceiver,
    worker: Worker[Services],
    stripe_link: FaultyLink,
    tmp_path: Path,
) -> None:
    endpoint = add_endpoint(client, admin, receiver)
    release = threading.Event()
    first_try = threading.Event()

    def hold_the_first(_r: Received) -> Answer:
        if not first_try.is_set():
            first_try.set()
            return Answer(200, hold=release)
        return Answer(200)

    receiver.respond = hold_the_first
    event_ids = emit_events(services, "cust_killed", 3)
    s = services.settings
    process = start_worker_process(
        s,
        stripe_link.url,
        STRIPE_KEY,
        tmp_path,
        extra_env={
            "JWT_SECRET": "test-jwt-secret-" + "x" * 32,
            "WEBHOOK_ALLOW_PRIVATE_URLS": "loopback",
            "WEBHOOK_RETRY_SCHEDULE": s.webhook_retry_schedule,
            "WEBHOOK_TIMEOUT_SECONDS": str(s.webhook_timeout_seconds),
        },
    )
    try:
        assert first_try.wait(30), output(process)
        os.kill(process.pid, signal.SIGKILL)  # the receiver has the request; no answer read
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
    release.set()
    stop = threading.Event()
    thread = worker.start_in_thread(stop)  # takes the job over once the dead worker's lease ends
    try:
        assert wait_until(lambda: _all_settled(services, endpoint["id"], 3), timeout=30)
    finally:
        stop.set()
        thread.join(timeout=10)

    assert all(d.status == DeliveryStatus.DELIVERED for d in deliveries(services, endpoint["id"]))
    accepted = receiver.accepted_ids()
    assert set(accepted) == set(event_ids)  # nothing lost
    # The one interrupted delivery came twice, with its webhook-id; the rest once, in order.
    assert accepted[0] == accepted[1] == event_ids[0]
    assert accepted[1:] == event_ids


def test_signing_secrets_are_not_stored_in_plain_text(
    client: TestClient, admin: dict[str, str], services: Services, receiver: WebhookReceiver
) -> None:
    endpoint = add_endpoint(client, admin, receiver)
    with services.db.transaction() as session:
        row = session.get(WebhookEndpoint, endpoint["id"])
        assert row is not None
        stored = row.secret_encrypted
    assert endpoint["secret"] not in stored
    assert endpoint["secret"].removeprefix("whsec_") not in stored
    listed = client.get("/webhook-endpoints", headers=admin).text
    assert endpoint["secret"] not in listed
