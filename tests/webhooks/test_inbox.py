"""Stripe's webhooks: verified, stored once, answered fast, applied by a job, never out of order."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import stripe
import uvicorn
from conftest import WEBHOOK_SECRET
from factories import admin_token, auth, register
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from support.netfault import FaultyLink
from support.stripe_events import delivery, event, sign
from support.waiting import wait_until

from billfold.app import create_app
from billfold.auth.models import User
from billfold.customers.models import Customer
from billfold.customers.service import PUSH_JOB
from billfold.jobs.models import Job, JobStatus
from billfold.jobs.worker import Worker
from billfold.kit.audit import AuditEntry
from billfold.kit.db import utcnow
from billfold.services import Services
from billfold.standin import LocalStripe, free_port
from billfold.webhooks.inbox import PROCESS_JOB
from billfold.webhooks.models import StripeEvent

# -- helpers ---------------------------------------------------------------------------


def deliver(
    client: TestClient,
    evt: dict[str, Any],
    *,
    secret: str = WEBHOOK_SECRET,
    timestamp: int | None = None,
) -> httpx.Response:
    body, headers = delivery(evt, secret, timestamp=timestamp)
    response: httpx.Response = client.post("/webhooks/stripe", content=body, headers=headers)
    return response


def stored(services: Services, stripe_event_id: str) -> StripeEvent:
    with services.db.transaction() as session:
        row = session.scalar(
            select(StripeEvent).where(StripeEvent.stripe_event_id == stripe_event_id)
        )
        assert row is not None, f"event {stripe_event_id} was not stored"
        return row


def count(services: Services, model: type[StripeEvent] | type[Job], *where: Any) -> int:
    with services.db.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def process_jobs(services: Services) -> int:
    return count(services, Job, Job.kind == PROCESS_JOB)


def stripe_customer(stripe_api: stripe.StripeClient, stripe_id: str) -> dict[str, Any]:
    """The customer as Stripe has it now, as a webhook would carry it."""
    obj: dict[str, Any] = stripe_api.v1.customers.retrieve(stripe_id).to_dict()
    return obj


def me(client: TestClient, token: str) -> dict[str, Any]:
    response = client.get("/users/me", headers=auth(token))
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def linked_user(client: TestClient) -> tuple[dict[str, Any], str]:
    """A registered user whose Stripe customer exists in localstripe, and their token."""
    data = register(client, name="Ada Lovelace")
    assert data["user"]["stripeCustomerId"], "registration should link inline"
    return data["user"], data["access_token"]


def hold_back(services: Services, kind: str) -> None:
    """Make the queued jobs of `kind` not due for an hour (as if the worker had not got there)."""
    with services.db.transaction() as session:
        session.execute(
            update(Job).where(Job.kind == kind).values(run_at=utcnow() + timedelta(hours=1))
        )


def release(services: Services, kind: str) -> None:
    with services.db.transaction() as session:
        session.execute(update(Job).where(Job.kind == kind).values(run_at=utcnow()))


def rename_in_stripe(stripe_api: stripe.StripeClient, stripe_id: str, name: str) -> None:
    stripe_api.v1.customers.update(stripe_id, params={"name": name})


# -- receiving -------------------------------------------------------------------------


def test_signed_event_is_stored_pending_answered_then_processed_by_a_job(
    client: TestClient, services: Services, worker: Worker[Services]
) -> None:
    evt = event("billfold.test_unknown_type", {"id": "obj_1", "object": "thing"})
    body, headers = delivery(evt, WEBHOOK_SECRET)

    response = client.post("/webhooks/stripe", content=body, headers=headers)

    assert response.status_code == 200, response.text
    envelope = response.json()
    assert envelope["success"] is True
    assert envelope["data"]["received"] is True
    assert envelope["data"]["duplicate"] is False
    row = stored(services, evt["id"])
    assert envelope["data"]["id"] == row.id
    assert row.status == "pending"
    assert row.type == "billfold.test_unknown_type"
    assert row.payload == body.decode()
    assert int(row.stripe_created_at.timestamp()) == evt["created"]
    assert row.attempts == 0
    assert row.processed_at is None
    with services.db.transaction() as session:
        job = session.scalars(select(Job).where(Job.kind == PROCESS_JOB)).one()
        assert job.payload == {"event_id": row.id}
        assert job.status == JobStatus.PENDING

    assert worker.run_until_idle() >= 1

    row = stored(services, evt["id"])
    assert row.status == "ignored"  # nobody handles this type
    assert row.error == "no handler for this type"
    assert row.attempts == 1
    assert row.processed_at is not None
    with services.db.transaction() as session:
        job = session.scalars(select(Job).where(Job.kind == PROCESS_JOB)).one()
        assert job.status == JobStatus.DONE


def test_same_event_id_twice_is_acknowledged_as_duplicate_and_applied_once(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
) -> None:
    user, token = linked_user(client)
    stripe_id = user["stripeCustomerId"]
    rename_in_stripe(stripe_api, stripe_id, "Stripe Name")
    evt = event("customer.updated", stripe_customer(stripe_api, stripe_id))

    first = deliver(client, evt)
    second = deliver(client, evt)

    assert first.status_code == 200
    assert second.status_code == 200
    assert first.json()["data"]["duplicate"] is False
    assert second.json()["data"]["duplicate"] is True
    assert second.json()["data"]["id"] == first.json()["data"]["id"]
    assert count(services, StripeEvent) == 1
    assert process_jobs(services) == 1

    worker.run_until_idle()
    assert stored(services, evt["id"]).attempts == 1
    assert me(client, token)["name"] == "Stripe Name"

    # Stripe retries a delivery it thinks was lost: acknowledged, not applied again.
    with services.db.transaction() as session:
        session.execute(update(User).where(User.id == user["id"]).values(name="Changed Here"))
    third = deliver(client, evt)
    assert third.status_code == 200
    assert third.json()["data"]["duplicate"] is True
    worker.run_until_idle()
    assert count(services, StripeEvent) == 1
    assert process_jobs(services) == 1
    row = stored(services, evt["id"])
    assert row.attempts == 1
    assert row.status == "processed"
    assert me(client, token)["name"] == "Changed Here"


def _wrong_secret(evt: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    return delivery(evt, "whsec_somebody_else")


def _missing_header(evt: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    body, headers = delivery(evt, WEBHOOK_SECRET)
    del headers["Stripe-Signature"]
    return body, headers


def _stale(evt: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    return delivery(evt, WEBHOOK_SECRET, timestamp=int(time.time()) - 3600)


def _tampered(evt: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    body, headers = delivery(evt, WEBHOOK_SECRET)
    return body.replace(b"customer.updated", b"customer.deleted"), headers


def _signed(body: bytes) -> tuple[bytes, dict[str, str]]:
    headers = {"Stripe-Signature": sign(body, WEBHOOK_SECRET), "Content-Type": "application/json"}
    return body, headers


def _not_json(_evt: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    return _signed(b"this is not json {")


def _json_not_an_event(_evt: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    return _signed(json.dumps({"id": "evt_x", "hello": "world"}).encode())


def _json_array(_evt: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    return _signed(b"[1, 2, 3]")


def _created_not_a_number(evt: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    return _signed(json.dumps({**evt, "created": "yesterday"}).encode())


def _null_id(evt: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    return _signed(json.dumps({**evt, "id": None}).encode())


@pytest.mark.parametrize(
    ("build", "code"),
    [
        pytest.param(_wrong_secret, "invalid_signature", id="wrong-secret"),
        pytest.param(_missing_header, "invalid_signature", id="missing-header"),
        pytest.param(_stale, "invalid_signature", id="timestamp-older-than-tolerance"),
        pytest.param(_tampered, "invalid_signature", id="body-changed-after-signing"),
        pytest.param(_not_json, "invalid_payload", id="signed-body-not-json"),
        pytest.param(_json_not_an_event, "invalid_payload", id="signed-json-not-an-event"),
        pytest.param(_json_array, "invalid_payload", id="signed-json-array"),
        pytest.param(_created_not_a_number, "invalid_payload", id="signed-created-not-int"),
        pytest.param(_null_id, "invalid_payload", id="signed-null-id"),
    ],
)
def test_unverifiable_delivery_answers_400_and_stores_nothing(
    client: TestClient,
    services: Services,
    build: Callable[[dict[str, Any]], tuple[bytes, dict[str, str]]],
    code: str,
) -> None:
    evt = event("customer.updated", {"id": "cus_whatever", "object": "customer"})
    body, headers = build(evt)

    response = client.post("/webhooks/stripe", content=body, headers=headers)

    assert response.status_code == 400, response.text
    assert response.json()["success"] is False
    assert response.json()["error"]["code"] == code
    assert count(services, StripeEvent) == 0
    assert count(services, Job) == 0


@pytest.mark.parametrize(
    "strange",
    [
        {"created": 10**12},
        {"created": 10**20},
        {"created": -1},
        {"created": True},
        {"type": "customer." + "x" * 200},
        {"id": "evt_" + "x" * 300},
        {"id": "evt_\x00"},
        {"type": "customer.\x00updated"},
    ],
    ids=[
        "created-1e12",
        "created-1e20",
        "created-negative",
        "created-bool",
        "long-type",
        "long-id",
        "nul-id",
        "nul-type",
    ],
)
def test_a_signed_event_beyond_what_stripe_sends_is_refused_400_and_stores_nothing(
    client: TestClient, services: Services, strange: dict[str, Any]
) -> None:
    evt = {**event("customer.updated", {"id": "cus_whatever", "object": "customer"}), **strange}

    response = deliver(client, evt)

    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_payload"
    assert count(services, StripeEvent) == 0
    assert count(services, Job) == 0


# -- applying customer events ----------------------------------------------------------


def test_customer_updated_brings_stripe_name_back_to_the_user(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
) -> None:
    user, token = linked_user(client)
    stripe_id = user["stripeCustomerId"]
    rename_in_stripe(stripe_api, stripe_id, "New Name")
    evt = event("customer.updated", stripe_customer(stripe_api, stripe_id))

    assert deliver(client, evt).status_code == 200
    assert me(client, token)["name"] == "Ada Lovelace"  # not applied before the job runs
    worker.run_until_idle()

    assert me(client, token)["name"] == "New Name"
    row = stored(services, evt["id"])
    assert row.status == "processed"
    assert row.customer_id == user["customerId"]
    assert row.error is None


def test_customer_updated_applies_stripes_current_state_not_the_events_snapshot(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
) -> None:
    user, token = linked_user(client)
    stripe_id = user["stripeCustomerId"]
    rename_in_stripe(stripe_api, stripe_id, "First Edit")
    stale_snapshot = stripe_customer(stripe_api, stripe_id)
    rename_in_stripe(stripe_api, stripe_id, "Second Edit")

    deliver(client, event("customer.updated", stale_snapshot))
    worker.run_until_idle()

    assert me(client, token)["name"] == "Second Edit"


def test_older_event_never_overwrites_newer_state(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
) -> None:
    user, token = linked_user(client)
    stripe_id = user["stripeCustomerId"]
    now = int(time.time())
    rename_in_stripe(stripe_api, stripe_id, "Newer")
    newer = event("customer.updated", stripe_customer(stripe_api, stripe_id), created=now)
    deliver(client, newer)
    worker.run_until_idle()
    assert me(client, token)["name"] == "Newer"

    # Stripe moves on; a late event from before the one applied arrives.
    rename_in_stripe(stripe_api, stripe_id, "Moved On")
    older = event(
        "customer.updated",
        {**stripe_customer(stripe_api, stripe_id), "name": "Older"},
        created=now - 100,
    )
    assert deliver(client, older).json()["data"]["duplicate"] is False
    worker.run_until_idle()

    row = stored(services, older["id"])
    assert row.status == "ignored"
    assert row.error == "older than the state we hold"
    assert row.customer_id == user["customerId"]
    assert me(client, token)["name"] == "Newer"
    with services.db.transaction() as session:
        customer = session.get(Customer, user["customerId"])
        assert customer is not None
        assert customer.stripe_event_at is not None
        assert int(customer.stripe_event_at.timestamp()) == now


def test_customer_updated_does_not_overwrite_a_local_edit_waiting_to_be_pushed(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
) -> None:
    user, token = linked_user(client)
    stripe_id = user["stripeCustomerId"]
    patch = client.patch(f"/users/{user['id']}", json={"name": "Ours"}, headers=auth(token))
    assert patch.status_code == 200, patch.text
    # The push has not run yet: hold it back so the event is applied first.
    hold_back(services, PUSH_JOB)

    old = stripe_customer(stripe_api, stripe_id)
    assert old["name"] == "Ada Lovelace"
    evt = event("customer.updated", old)
    deliver(client, evt)
    worker.run_until_idle()

    row = stored(services, evt["id"])
    assert row.status == "processed"
    assert row.error == "local edit pending; kept ours"
    assert me(client, token)["name"] == "Ours"

    # Once the push runs, Stripe has ours as well.
    release(services, PUSH_JOB)
    worker.run_until_idle()
    assert stripe_api.v1.customers.retrieve(stripe_id).name == "Ours"
    assert me(client, token)["name"] == "Ours"


def test_customer_deleted_in_stripe_unlinks_our_customer(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
) -> None:
    user, token = linked_user(client)
    stripe_id = user["stripeCustomerId"]
    snapshot = stripe_customer(stripe_api, stripe_id)
    stripe_api.v1.customers.delete(stripe_id)
    evt = event("customer.deleted", {**snapshot, "deleted": True})

    deliver(client, evt)
    worker.run_until_idle()

    row = stored(services, evt["id"])
    assert row.status == "processed"
    assert row.customer_id == user["customerId"]
    shown = me(client, token)
    assert shown["stripeCustomerId"] is None
    assert shown["name"] == "Ada Lovelace"  # the account itself stays
    with services.db.transaction() as session:
        customer = session.get(Customer, user["customerId"])
        assert customer is not None
        assert customer.stripe_removed_at is not None


def test_customer_updated_for_a_customer_gone_from_stripe_unlinks_it(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
) -> None:
    user, token = linked_user(client)
    stripe_id = user["stripeCustomerId"]
    evt = event("customer.updated", stripe_customer(stripe_api, stripe_id))
    stripe_api.v1.customers.delete(stripe_id)

    deliver(client, evt)
    worker.run_until_idle()

    assert stored(services, evt["id"]).status == "processed"
    assert me(client, token)["stripeCustomerId"] is None


@pytest.mark.parametrize("event_type", ["customer.updated", "customer.deleted"])
def test_event_for_an_unknown_stripe_customer_is_stored_and_ignored_with_a_note(
    client: TestClient, services: Services, worker: Worker[Services], event_type: str
) -> None:
    evt = event(event_type, {"id": "cus_notoursatall", "object": "customer", "metadata": {}})

    assert deliver(client, evt).status_code == 200
    worker.run_until_idle()

    row = stored(services, evt["id"])
    assert row.status == "ignored"
    assert row.error == "no customer of ours is linked to cus_notoursatall"
    assert row.customer_id is None
    assert row.attempts == 1
    with services.db.transaction() as session:
        assert session.scalars(select(Job.status).where(Job.kind == PROCESS_JOB)).one() == "done"


# -- failures and retries --------------------------------------------------------------


def test_handler_failure_keeps_the_event_pending_and_the_retry_applies_it(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_link: FaultyLink,
) -> None:
    user, token = linked_user(client)
    stripe_id = user["stripeCustomerId"]
    rename_in_stripe(stripe_api, stripe_id, "After The Outage")
    evt = event("customer.updated", stripe_customer(stripe_api, stripe_id))
    deliver(client, evt)

    stripe_link.down()
    worker.run_until_idle()

    row = stored(services, evt["id"])
    assert row.status == "pending"
    assert row.error is not None
    assert "StripeUnavailable" in row.error
    assert row.attempts >= 1
    with services.db.transaction() as session:
        job = session.scalars(select(Job).where(Job.kind == PROCESS_JOB)).one()
        assert job.status == JobStatus.PENDING
        assert job.attempts == row.attempts
        assert job.last_error is not None
    assert me(client, token)["name"] == "Ada Lovelace"

    stripe_link.up()
    release(services, PROCESS_JOB)  # skip the rest of the backoff
    worker.run_until_idle()

    row = stored(services, evt["id"])
    assert row.status == "processed"
    assert row.error is None
    assert me(client, token)["name"] == "After The Outage"


def test_event_whose_retries_are_spent_ends_failed_and_a_replay_recovers_it(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_link: FaultyLink,
) -> None:
    user, token = linked_user(client)
    stripe_id = user["stripeCustomerId"]
    rename_in_stripe(stripe_api, stripe_id, "Eventually")
    evt = event("customer.updated", stripe_customer(stripe_api, stripe_id))
    deliver(client, evt)
    with services.db.transaction() as session:
        session.execute(update(Job).where(Job.kind == PROCESS_JOB).values(max_attempts=2))

    stripe_link.down()

    def job_dead() -> bool:
        worker.run_until_idle()
        with services.db.transaction() as session:
            status = session.scalars(select(Job.status).where(Job.kind == PROCESS_JOB)).one()
        return bool(status == JobStatus.DEAD)

    assert wait_until(job_dead, timeout=10)
    row = stored(services, evt["id"])
    assert row.status == "failed"
    assert row.attempts == 2
    assert row.error is not None
    assert "StripeUnavailable" in row.error
    admin = auth(admin_token(client, services))
    failed = client.get("/webhooks/events", params={"status": "failed"}, headers=admin)
    assert [e["stripeEventId"] for e in failed.json()["data"]] == [evt["id"]]

    stripe_link.up()
    replay = client.post(f"/webhooks/events/{row.id}/replay", headers=admin)
    assert replay.status_code == 200, replay.text
    worker.run_until_idle()

    assert stored(services, evt["id"]).status == "processed"
    assert me(client, token)["name"] == "Eventually"


# -- admin -----------------------------------------------------------------------------


def test_admin_lists_events_filtered_by_status_and_type(
    client: TestClient, services: Services, worker: Worker[Services]
) -> None:
    unknown_type = event("billfold.test_other", {"id": "obj_2", "object": "thing"})
    unknown_customer = event("customer.updated", {"id": "cus_nobody", "object": "customer"})
    waiting = event("customer.deleted", {"id": "cus_nobody_2", "object": "customer"})
    deliver(client, unknown_type)
    deliver(client, unknown_customer)
    worker.run_until_idle()
    deliver(client, waiting)
    admin = auth(admin_token(client, services))

    def listed(**params: str) -> list[str]:
        response = client.get("/webhooks/events", params=params, headers=admin)
        assert response.status_code == 200, response.text
        return sorted(e["stripeEventId"] for e in response.json()["data"])

    assert listed() == sorted([unknown_type["id"], unknown_customer["id"], waiting["id"]])
    assert listed(status="ignored") == sorted([unknown_type["id"], unknown_customer["id"]])
    assert listed(status="pending") == [waiting["id"]]
    assert listed(status="processed") == []
    assert listed(type="customer.updated") == [unknown_customer["id"]]
    one = client.get("/webhooks/events", params={"status": "pending"}, headers=admin)
    shown = one.json()["data"][0]
    assert shown["type"] == "customer.deleted"
    assert shown["attempts"] == 0
    assert shown["processedAt"] is None
    assert "payload" not in shown
    bad = client.get("/webhooks/events", params={"status": "nonsense"}, headers=admin)
    assert bad.status_code == 422


def test_event_admin_endpoints_refuse_normal_users(client: TestClient, services: Services) -> None:
    evt = event("billfold.test_other", {"id": "obj_3", "object": "thing"})
    deliver(client, evt)
    user_token = auth(register(client)["access_token"])

    listing = client.get("/webhooks/events", headers=user_token)
    replay = client.post(
        f"/webhooks/events/{stored(services, evt['id']).id}/replay", headers=user_token
    )
    anonymous = client.get("/webhooks/events")

    assert listing.status_code == 403
    assert listing.json()["error"]["code"] == "admin_only"
    assert replay.status_code == 403
    assert replay.json()["error"]["code"] == "admin_only"
    assert anonymous.status_code == 401
    assert count(services, Job, Job.kind == PROCESS_JOB) == 1  # the refused replay queued nothing


def test_replay_processes_the_event_again_and_leaves_state_equal(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
) -> None:
    user, token = linked_user(client)
    stripe_id = user["stripeCustomerId"]
    rename_in_stripe(stripe_api, stripe_id, "Replayed Name")
    evt = event("customer.updated", stripe_customer(stripe_api, stripe_id))
    deliver(client, evt)
    worker.run_until_idle()
    before = me(client, token)
    assert before["name"] == "Replayed Name"
    row = stored(services, evt["id"])
    admin_headers = auth(admin_token(client, services))

    replay = client.post(f"/webhooks/events/{row.id}/replay", headers=admin_headers)

    assert replay.status_code == 200, replay.text
    assert replay.json()["data"]["id"] == row.id
    assert replay.json()["data"]["status"] == "pending"
    assert process_jobs(services) == 2
    worker.run_until_idle()
    again = stored(services, evt["id"])
    assert again.status == "processed"
    assert again.attempts == 2
    assert me(client, token) == before
    with services.db.transaction() as session:
        audit = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "webhook.replay")
        ).one()
        assert audit.subject_id == row.id


def test_replay_of_an_unknown_event_is_404(client: TestClient, services: Services) -> None:
    admin_headers = auth(admin_token(client, services))

    response = client.post("/webhooks/events/evt_doesnotexist/replay", headers=admin_headers)

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert count(services, Job) == 0


# -- end to end, with localstripe's own delivery ----------------------------------------


@pytest.fixture
def live_app(services: Services) -> Iterator[str]:
    """The app served by uvicorn on a free port, for localstripe to deliver webhooks to."""
    port = free_port()
    config = uvicorn.Config(
        create_app(services=services), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-e2e", daemon=True)
    thread.start()
    assert wait_until(lambda: server.started, timeout=10), "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_localstripe_delivers_a_customer_update_that_we_apply(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    localstripe: LocalStripe,
    live_app: str,
) -> None:
    user, token = linked_user(client)
    stripe_id = user["stripeCustomerId"]
    endpoint = f"e2e-{uuid.uuid4().hex[:8]}"
    localstripe.register_webhook(
        endpoint, f"{live_app}/webhooks/stripe", WEBHOOK_SECRET, events=["customer.updated"]
    )
    try:
        rename_in_stripe(stripe_api, stripe_id, "Delivered By Stripe")

        def delivered() -> StripeEvent | None:
            with services.db.transaction() as session:
                for row in session.scalars(
                    select(StripeEvent).where(StripeEvent.type == "customer.updated")
                ):
                    if json.loads(row.payload)["data"]["object"]["id"] == stripe_id:
                        return row
            return None

        assert wait_until(lambda: delivered() is not None, timeout=10, interval=0.1)
    finally:
        # localstripe cannot forget an endpoint: point it at an event type that never fires.
        localstripe.register_webhook(
            endpoint, f"{live_app}/webhooks/stripe", WEBHOOK_SECRET, events=["billfold.never"]
        )
    row = delivered()
    assert row is not None
    assert row.status == "pending"
    assert json.loads(row.payload)["api_version"] == "2017-08-15"  # localstripe's own shape

    worker.run_until_idle()

    assert stored(services, row.stripe_event_id).status == "processed"
    assert me(client, token)["name"] == "Delivered By Stripe"
