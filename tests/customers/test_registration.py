"""Registration creates the account and, right away or by the worker, one Stripe customer."""

from __future__ import annotations

import threading
from contextlib import ExitStack
from typing import Any

import pytest
import stripe
from argon2 import PasswordHasher
from factories import register, unique_email
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session
from support.netfault import FaultyLink
from support.transactions import transaction_open
from support.waiting import wait_until

from billfold.auth import service as auth_service
from billfold.auth.models import User
from billfold.customers.models import Customer
from billfold.customers.registration import SIGN_UP
from billfold.jobs.models import Job
from billfold.jobs.worker import Worker
from billfold.services import Services


def test_registration_links_a_stripe_customer_with_our_ids(
    client: TestClient, stripe_api: stripe.StripeClient
) -> None:
    email = unique_email()
    data = register(client, name="Grace Hopper", email=email, companyName="Navy")
    user = data["user"]
    assert user["id"].startswith("usr_")
    assert len(user["id"]) == 36
    assert user["customerId"].startswith("cust_")
    assert len(user["customerId"]) == 37
    assert user["role"] == "user"
    assert user["companyName"] == "Navy"
    assert user["isEmailVerified"] is False
    assert data["access_token"]

    remote = stripe_api.v1.customers.retrieve(user["stripeCustomerId"])
    assert remote.name == "Grace Hopper"
    assert remote.email == email
    assert remote.description == f"Customer for user ID: {user['id']}"
    assert remote.metadata is not None
    assert remote.metadata.to_dict() == {
        "customer_id": user["customerId"],
        "user_id": user["id"],
        "source": "user_registration",
    }


