"""Accounts over HTTP: who may read, edit, delete and export whom, service keys, bad input,
and Stripe following every change through the worker (or catching up after an outage)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
import stripe
from factories import admin_token, auth, register, unique_email
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from support.netfault import FaultyLink
from support.waiting import wait_until

from billfold.auth.models import ApiKey, User
from billfold.config import Settings
from billfold.customers.models import Customer
from billfold.customers.service import LINK_JOB, PUSH_JOB, REMOVE_JOB
from billfold.jobs.models import Job, JobStatus
from billfold.jobs.worker import Worker
from billfold.kit.audit import AuditEntry
from billfold.services import Services

PASSWORD = "correct horse 1"


# -- helpers ---------------------------------------------------------------------------


def _jwt_secret(settings: Settings) -> str:
    """The secret the app signs with (conftest.make_settings: "test-jwt-secret-" + "x"*32)."""
    assert settings.jwt_secret is not None
    return settings.jwt_secret.get_secret_value()


def _signed_up(client: TestClient, **fields: Any) -> tuple[dict[str, Any], str]:
    """A registered user (the API's user object) and their bearer token."""
    data = register(client, password=PASSWORD, **fields)
    user: dict[str, Any] = data["user"]
    token: str = data["access_token"]
    return user, token


def _snapshot(services: Services) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the tables an account change may touch, to prove nothing changed."""
    tables = {"users": User, "customers": Customer, "jobs": Job, "api_keys": ApiKey}
    with services.db.transaction() as session:
        return {
            name: sorted(tuple(row) for row in session.execute(select(model.__table__)).all())
            for name, model in tables.items()
        }


def _jobs(services: Services, kind: str) -> list[Job]:
    with services.db.transaction() as session:
        return list(session.scalars(select(Job).where(Job.kind == kind)))


def _error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["success"] is False
    error: dict[str, Any] = body["error"]
    return error


def _stripe_customer_gone(stripe_api: stripe.StripeClient, stripe_id: str) -> bool:
    try:
        remote = stripe_api.v1.customers.retrieve(stripe_id)
    except stripe.InvalidRequestError as exc:
        return exc.http_status == 404
    return bool(remote.to_dict().get("deleted", False))


def _call(client: TestClient, method: str, path: str, token: str) -> Any:
    if method == "PATCH":
        return client.patch(path, json={"name": "Mallory"}, headers=auth(token))
    return client.request(method, path, headers=auth(token))


OWN_ROUTES = [
    ("GET", "/users/{id}"),
    ("PATCH", "/users/{id}"),
    ("DELETE", "/users/{id}"),
    ("GET", "/users/{id}/export"),
]


# -- acting on oneself, on others, as an admin -----------------------------------------


def test_user_reads_edits_and_deletes_their_own_account(client: TestClient) -> None:
    user, token = _signed_up(client, name="Ada Lovelace")
    path = f"/users/{user['id']}"

    got = client.get(path, headers=auth(token))
    assert got.status_code == 200
    assert got.json()["data"] == user

    patched = client.patch(
        path, json={"name": "Ada King", "companyName": "Analytical"}, headers=auth(token)
    )
    assert patched.status_code == 200
    assert patched.json()["data"]["name"] == "Ada King"
    assert patched.json()["data"]["companyName"] == "Analytical"
    assert client.get("/users/me", headers=auth(token)).json()["data"]["name"] == "Ada King"

    deleted = client.delete(path, headers=auth(token))
    assert deleted.status_code == 200
    assert deleted.json()["data"] == {"id": user["id"], "deleted": True}


def test_another_users_id_answers_404_and_changes_nothing(
    client: TestClient, services: Services
) -> None:
    victim, _ = _signed_up(client, name="Victim")
    _, mallory_token = _signed_up(client, name="Mallory")
    before = _snapshot(services)

    for method, route in OWN_ROUTES:
        response = _call(client, method, route.format(id=victim["id"]), mallory_token)
        assert _error(response, 404)["code"] == "not_found", (method, route)
        assert victim["email"] not in response.text
        assert _snapshot(services) == before, (method, route)


def test_unknown_user_id_answers_404(client: TestClient, services: Services) -> None:
    _, token = _signed_up(client)
    admin = admin_token(client, services)
    before = _snapshot(services)
    missing = "usr_" + "0" * 32
    for caller in (token, admin):
        for method, route in OWN_ROUTES:
            response = _call(client, method, route.format(id=missing), caller)
            assert _error(response, 404)["code"] == "not_found", (method, route)
    assert _snapshot(services) == before


def test_admin_reads_edits_and_deletes_anyone(client: TestClient, services: Services) -> None:
    user, user_token = _signed_up(client, name="Grace")
    admin = admin_token(client, services)
    path = f"/users/{user['id']}"

    assert client.get(path, headers=auth(admin)).json()["data"]["name"] == "Grace"

    promoted = client.patch(path, json={"name": "Grace H", "role": "admin"}, headers=auth(admin))
    assert promoted.status_code == 200
    assert promoted.json()["data"]["role"] == "admin"
    assert promoted.json()["data"]["name"] == "Grace H"

    assert client.delete(path, headers=auth(admin)).status_code == 200
    assert _error(client.get("/users/me", headers=auth(user_token)), 401)
    with services.db.transaction() as session:
        actions = session.scalars(
            select(AuditEntry.action).where(AuditEntry.subject_id == user["id"])
        ).all()
    assert sorted(actions) == ["user.delete", "user.update"]


def test_user_cannot_make_themself_admin(client: TestClient, services: Services) -> None:
    user, token = _signed_up(client)
    before = _snapshot(services)
    response = client.patch(
        f"/users/{user['id']}", json={"role": "admin", "name": "Root"}, headers=auth(token)
    )
    assert _error(response, 403)["code"] == "forbidden"
    assert _snapshot(services) == before
    assert client.get("/users/me", headers=auth(token)).json()["data"]["role"] == "user"


# -- profile edits reach Stripe --------------------------------------------------------


def test_name_and_email_change_reaches_stripe_through_one_job(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
) -> None:
    user, token = _signed_up(client, name="Old Name")
    new_email = unique_email("renamed")
    change = {"name": "New Name", "email": new_email, "currentPassword": PASSWORD}

    response = client.patch(f"/users/{user['id']}", json=change, headers=auth(token))
    assert response.status_code == 200
    assert response.json()["data"]["name"] == "New Name"
    assert response.json()["data"]["email"] == new_email
    assert len(_jobs(services, PUSH_JOB)) == 1
    remote = stripe_api.v1.customers.retrieve(user["stripeCustomerId"])
    assert remote.name == "Old Name"  # Stripe's side is the job's work

    worker.run_until_idle()
    remote = stripe_api.v1.customers.retrieve(user["stripeCustomerId"])
    assert remote.name == "New Name"
    assert remote.email == new_email

    # The e-mail change revoked the old token: sign in again to repeat the same edit.
    assert _error(client.get("/users/me", headers=auth(token)), 401)["code"] == "token_revoked"
    fresh = client.post("/auth/login", json={"email": new_email, "password": PASSWORD})
    again = client.patch(
        f"/users/{user['id']}", json=change, headers=auth(fresh.json()["data"]["access_token"])
    )
    assert again.status_code == 200
    pushes = _jobs(services, PUSH_JOB)
    assert len(pushes) == 1
    assert pushes[0].status == JobStatus.DONE

    old_login = {"email": user["email"], "password": PASSWORD}
    assert _error(client.post("/auth/login", json=old_login), 401)
    new_login = client.post("/auth/login", json={"email": new_email, "password": PASSWORD})
    assert new_login.status_code == 200


def test_email_change_to_another_users_email_is_409_in_any_case(
    client: TestClient, services: Services
) -> None:
    taken = unique_email("taken")
    _signed_up(client, email=taken)
    user, token = _signed_up(client)
    before = _snapshot(services)

    for spelling in (taken, taken.upper(), taken.swapcase(), f"  {taken.title()} "):
        response = client.patch(
            f"/users/{user['id']}",
            json={"name": "Changed Too", "email": spelling, "currentPassword": PASSWORD},
            headers=auth(token),
        )
        assert _error(response, 409)["code"] == "email_taken", spelling
        assert _snapshot(services) == before, spelling


# -- deletion --------------------------------------------------------------------------


def test_deleted_user_can_no_longer_log_in_or_use_their_token(
    client: TestClient, services: Services
) -> None:
    user, token = _signed_up(client)
    assert client.delete(f"/users/{user['id']}", headers=auth(token)).status_code == 200

    login = client.post("/auth/login", json={"email": user["email"], "password": PASSWORD})
    assert _error(login, 401)["code"] == "invalid_credentials"
    assert _error(client.get("/users/me", headers=auth(token)), 401)["code"] == "invalid_token"
    with services.db.transaction() as session:
        row = session.get(User, user["id"])
        assert row is not None
        assert row.password_hash is None
        assert user["email"].lower() not in (row.email.lower(), row.email_normalized)
        assert row.name == ""

    again = register(client, email=user["email"].upper())
    assert again["user"]["id"] != user["id"]


def test_deletion_deletes_the_stripe_customer_through_the_worker(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
) -> None:
    user, token = _signed_up(client)
    stripe_id = user["stripeCustomerId"]
    assert stripe_id
    assert client.delete(f"/users/{user['id']}", headers=auth(token)).status_code == 200
    assert not _stripe_customer_gone(stripe_api, stripe_id)

    worker.run_until_idle()

    assert _stripe_customer_gone(stripe_api, stripe_id)
    [job] = _jobs(services, REMOVE_JOB)
    assert job.status == JobStatus.DONE


@pytest.mark.parametrize("settings_overrides", [{"stripe_customer_deletion": "archive"}])
def test_archive_setting_keeps_the_stripe_customer_marked_archived(
    client: TestClient,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    settings_overrides: dict[str, Any],
) -> None:
    user, token = _signed_up(client)
    assert client.delete(f"/users/{user['id']}", headers=auth(token)).status_code == 200
    worker.run_until_idle()

    remote = stripe_api.v1.customers.retrieve(user["stripeCustomerId"])
    assert not remote.to_dict().get("deleted", False)
    assert remote.metadata is not None
    metadata = remote.metadata.to_dict()
    assert metadata["archived"] == "true"
    assert metadata["customer_id"] == user["customerId"]


# -- privacy export --------------------------------------------------------------------


def test_export_answers_user_customer_and_audit_trail_without_password_hash(
    client: TestClient, services: Services
) -> None:
    user, token = _signed_up(client, name="Exported", companyName="Acme")
    admin = admin_token(client, services)
    edit = client.patch(f"/users/{user['id']}", json={"companyName": "Acme 2"}, headers=auth(admin))
    assert edit.status_code == 200

    response = client.get(f"/users/{user['id']}/export", headers=auth(token))
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["user"]["id"] == user["id"]
    assert data["user"]["email"] == user["email"]
    assert data["user"]["companyName"] == "Acme 2"
    assert data["customer"]["id"] == user["customerId"]
    assert data["customer"]["stripeCustomerId"] == user["stripeCustomerId"]
    assert [(a["action"], a["details"]) for a in data["auditLog"]] == [
        ("user.update", {"fields": ["company_name"]})
    ]

    with services.db.transaction() as session:
        row = session.get(User, user["id"])
        assert row is not None
        assert row.password_hash
        password_hash = row.password_hash
    assert password_hash not in response.text
    assert "$argon2" not in response.text
    assert "passwordHash" not in response.text
    assert "password_hash" not in response.text

    admin_view = client.get(f"/users/{user['id']}/export", headers=auth(admin))
    assert admin_view.status_code == 200
    assert admin_view.json()["data"]["customer"] == data["customer"]


# -- authentication --------------------------------------------------------------------


def test_request_without_token_is_401_unauthorized(client: TestClient) -> None:
    assert _error(client.get("/users/me"), 401)["code"] == "unauthorized"
    basic = client.get("/users/me", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert _error(basic, 401)["code"] == "unauthorized"


def test_garbage_or_forged_token_is_401_invalid_token(client: TestClient) -> None:
    user, _ = _signed_up(client)
    now = datetime.now(UTC)
    forged = jwt.encode(
        {"sub": user["id"], "iss": "billfold", "iat": now, "exp": now + timedelta(hours=1)},
        "another-secret-" + "y" * 32,
        algorithm="HS256",
    )
    for token in ("garbage", "a.b.c", forged):
        response = client.get("/users/me", headers=auth(token))
        assert _error(response, 401)["code"] == "invalid_token", token


def test_expired_token_is_401_token_expired(client: TestClient, settings: Settings) -> None:
    user, _ = _signed_up(client)
    issued = datetime.now(UTC) - timedelta(hours=2)
    expired = jwt.encode(
        {
            "sub": user["id"],
            "role": "user",
            "iss": "billfold",
            "iat": issued,
            "exp": issued + timedelta(hours=1),
        },
        _jwt_secret(settings),
        algorithm="HS256",
    )
    assert _error(client.get("/users/me", headers=auth(expired)), 401)["code"] == "token_expired"
    # The same claims, still valid, are accepted: the expiry alone made the difference.
    fresh = jwt.encode(
        {
            "sub": user["id"],
            "role": "user",
            "iss": "billfold",
            "iat": datetime.now(UTC),
            "exp": datetime.now(UTC) + timedelta(hours=1),
        },
        _jwt_secret(settings),
        algorithm="HS256",
    )
    assert client.get("/users/me", headers=auth(fresh)).status_code == 200


def test_wrong_password_and_unknown_email_answer_the_same_401(client: TestClient) -> None:
    user, _ = _signed_up(client)
    wrong = client.post("/auth/login", json={"email": user["email"], "password": "not-it-123"})
    unknown = client.post(
        "/auth/login", json={"email": unique_email("nobody"), "password": "not-it-123"}
    )
    wrong_error, unknown_error = _error(wrong, 401), _error(unknown, 401)
    assert wrong_error["code"] == "invalid_credentials"
    assert unknown_error == wrong_error
    assert "access_token" not in wrong.text


# -- service API keys ------------------------------------------------------------------


def _new_api_key(client: TestClient, admin: str, name: str = "backend") -> dict[str, Any]:
    response = client.post("/api-keys", json={"name": name}, headers=auth(admin))
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def test_admin_creates_api_key_shown_only_once(client: TestClient, services: Services) -> None:
    admin = admin_token(client, services)
    created = _new_api_key(client, admin, "host backend")
    key = created["key"]
    assert key.startswith("bf_sk_")
    assert len(key) > 30
    assert created["name"] == "host backend"
    assert key.startswith(created["prefix"])

    listed = client.get("/api-keys", headers=auth(admin))
    assert listed.status_code == 200
    [entry] = listed.json()["data"]
    assert entry["id"] == created["id"]
    assert "key" not in entry
    assert key not in listed.text
    assert key[len(created["prefix"]) :] not in listed.text
    assert hashlib.sha256(key.encode()).hexdigest() not in listed.text
    with services.db.transaction() as session:
        stored_hash = session.scalar(select(ApiKey.secret_hash))
    assert stored_hash
    assert stored_hash not in listed.text


def test_normal_user_cannot_create_or_list_api_keys(client: TestClient, services: Services) -> None:
    _, token = _signed_up(client)
    create = client.post("/api-keys", json={"name": "mine"}, headers=auth(token))
    assert _error(create, 403)["code"] == "admin_only"
    assert _error(client.get("/api-keys", headers=auth(token)), 403)["code"] == "admin_only"
    with services.db.transaction() as session:
        assert session.scalar(select(func.count()).select_from(ApiKey)) == 0


def test_api_key_looks_up_any_customer(client: TestClient, services: Services) -> None:
    user, _ = _signed_up(client, name="Looked Up")
    _signed_up(client, name="Someone Else")
    key = _new_api_key(client, admin_token(client, services))["key"]

    lookups = {
        "email": user["email"].upper(),
        "stripeCustomerId": user["stripeCustomerId"],
        "customerId": user["customerId"],
    }
    for param, value in lookups.items():
        response = client.get("/customers", params={param: value}, headers=auth(key))
        assert response.status_code == 200, (param, response.text)
        [found] = response.json()["data"]
        assert found["id"] == user["customerId"], param
        assert found["userId"] == user["id"]
        assert found["email"] == user["email"]
        assert found["stripeCustomerId"] == user["stripeCustomerId"]

    one = client.get(f"/customers/{user['customerId']}", headers=auth(key))
    assert one.status_code == 200
    assert one.json()["data"]["userId"] == user["id"]

    as_user = client.get(f"/users/{user['id']}", headers=auth(key))
    assert as_user.status_code == 200
    assert as_user.json()["data"]["name"] == "Looked Up"

    nobody = client.get("/customers", params={"email": unique_email()}, headers=auth(key))
    assert nobody.json()["data"] == []
    missing = client.get("/customers/cust_" + "0" * 32, headers=auth(key))
    assert _error(missing, 404)["code"] == "not_found"


def test_normal_user_cannot_look_up_customers(client: TestClient) -> None:
    other, _ = _signed_up(client)
    _, token = _signed_up(client)
    by_email = client.get("/customers", params={"email": other["email"]}, headers=auth(token))
    assert _error(by_email, 403)["code"] == "admin_only"
    assert other["customerId"] not in by_email.text
    by_id = client.get(f"/customers/{other['customerId']}", headers=auth(token))
    assert _error(by_id, 403)["code"] == "admin_only"


def test_api_key_use_is_recorded_at_most_once_a_minute(
    client: TestClient, services: Services
) -> None:
    user, _ = _signed_up(client)
    admin = admin_token(client, services)
    created = _new_api_key(client, admin)

    def last_used() -> str | None:
        [entry] = client.get("/api-keys", headers=auth(admin)).json()["data"]
        used: str | None = entry["lastUsedAt"]
        return used

    assert last_used() is None
    assert client.get(f"/users/{user['id']}", headers=auth(created["key"])).status_code == 200
    first = last_used()
    assert first is not None
    assert client.get(f"/users/{user['id']}", headers=auth(created["key"])).status_code == 200
    assert last_used() == first  # within the minute: no write per request

    with services.db.transaction() as session:
        session.execute(
            update(ApiKey).values(last_used_at=datetime.now(UTC) - timedelta(minutes=5))
        )
    assert client.get(f"/users/{user['id']}", headers=auth(created["key"])).status_code == 200
    assert (last_used() or "") > first


def test_revoked_api_key_is_401_invalid_api_key(client: TestClient, services: Services) -> None:
    user, _ = _signed_up(client)
    admin = admin_token(client, services)
    created = _new_api_key(client, admin)
    assert client.get(f"/users/{user['id']}", headers=auth(created["key"])).status_code == 200

    revoked = client.delete(f"/api-keys/{created['id']}", headers=auth(admin))
    assert revoked.status_code == 200
    assert revoked.json()["data"]["revokedAt"] is not None

    response = client.get(f"/users/{user['id']}", headers=auth(created["key"]))
    assert _error(response, 401)["code"] == "invalid_api_key"
    lookup = client.get("/customers", params={"email": user["email"]}, headers=auth(created["key"]))
    assert _error(lookup, 401)["code"] == "invalid_api_key"
    again = client.delete(f"/api-keys/{created['id']}", headers=auth(admin))
    assert _error(again, 404)["code"] == "not_found"


def test_api_key_plaintext_is_not_stored(client: TestClient, services: Services) -> None:
    key = _new_api_key(client, admin_token(client, services))["key"]
    secret_part = key[len("bf_sk_") + 4 :]
    with services.db.transaction() as session:
        rows = [
            *session.execute(select(ApiKey.__table__)).all(),
            *session.execute(select(AuditEntry.__table__)).all(),
        ]
    stored = " ".join(str(value) for row in rows for value in row)
    assert len(rows) >= 2
    assert key not in stored
    assert secret_part not in stored


# -- ugly input ------------------------------------------------------------------------


UGLY_PATCHES: list[tuple[dict[str, Any], str]] = [
    ({"name": 123}, "name"),
    ({"name": ["Ada"]}, "name"),
    ({"name": {"first": "Ada"}}, "name"),
    ({"email": 42}, "email"),
    ({"companyName": True}, "companyName"),
    ({"nickname": "ada"}, "nickname"),
    ({"name": "Ada", "isAdmin": True}, "isAdmin"),
    ({"name": "N" * 10_000}, "name"),
    ({"companyName": "C" * 10_000}, "companyName"),
    ({"name": ""}, "name"),
    ({"name": "   "}, "name"),
    ({"email": "not-an-email"}, "email"),
    ({"email": "ada@"}, "email"),
    ({"email": "ada lovelace@example.com"}, "email"),
    ({"email": "x" * 10_000 + "@example.com"}, "email"),
    ({"role": "superuser"}, "role"),
    ({"password": "short"}, "password"),
]


def test_ugly_profile_edits_are_422_and_change_nothing(
    client: TestClient, services: Services
) -> None:
    user, token = _signed_up(client)
    before = _snapshot(services)

    for body, bad_field in UGLY_PATCHES:
        response = client.patch(f"/users/{user['id']}", json=body, headers=auth(token))
        error = _error(response, 422)
        assert error["code"] == "validation_error", body
        assert any(bad_field in p["field"] for p in error["details"]["problems"]), error
        assert "N" * 100 not in response.text
        assert "C" * 100 not in response.text
        assert "x" * 100 not in response.text
        assert _snapshot(services) == before, body


def test_profile_edit_that_is_not_a_json_object_is_422(
    client: TestClient, services: Services
) -> None:
    user, token = _signed_up(client)
    before = _snapshot(services)
    for raw in (b"[]", b'"name"', b"null", b"{not json", b""):
        response = client.patch(
            f"/users/{user['id']}",
            content=raw,
            headers={**auth(token), "Content-Type": "application/json"},
        )
        assert _error(response, 422)["code"] == "validation_error", raw
    assert _snapshot(services) == before


# -- Stripe down -----------------------------------------------------------------------


@pytest.mark.parametrize("settings_overrides", [{"stripe_inline_timeout_seconds": 0.1}])
def test_registration_succeeds_while_stripe_is_down_and_links_once_it_is_back(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_link: FaultyLink,
    stripe_api: stripe.StripeClient,
    settings_overrides: dict[str, Any],
) -> None:
    stripe_link.down()
    data = register(client, name="Offline Ada")
    user = data["user"]
    assert user["stripeCustomerId"] is None
    me = client.get("/users/me", headers=auth(data["access_token"]))
    assert me.status_code == 200
    assert me.json()["data"]["id"] == user["id"]
    [link] = _jobs(services, LINK_JOB)
    assert link.status == JobStatus.PENDING

    stripe_link.up()

    def linked() -> bool:  # the link job is held back for twice the inline timeout
        worker.run_until_idle()
        with services.db.transaction() as session:
            customer = session.get(Customer, user["customerId"])
            return customer is not None and customer.stripe_customer_id is not None

    assert wait_until(linked, 20)
    with services.db.transaction() as session:
        customer = session.get(Customer, user["customerId"])
        assert customer is not None
        assert customer.stripe_customer_id is not None
        stripe_id = customer.stripe_customer_id
    remote = stripe_api.v1.customers.retrieve(stripe_id)
    assert remote.name == "Offline Ada"
    assert remote.metadata is not None
    assert remote.metadata.to_dict()["customer_id"] == user["customerId"]


def test_profile_edit_and_deletion_succeed_while_stripe_is_down(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_link: FaultyLink,
    stripe_api: stripe.StripeClient,
) -> None:
    user, token = _signed_up(client, name="Before Outage")
    stripe_id = user["stripeCustomerId"]
    assert stripe_id
    stripe_link.down()

    patched = client.patch(
        f"/users/{user['id']}", json={"name": "During Outage"}, headers=auth(token)
    )
    assert patched.status_code == 200
    assert patched.json()["data"]["name"] == "During Outage"
    me = client.get("/users/me", headers=auth(token))
    assert me.status_code == 200
    assert me.json()["data"]["name"] == "During Outage"
    assert client.delete(f"/users/{user['id']}", headers=auth(token)).status_code == 200
    assert [j.status for j in _jobs(services, REMOVE_JOB)] == [JobStatus.PENDING]

    stripe_link.up()
    worker.run_until_idle()
    assert _stripe_customer_gone(stripe_api, stripe_id)
    assert [j.status for j in _jobs(services, REMOVE_JOB)] == [JobStatus.DONE]
