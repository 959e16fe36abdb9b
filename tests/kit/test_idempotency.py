"""The Idempotency-Key header: a retried call answers the first answer and does nothing twice."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import stripe
from factories import auth, register, unique_email
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from support.netfault import FaultyLink
from support.payments import make_product, saved_card

from billfold.jobs.models import Job, JobStatus
from billfold.jobs.worker import Worker
from billfold.kit.db import utcnow
from billfold.kit.idempotency import PURGE_EVERY, PURGE_JOB, IdempotencyRecord
from billfold.payments.models import Order, Payment
from billfold.services import Services


def orders(services: Services) -> int:
    with services.db.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(Order)) or 0)


def test_same_key_and_body_replays_the_answer_and_does_the_work_once(
    client: TestClient, admin: dict[str, str], buyer: dict[str, Any], services: Services
) -> None:
    product = make_product(client, admin)
    body = {"items": [{"productId": product["id"], "quantity": 1}]}
    headers = {**buyer["headers"], "Idempotency-Key": "order-1"}

    first = client.post("/orders", json=body, headers=headers)
    second = client.post("/orders", json=body, headers=headers)

    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert orders(services) == 1


def test_same_key_with_another_body_is_refused(
    client: TestClient, admin: dict[str, str], buyer: dict[str, Any], services: Services
) -> None:
    product = make_product(client, admin)
    headers = {**buyer["headers"], "Idempotency-Key": "order-2"}
    client.post(
        "/orders", json={"items": [{"productId": product["id"], "quantity": 1}]}, headers=headers
    )
    other = client.post(
        "/orders", json={"items": [{"productId": product["id"], "quantity": 2}]}, headers=headers
    )
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert orders(services) == 1


def test_keys_belong_to_their_caller(
    client: TestClient, admin: dict[str, str], buyer: dict[str, Any], services: Services
) -> None:
    product = make_product(client, admin)
    body = {"items": [{"productId": product["id"], "quantity": 1}]}
    someone = auth(register(client)["access_token"])
    for headers in (buyer["headers"], someone):
        response = client.post("/orders", json=body, headers={**headers, "Idempotency-Key": "same"})
        assert response.status_code == 201
    assert orders(services) == 2


def test_errors_are_replayed_but_an_outage_is_not(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    stripe_api: stripe.StripeClient,
    stripe_link: FaultyLink,
) -> None:
    product = make_product(client, admin, stock=1)
    headers = {**buyer["headers"], "Idempotency-Key": "too-many"}
    too_many = {"items": [{"productId": product["id"], "quantity": 2}]}
    assert client.post("/orders", json=too_many, headers=headers).status_code == 409
    assert client.post("/orders", json=too_many, headers=headers).status_code == 409

    pm = saved_card(client, stripe_api, buyer["headers"])
    pay = {"productId": product["id"], "quantity": 1, "paymentMethodId": pm}
    pay_headers = {**buyer["headers"], "Idempotency-Key": "pay-1"}
    stripe_link.down()
    assert client.post("/payments/create-intent", json=pay, headers=pay_headers).status_code == 503
    stripe_link.up()
    paid = client.post("/payments/create-intent", json=pay, headers=pay_headers)
    assert paid.status_code == 200, paid.text
    assert paid.json()["data"]["status"] == "succeeded"
    again = client.post("/payments/create-intent", json=pay, headers=pay_headers)
    assert again.json() == paid.json()
    with services.db.transaction() as session:
        succeeded = session.scalar(
            select(func.count()).select_from(Payment).where(Payment.status == "succeeded")
        )
    assert succeeded == 1


def test_overlong_key_is_a_clear_400(client: TestClient, buyer: dict[str, Any]) -> None:
    response = client.post(
        "/orders", json={"items": []}, headers={**buyer["headers"], "Idempotency-Key": "k" * 256}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_idempotency_key"


# -- no secrets at rest, and no record for ever ---------------------------------------------


def records(services: Services) -> list[IdempotencyRecord]:
    with services.db.transaction() as session:
        return list(session.scalars(select(IdempotencyRecord)))


def test_a_new_api_key_is_never_kept_and_a_retry_answers_409_without_a_second_key(
    client: TestClient, admin: dict[str, str], services: Services
) -> None:
    headers = {**admin, "Idempotency-Key": "key-for-backend"}

    made = client.post("/api-keys", json={"name": "backend"}, headers=headers)
    again = client.post("/api-keys", json={"name": "backend"}, headers=headers)

    assert made.status_code == 201, made.text
    secret = made.json()["data"]["key"]
    assert made.headers["cache-control"] == "no-store"
    [record] = records(services)
    assert record.response_status == 201
    assert record.response_body is None
    assert (again.status_code, again.json()["error"]["code"]) == (
        409,
        "idempotent_answer_withheld",
    )
    assert again.json()["error"]["details"] == {"originalStatus": 201}
    assert secret not in again.text
    listed = client.get("/api-keys", headers=admin).json()["data"]
    assert [k["name"] for k in listed] == ["backend"]


def test_sign_up_and_log_in_answers_keep_no_token_at_rest(
    client: TestClient, services: Services
) -> None:
    email = unique_email()
    body = {"name": "Ada", "email": email, "password": "correct horse 1"}
    signed_up = client.post("/users", json=body, headers={"Idempotency-Key": "sign-up-1"})
    logged_in = client.post(
        "/auth/login",
        json={"email": email, "password": "correct horse 1"},
        headers={"Idempotency-Key": "log-in-1"},
    )

    assert signed_up.status_code == 201, signed_up.text
    assert logged_in.status_code == 200, logged_in.text
    tokens = [signed_up.json()["data"]["access_token"], logged_in.json()["data"]["access_token"]]
    kept = records(services)
    assert sorted(r.response_status or 0 for r in kept) == [200, 201]
    for record in kept:
        assert record.response_body is None
    with services.db.engine.connect() as conn:
        dump = " ".join(str(row) for row in conn.execute(select(IdempotencyRecord.__table__)))
    for token in tokens:
        assert token not in dump
    assert "access_token" not in dump


def test_an_answer_without_a_credential_is_still_kept_and_replayed(
    client: TestClient, services: Services
) -> None:
    # A refused sign-up carries no token: it is kept and replayed as before.
    body = {"name": "Ada", "email": "not-an-email", "password": "correct horse 1"}
    first = client.post("/users", json=body, headers={"Idempotency-Key": "bad-sign-up"})
    again = client.post("/users", json=body, headers={"Idempotency-Key": "bad-sign-up"})

    assert first.status_code == again.status_code == 422
    assert again.headers.get("Idempotent-Replayed") == "true"
    [record] = records(services)
    assert record.response_body is not None


def test_records_past_the_retention_are_purged_by_the_periodic_job(
    services: Services, worker: Worker[Services]
) -> None:
    retention = timedelta(hours=services.settings.idempotency_retention_hours)
    now = utcnow()
    with services.db.transaction() as session:
        for key, age in (("old", retention + timedelta(minutes=1)), ("new", timedelta(0))):
            session.add(
                IdempotencyRecord(
                    scope="s", key=key, fingerprint="f", created_at=now - age, completed_at=now
                )
            )

    worker.schedule_recurring()
    worker.schedule_recurring()  # a second worker starting: still one job
    worker.run_until_idle()

    assert [r.key for r in records(services)] == ["new"]
    with services.db.transaction() as session:
        [job] = session.scalars(select(Job).where(Job.kind == PURGE_JOB))
        assert job.status == JobStatus.PENDING  # waiting for its next run
        assert job.run_at > utcnow() + PURGE_EVERY - timedelta(minutes=1)
        assert job.last_error is None