def test_registered_user_can_log_in_and_read_themself(client: TestClient) -> None:
    email = unique_email()
    register(client, email=email, password="s3cret-password")
    login = client.post("/auth/login", json={"email": email.upper(), "password": "s3cret-password"})
    assert login.status_code == 200
    token = login.json()["data"]["access_token"]
    me = client.get("/users/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200
    assert me.json()["success"] is True
    assert me.json()["data"]["email"] == email


def test_email_is_unique_case_insensitively(client: TestClient, services: Services) -> None:
    email = unique_email()
    register(client, email=email)
    again = client.post(
        "/users", json={"name": "Other", "email": email.upper(), "password": "password-123"}
    )
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "email_taken"
    assert again.json()["success"] is False
    with services.db.transaction() as session:
        assert session.scalar(select(func.count()).select_from(User)) == 1


@pytest.mark.parametrize(
    ("body", "bad_field"),
    [
        ({"name": "A", "email": "not-an-email", "password": "password-123"}, "email"),
        ({"name": "A", "email": 12345, "password": "password-123"}, "email"),
        ({"name": "", "email": "a@example.com", "password": "password-123"}, "name"),
        ({"name": "A" * 201, "email": "a@example.com", "password": "password-123"}, "name"),
        ({"name": "A", "email": "a@example.com", "password": "short"}, "password"),
        ({"name": "A", "email": "a@example.com", "password": "p" * 10_000}, "password"),
        ({"name": ["A"], "email": "a@example.com", "password": "password-123"}, "name"),
        ({"email": "a@example.com", "password": "password-123"}, "name"),
        (
            {"name": "A", "email": "a@example.com", "password": "password-123", "role": "admin"},
            "role",
        ),
    ],
)
def test_bad_registrations_answer_422_and_store_nothing(
    client: TestClient, services: Services, body: dict[str, Any], bad_field: str
) -> None:
    response = client.post("/users", json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert any(bad_field in p["field"] for p in error["details"]["problems"])
    assert "password-123" not in response.text
    assert "p" * 100 not in response.text
    with services.db.transaction() as session:
        assert session.scalar(select(func.count()).select_from(User)) == 0
        assert session.scalar(select(func.count()).select_from(Job)) == 0


def test_malformed_json_is_a_clear_4xx(client: TestClient) -> None:
    response = client.post(
        "/users", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"


@pytest.mark.parametrize("settings_overrides", [{"stripe_customer_creation": "on_first_payment"}])
def test_on_first_payment_registration_leaves_stripe_alone(
    client: TestClient, services: Services, worker: Worker[Services], settings_overrides: Any
) -> None:
    user = register(client)["user"]
    assert user["stripeCustomerId"] is None
    worker.run_until_idle()
    with services.db.transaction() as session:
        # Only the e-mail verification link went out: nothing for Stripe.
        kinds = list(session.scalars(select(Job.kind)))
        assert kinds == ["mail.send"]


def test_inline_link_at_sign_up_asks_stripe_only_to_create(
    client: TestClient, stripe_link: FaultyLink, stripe_api: stripe.StripeClient
) -> None:
    # The account commits holding the claim on its Stripe creation: no earlier try can have
    # made a Stripe customer, so there is nothing to look for before creating one.
    before = stripe_link.counts["requests"]
    email = unique_email()
    user = register(client, email=email)["user"]
    assert stripe_link.counts["requests"] - before == 1
    listed = stripe_api.v1.customers.list(params={"email": email}).data
    assert [c.id for c in listed] == [user["stripeCustomerId"]]


def test_sign_up_work_runs_while_the_password_is_hashed_on_postgresql(
    client: TestClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    if services.db.dialect != "postgresql":
        pytest.skip("on SQLite the hash comes first: a transaction there holds the write lock")
    sign_up_work = threading.Event()
    overlapped: list[bool] = []

    class WaitingHasher(PasswordHasher):
        """Hashes only once the sign-up's transaction has done its other work (or 10 s)."""

        def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
            overlapped.append(sign_up_work.wait(10))
            return super().hash(password, salt=salt)

    def note_work(_session: Session, _customer: Customer, _services: Services) -> None:
        sign_up_work.set()

    monkeypatch.setattr(
        auth_service, "_hasher", WaitingHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
    )
    services.wiring.on(SIGN_UP, note_work)
    email = unique_email()
    register(client, email=email, password="correct horse 1")
    assert overlapped == [True]
    login = client.post("/auth/login", json={"email": email, "password": "correct horse 1"})
    assert login.status_code == 200


def test_sqlite_sign_up_holds_no_transaction_while_the_password_is_hashed(
    client: TestClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    if services.db.dialect != "sqlite":
        pytest.skip("PostgreSQL hashes during the transaction's other work (new rows only)")
    during_hash: list[bool] = []

    class CheckingHasher(PasswordHasher):
        """Before answering, gives a transaction of the sign-up 2 s to open meanwhile."""

        def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
            hashed = super().hash(password, salt=salt)
            during_hash.append(wait_until(lambda: transaction_open(services), timeout=2))
            return hashed

    monkeypatch.setattr(
        auth_service, "_hasher", CheckingHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
    )
    register(client)
    assert during_hash == [False]


def test_sign_up_whose_hash_cannot_be_made_stores_nothing(
    client: TestClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth_service, "HASH_WAIT_SECONDS", 0.2)
    email = unique_email()
    written: list[str] = []

    def note_user_writes(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.startswith("INSERT INTO users"):
            written.append(statement)

    event.listen(services.db.engine, "before_cursor_execute", note_user_writes)
    try:
        with ExitStack() as held:
            for _ in range(auth_service.MAX_CONCURRENT_HASHES):
                held.enter_context(auth_service._hashing_slot())
            busy = client.post(
                "/users", json={"name": "A", "email": email, "password": "correct horse 1"}
            )
    finally:
        event.remove(services.db.engine, "before_cursor_execute", note_user_writes)
    assert busy.status_code == 503
    assert busy.json()["error"]["code"] == "busy"
    # Refused before its transaction began: a flood of sign-ups waits for hashing slots
    # holding no database connection (on PostgreSQL the hash runs beside the transaction).
    assert written == []
    with services.db.transaction() as session:
        assert session.scalar(select(func.count()).select_from(User)) == 0
        assert session.scalar(select(func.count()).select_from(Job)) == 0
    register(client, email=email)  # the address is still free
