"""Outbound webhooks go out in batches (one job sends an endpoint's due deliveries): a failed
try in a batch holds back only its customer, a worker killed mid-batch loses nothing, and one
customer's events keep their order across batches and retries."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import STRIPE_KEY
from fastapi.testclient import TestClient
from sqlalchemy import select
from support.netfault import FaultyLink
from support.outbound_webhooks import (
    FAST_WEBHOOKS,
    accepted_by_customer,
    add_endpoint,
    deliveries,
    emit_round_robin,
)
from support.waiting import wait_until
from support.webhook_receiver import Answer, Received, WebhookReceiver
from support.worker_process import output, start_worker_process

from billfold.jobs.models import Job, JobStatus
from billfold.jobs.worker import Worker
from billfold.registry import build_worker
from billfold.services import Services
from billfold.webhooks.outbound.models import DeliveryStatus, WebhookDelivery


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return dict(FAST_WEBHOOKS)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver.start()
    yield server
    server.stop()


def _all_settled(services: Services, endpoint_id: str, count: int) -> bool:
    rows = deliveries(services, endpoint_id)
    return len(rows) == count and all(d.status != DeliveryStatus.PENDING for d in rows)


def _job_status(services: Services, job_id: str | None) -> JobStatus:
    with services.db.transaction() as session:
        status = session.scalar(select(Job.status).where(Job.id == job_id))
    assert status is not None
    return JobStatus(status)


# The first retry comes after 3 s: the batch's job is over by then (it sends what is due).
@pytest.mark.parametrize(
    "settings_overrides", [{**FAST_WEBHOOKS, "webhook_retry_schedule": "3,0.2,0.2,0.2"}]
)
def test_failed_try_in_a_batch_holds_back_only_its_customer_and_the_rest_is_delivered(
    client: TestClient,
    admin: dict[str, str],
    services: Services,
    receiver: WebhookReceiver,
    worker: Worker[Services],
) -> None:
    endpoint = add_endpoint(client, admin, receiver)
    receiver.respond = lambda r: Answer(500 if r.data["customerId"] == "cust_bad" else 200)
    written = emit_round_robin(services, ["cust_a", "cust_bad", "cust_c"], 2)

    assert worker.run_once()  # one job: its batch takes all six deliveries

    rows: dict[str | None, list[WebhookDelivery]] = {}
    for d in deliveries(services, endpoint["id"]):
        rows.setdefault(d.customer_id, []).append(d)
    for customer in ("cust_a", "cust_c"):
        assert [(d.status, d.attempts, d.last_status_code) for d in rows[customer]] == [
            (DeliveryStatus.DELIVERED, 1, 200),
            (DeliveryStatus.DELIVERED, 1, 200),
        ]
        # Settled by the batch with their deliveries: these jobs never had to run.
        assert all(_job_status(services, d.job_id) == JobStatus.DONE for d in rows[customer])
    failed, held_back = rows["cust_bad"]
    assert (failed.status, failed.attempts, failed.last_status_code) == (
        DeliveryStatus.PENDING,
        1,
        500,
    )
    assert failed.next_attempt_at is not None
    assert (held_back.status, held_back.attempts) == (DeliveryStatus.PENDING, 0)
    assert [r.webhook_id for r in receiver.received if r.data["customerId"] == "cust_bad"] == [
        written["cust_bad"][0]  # its second event was not sent before the first got through
    ]
    assert accepted_by_customer(receiver.accepted) == {
        "cust_a": written["cust_a"],
        "cust_c": written["cust_c"],
    }

    receiver.respond = lambda _r: Answer(200)
    stop = threading.Event()
    thread = worker.start_in_thread(stop)
    try:
        assert wait_until(lambda: _all_settled(services, endpoint["id"], 6), timeout=30)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert accepted_by_customer(receiver.accepted)["cust_bad"] == written["cust_bad"]
    assert all(d.status == DeliveryStatus.DELIVERED for d in deliveries(services, endpoint["id"]))


@pytest.mark.parametrize("settings_overrides", [{**FAST_WEBHOOKS, "webhook_timeout_seconds": 10.0}])
def test_worker_killed_mid_batch_loses_nothing_and_repeats_only_what_was_not_recorded(
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

    def hold_cust_a(r: Received) -> Answer:
        return Answer(200, hold=release) if r.data["customerId"] == "cust_a" else Answer(200)

    receiver.respond = hold_cust_a
    customers = ["cust_a", "cust_b", "cust_c"]
    written = emit_round_robin(services, customers, 2)

    def rows() -> list[WebhookDelivery]:
        return deliveries(services, endpoint["id"])

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
        # cust_a's first event is held; cust_b's and cust_c's went through in the same batch,
        # and the batch, still waiting for cust_a, recorded them.
        assert wait_until(
            lambda: sum(d.status == DeliveryStatus.DELIVERED for d in rows()) == 4, timeout=30
        ), output(process)
        os.kill(process.pid, signal.SIGKILL)  # cust_a's first is sent but not recorded
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
    first_round = len(receiver.accepted)
    assert {r.webhook_id for r in receiver.received} == set(
        written["cust_b"] + written["cust_c"] + written["cust_a"][:1]
    )
    assert [(d.status, d.attempts) for d in rows() if d.customer_id == "cust_a"] == [
        (DeliveryStatus.PENDING, 0),
        (DeliveryStatus.PENDING, 0),
    ]
    release.set()
    receiver.respond = lambda _r: Answer(200)
    stop = threading.Event()
    thread = worker.start_in_thread(stop)  # takes the batch over once its lease ends
    try:
        assert wait_until(lambda: _all_settled(services, endpoint["id"], 6), timeout=60)
    finally:
        stop.set()
        thread.join(timeout=10)

    assert all((d.status, d.attempts) == (DeliveryStatus.DELIVERED, 1) for d in rows())
    every_event = {e for ids in written.values() for e in ids}
    assert set(receiver.accepted_ids()) == every_event  # nothing lost
    # Sent again after the kill: only what the batch had not recorded, in order, with the
    # same webhook-ids; what it had recorded went once.
    assert accepted_by_customer(receiver.accepted[first_round:]) == {"cust_a": written["cust_a"]}
    assert accepted_by_customer(receiver.accepted[:first_round]) == {
        "cust_a": written["cust_a"][:1],
        "cust_b": written["cust_b"],
        "cust_c": written["cust_c"],
    }
    assert receiver.rejected == []


@pytest.mark.parametrize("settings_overrides", [{**FAST_WEBHOOKS, "webhook_batch_size": 3}])
def test_each_customers_events_keep_their_order_across_batches_and_retries(
    client: TestClient,
    admin: dict[str, str],
    services: Services,
    receiver: WebhookReceiver,
) -> None:
    endpoint = add_endpoint(client, admin, receiver)
    customers = ["cust_x", "cust_y", "cust_z"]
    written = emit_round_robin(services, customers, 6)
    # cust_x's fourth event fails twice, cust_y's second once: their later events wait.
    failing = {written["cust_x"][3]: 2, written["cust_y"][1]: 1}
    lock = threading.Lock()

    def fail_some(r: Received) -> Answer:
        with lock:
            if failing.get(r.webhook_id, 0) > 0:
                failing[r.webhook_id] -= 1
                return Answer(503)
        return Answer(200)

    receiver.respond = fail_some
    stop = threading.Event()
    # Two workers: their batches run side by side for the same endpoint.
    threads = [build_worker(services, name=f"w{n}").start_in_thread(stop) for n in range(2)]
    try:
        assert wait_until(lambda: _all_settled(services, endpoint["id"], 18), timeout=60)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)

    assert accepted_by_customer(receiver.accepted) == written  # each once, in order
    rows = {d.id: d for d in deliveries(services, endpoint["id"])}
    assert all(d.status == DeliveryStatus.DELIVERED for d in rows.values())
    assert sorted(d.attempts for d in rows.values()) == [1] * 16 + [2, 3]


# A 1 s timeout and a 4 s job lease: a batch's lease is 3 s.
@pytest.mark.parametrize("settings_overrides", [{**FAST_WEBHOOKS, "job_lease_seconds": 4.0}])
def test_a_try_ends_at_the_timeout_however_the_receiver_trickles_so_none_outlives_its_lease(
    client: TestClient,
    admin: dict[str, str],
    services: Services,
    receiver: WebhookReceiver,
) -> None:
    endpoint = add_endpoint(client, admin, receiver)
    written = emit_round_robin(services, ["cust_a", "cust_b"], 3)
    slow = written["cust_a"][0]
    first = threading.Event()

    def trickle_the_first(r: Received) -> Answer:
        if r.webhook_id == slow and not first.is_set():
            first.set()
            # Each header line comes well inside the timeout; the whole answer takes 12 s,
            # past the batch's lease (and past the job's).
            return Answer(200, trickle=12.0)
        return Answer(200)

    receiver.respond = trickle_the_first
    stop = threading.Event()
    # Two workers: either would take the deliveries over once a lease ended.
    threads = [build_worker(services, name=f"w{n}").start_in_thread(stop) for n in range(2)]
    try:
        assert wait_until(lambda: _all_settled(services, endpoint["id"], 6), timeout=60)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)

    tries = [(r, ended) for r, ended in receiver.finished if r.webhook_id == slow]
    assert len(tries) == 2
    (first_try, first_ended), (second_try, _) = sorted(tries, key=lambda t: t[0].at)
    # The sender hung up on the trickle (it did not last its 12 s); the next try came only
    # after that, not beside it.
    assert first_ended - first_try.at < 12.0
    assert second_try.at >= first_ended
    slow_row = next(d for d in deliveries(services, endpoint["id"]) if d.customer_id == "cust_a")
    assert (slow_row.status, slow_row.attempts, slow_row.last_status_code) == (
        DeliveryStatus.DELIVERED,
        2,
        200,
    )
    # Each customer's events in order, each once but the one tried twice.
    assert accepted_by_customer(receiver.accepted) == {
        "cust_a": [slow, *written["cust_a"]],  # the trickled answer was a 200 too, unread
        "cust_b": written["cust_b"],
    }
    assert receiver.rejected == []
