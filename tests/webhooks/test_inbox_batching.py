"""Stripe's deliveries stored together: one transaction for the events that arrive together,
each event stored once with its job, nothing answered before it is committed."""

from __future__ import annotations

import random
import threading
from typing import Any

import pytest
from conftest import WEBHOOK_SECRET
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from support.stripe_events import delivery, event

from billfold.jobs.models import Job, JobStatus
from billfold.kit.batching import HeldConnection
from billfold.services import Services
from billfold.stripe_gateway.errors import WebhookSignatureInvalid
from billfold.webhooks import inbox
from billfold.webhooks.batching import InboxBatcher
from billfold.webhooks.inbox import PROCESS_JOB
from billfold.webhooks.models import StripeEvent


def signed(evt: dict[str, Any], secret: str = WEBHOOK_SECRET) -> tuple[bytes, str | None]:
    body, headers = delivery(evt, secret)
    return body, headers["Stripe-Signature"]


def customer_event(n: int) -> dict[str, Any]:
    return event("customer.updated", {"id": f"cus_{n}", "object": "customer"}, event_id=f"evt_{n}")


def rows_by_stripe_id(services: Services) -> dict[str, list[str]]:
    with services.db.transaction() as session:
        found: dict[str, list[str]] = {}
        for stripe_id, stored_id in session.execute(
            select(StripeEvent.stripe_event_id, StripeEvent.id)
        ):
            found.setdefault(stripe_id, []).append(stored_id)
        return found


def process_jobs_by_event(services: Services) -> dict[str, int]:
    with services.db.transaction() as session:
        jobs = session.scalars(select(Job).where(Job.kind == PROCESS_JOB)).all()
        counted: dict[str, int] = {}
        for job in jobs:
            assert job.status == JobStatus.PENDING
            counted[job.payload["event_id"]] = counted.get(job.payload["event_id"], 0) + 1
        return counted


def test_a_batch_stores_each_event_once_with_its_job_and_refuses_a_bad_signature_alone(
    services: Services,
) -> None:
    earlier = customer_event(0)
    with services.db.transaction() as session:
        already = inbox.receive(session, earlier, signed(earlier)[0])
    first, second = customer_event(1), customer_event(2)
    batch = [
        signed(first),
        signed(second, secret="whsec_somebody_else"),
        signed(earlier),  # Stripe's retry of an event stored before
        signed(first),  # the same event twice in one batch
    ]
    batcher = InboxBatcher(services)
    connection = HeldConnection(services.db.engine)
    try:
        outcomes = batcher.run_batch(batch, connection)
    finally:
        connection.release()

    stored_first, refused, replay_earlier, replay_first = outcomes
    assert isinstance(stored_first, inbox.Stored)
    assert stored_first.new
    assert isinstance(refused, WebhookSignatureInvalid)
    assert replay_earlier == inbox.Stored(already.id, new=False)
    assert replay_first == inbox.Stored(stored_first.id, new=False)
    # Committed by the batch (read from another connection), each event once, one job each.
    assert rows_by_stripe_id(services) == {"evt_0": [already.id], "evt_1": [stored_first.id]}
    assert process_jobs_by_event(services) == {already.id: 1, stored_first.id: 1}


def test_batches_storing_the_same_events_at_once_in_any_order_store_each_once_no_deadlock(
    services: Services,
) -> None:
    events = [customer_event(n) for n in range(300)]
    batches = 6
    start = threading.Barrier(batches)
    answers: list[list[inbox.Stored]] = []
    failures: list[BaseException] = []

    def store(seed: int) -> None:
        mine = random.Random(seed).sample(events, k=200)  # overlapping, each in its own order
        try:
            start.wait()
            with services.db.transaction() as session:
                answers.append(inbox.receive_all(session, [(e, signed(e)[0]) for e in mine]))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=store, args=(seed,)) for seed in range(batches)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert failures == []
    rows = rows_by_stripe_id(services)
    assert all(len(ids) == 1 for ids in rows.values())
    new_answers = [a.id for batch in answers for a in batch if a.new]
    assert sorted(new_answers) == sorted(ids[0] for ids in rows.values())
    assert process_jobs_by_event(services) == {ids[0]: 1 for ids in rows.values()}
    # Every answer, new or replay, names the one stored row of its event.
    assert {a.id for batch in answers for a in batch} == {ids[0] for ids in rows.values()}


def test_delivery_with_an_idempotency_key_is_answered_by_the_route_the_same_way(
    client: TestClient, services: Services
) -> None:
    evt = customer_event(7)
    body, headers = delivery(evt, WEBHOOK_SECRET)

    fast = client.post("/webhooks/stripe", content=body, headers=headers)
    routed = client.post(
        "/webhooks/stripe", content=body, headers={**headers, "Idempotency-Key": "k-1"}
    )

    assert fast.status_code == routed.status_code == 200, routed.text
    assert fast.json()["data"] == {
        "id": fast.json()["data"]["id"],
        "received": True,
        "duplicate": False,
    }
    assert routed.json()["data"] == {**fast.json()["data"], "duplicate": True}
    assert fast.headers["x-request-id"]
    with services.db.transaction() as session:
        assert session.scalar(select(func.count()).select_from(StripeEvent)) == 1


@pytest.mark.parametrize("idempotency_key", [None, "k-2"], ids=["hot-path", "route"])
def test_stale_signature_is_refused_400_on_either_way_in(
    client: TestClient, services: Services, idempotency_key: str | None
) -> None:
    evt = customer_event(8)
    body, headers = delivery(evt, WEBHOOK_SECRET, timestamp=1_000_000_000)
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key

    response = client.post("/webhooks/stripe", content=body, headers=headers)

    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_signature"
    with services.db.transaction() as session:
        assert session.scalar(select(func.count()).select_from(StripeEvent)) == 0
