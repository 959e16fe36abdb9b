"""Never two Stripe customers for one user: under concurrency, lost answers, outages, crashes."""

from __future__ import annotations

import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import stripe
from conftest import STRIPE_KEY
from factories import auth, register, unique_email
from fastapi.testclient import TestClient
from sqlalchemy import select
from support.netfault import FaultyLink
from support.waiting import wait_until, waits_on_a_lock
from support.worker_process import output, start_worker_process

from billfold.config import Settings
from billfold.customers import service
from billfold.customers.models import Customer
from billfold.customers.stripe_sync import ensure_stripe_customer
from billfold.jobs.models import Job, JobStatus
from billfold.jobs.queue import enqueue, recurring_job_id
from billfold.jobs.worker import Worker
from billfold.services import Services
from billfold.stripe_gateway import StripeUnavailable

LAZY = pytest.mark.parametrize(
    "settings_overrides", [{"stripe_customer_creation": "on_first_payment"}]
)

# The recurring jobs (the janitor, the purge, trials' end...): one row each, never drained.
RECURRING = recurring_job_id("")


def stripe_customers_with(stripe_api: stripe.StripeClient, email: str) -> list[Any]:
    return list(stripe_api.v1.customers.list(params={"email": email, "limit": 100}).data)


def linked_id(services: Services, customer_id: str) -> str | None:
    with services.db.transaction() as session:
        customer = session.get(Customer, customer_id)
        assert customer is not None
        return customer.stripe_customer_id


def pending_jobs(services: Services) -> list[Job]:
    with services.db.transaction() as session:
        return list(
            session.scalars(
                select(Job).where(Job.status != JobStatus.DONE, ~Job.id.startswith(RECURRING))
            )
        )


@LAZY
def test_concurrent_ensure_calls_create_one_stripe_customer(
    client: TestClient, services: Services, stripe_api: stripe.StripeClient, settings_overrides: Any
) -> None:
    email = unique_email()
    customer_id = register(client, email=email)["user"]["customerId"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [
            pool.submit(ensure_stripe_customer, services, customer_id, wait=15) for _ in range(8)
        ]
        answers = {f.result() for f in futures}

    remote = stripe_customers_with(stripe_api, email)
    assert len(remote) == 1
    assert answers == {remote[0].id}
    assert linked_id(services, customer_id) == remote[0].id


@LAZY
def test_retry_after_a_lost_answer_finds_the_customer_stripe_made(
    client: TestClient,
    services: Services,
    stripe_api: stripe.StripeClient,
    stripe_link: FaultyLink,
    settings_overrides: Any,
) -> None:
    email = unique_email()
    customer_id = register(client, email=email)["user"]["customerId"]

    stripe_link.drop_responses()  # Stripe does the work; we never hear back
    with pytest.raises(StripeUnavailable):
        ensure_stripe_customer(services, customer_id)
    made = stripe_customers_with(stripe_api, email)
    assert len(made) <= 1

    stripe_link.up()
    stripe_id = ensure_stripe_customer(services, customer_id)
    remote = stripe_customers_with(stripe_api, email)
    assert len(remote) == 1
    assert stripe_id == remote[0].id
    if made:
        assert stripe_id == made[0].id


def test_stripe_down_registration_edits_and_catch_up_happen_once(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_link: FaultyLink,
) -> None:
    stripe_link.down()
    email = unique_email()
    data = register(client, email=email, name="Before")
    user = data["user"]
    assert user["stripeCustomerId"] is None
    new_email = unique_email()
    patched = client.patch(
        f"/users/{user['id']}",
        json={"name": "After", "email": new_email, "currentPassword": "correct horse 1"},
        headers=auth(data["access_token"]),
    )
    assert patched.status_code == 200
    worker.run_until_idle()  # tries and fails: Stripe is down
    assert linked_id(services, user["customerId"]) is None
    assert stripe_customers_with(stripe_api, email) == []

    stripe_link.up()
    _drain(services, worker)

    stripe_id = linked_id(services, user["customerId"])
    assert stripe_id is not None
    remote = stripe_api.v1.customers.retrieve(stripe_id)
    assert (remote.name, remote.email) == ("After", new_email)
    assert stripe_customers_with(stripe_api, email) == []  # created once, then renamed
    assert [c.id for c in stripe_customers_with(stripe_api, new_email)] == [stripe_id]
    assert pending_jobs(services) == []


def test_user_deleted_while_stripe_was_down_leaves_no_stripe_customer(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_link: FaultyLink,
) -> None:
    email = unique_email()
    stripe_link.down()
    data = register(client, email=email)
    deleted = client.delete(f"/users/{data['user']['id']}", headers=auth(data["access_token"]))
    assert deleted.status_code == 200
    worker.run_until_idle()

    stripe_link.up()
    _drain(services, worker)
    assert stripe_customers_with(stripe_api, email) == []
    assert pending_jobs(services) == []


def test_deleting_a_linked_user_deletes_the_stripe_customer(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
) -> None:
    data = register(client)
    stripe_id = data["user"]["stripeCustomerId"]
    assert stripe_id
    client.delete(f"/users/{data['user']['id']}", headers=auth(data["access_token"]))
    worker.run_until_idle()
    with pytest.raises(stripe.InvalidRequestError):
        stripe_api.v1.customers.retrieve(stripe_id)


@LAZY
def test_worker_killed_between_stripe_create_and_commit_ends_with_one_customer(
    client: TestClient,
    services: Services,
    settings: Settings,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_link: FaultyLink,
    tmp_path: Path,
    settings_overrides: Any,
) -> None:
    email = unique_email()
    customer_id = register(client, email=email)["user"]["customerId"]
    with services.db.transaction() as session:
        enqueue(session, service.LINK_JOB, {"customer_id": customer_id})

    # Hold Stripe's first answer so the worker is caught mid-way, then lock the customer
    # row so that, once Stripe has created the customer, the worker cannot commit the link.
    stripe_link.hold_responses()
    process = start_worker_process(settings, stripe_link.url, STRIPE_KEY, tmp_path)
    try:
        assert stripe_link.wait_for_held_response(timeout=30), output(process)
        with services.db.engine.connect() as blocker:
            transaction = blocker.begin()  # SQLite: BEGIN IMMEDIATE takes the write lock
            blocker.execute(select(Customer.id).where(Customer.id == customer_id).with_for_update())
            stripe_link.up()
            assert wait_until(lambda: len(stripe_customers_with(stripe_api, email)) == 1, 20)
            if services.db.dialect == "postgresql":  # SQLite's busy wait shows no waiter
                # The worker got Stripe's answer and now waits on our lock to record the link.
                assert wait_until(lambda: waits_on_a_lock(services.db.engine), 20)
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
            transaction.rollback()
    finally:
        if process.poll() is None:
            process.kill()
    assert linked_id(services, customer_id) is None  # the crash lost the link...

    # ...until the dead worker's lease ends and the job runs again.
    _drain(services, worker, timeout=settings.customer_link_lease_seconds + 20)
    remote = stripe_customers_with(stripe_api, email)
    assert len(remote) == 1
    assert linked_id(services, customer_id) == remote[0].id


def _drain(services: Services, worker: Worker[Services], timeout: float = 20) -> None:
    """Run the worker until no job is left (retries wait for their backoff)."""

    def idle() -> bool:
        worker.run_until_idle()
        return not pending_jobs(services)

    assert wait_until(idle, timeout, interval=0.05), [
        (j.kind, j.status, j.last_error) for j in pending_jobs(services)
    ]
