"""Credentials: changing them needs the current password, revokes every earlier token (on the
consume hot path too) and is audited; passwords are hashed with OWASP's Argon2id costs."""

from __future__ import annotations

import threading
from contextlib import ExitStack
from typing import Any

import pytest
from argon2 import PasswordHasher
from factories import admin_token, auth, register, unique_email
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from billfold.auth import service as auth_service
from billfold.auth.models import User
from billfold.kit.audit import AuditEntry
from billfold.services import Services

PASSWORD = "correct horse 1"
NEW_PASSWORD = "battery staple 2"


def _signed_up(client: TestClient) -> tuple[dict[str, Any], str]:
    data = register(client, password=PASSWORD)
    return data["user"], data["access_token"]


def _error_code(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    code: str = response.json()["error"]["code"]
    return code


def _login(client: TestClient, email: str, password: str) -> Any:
    return client.post("/auth/login", json={"email": email, "password": password})


def _user_row(services: Services, user_id: str) -> User:
    with services.db.transaction() as session:
        user = session.get(User, user_id)
        assert user is not None
        return user


def _audit(services: Services, user_id: str) -> list[tuple[str, str]]:
    with services.db.transaction() as session:
        rows = session.scalars(
            select(AuditEntry)
            .where(AuditEntry.subject_id == user_id)
            .order_by(AuditEntry.created_at)
        )
        return [(a.action, a.actor) for a in rows]


# -- the current password ----------------------------------------------------------------


@pytest.mark.parametrize(
    "change", [{"password": NEW_PASSWORD}, {"email": "new-address@example.com"}]
)
def test_own_credential_change_without_current_password_is_403_and_changes_nothing(
    client: TestClient, services: Services, change: dict[str, str]
) -> None:
    user, token = _signed_up(client)
    before = _user_row(services, user["id"])

    response = client.patch(f"/users/{user['id']}", json=change, headers=auth(token))

    assert _error_code(response, 403) == "current_password_required"
    after = _user_row(services, user["id"])
    assert (after.email, after.password_hash) == (before.email, before.password_hash)
    assert client.get("/users/me", headers=auth(token)).status_code == 200


@pytest.mark.parametrize(
    "change", [{"password": NEW_PASSWORD}, {"email": "new-address@example.com"}]
)
def test_own_credential_change_with_wrong_current_password_is_403(
    client: TestClient, services: Services, change: dict[str, str]
) -> None:
    user, token = _signed_up(client)
    before = _user_row(services, user["id"])

    response = client.patch(
        f"/users/{user['id']}",
        json={**change, "currentPassword": "not my password"},
        headers=auth(token),
    )

    assert _error_code(response, 403) == "wrong_password"
    after = _user_row(services, user["id"])
    assert (after.email, after.password_hash) == (before.email, before.password_hash)


def test_name_change_needs_no_current_password(client: TestClient) -> None:
    user, token = _signed_up(client)
    response = client.patch(f"/users/{user['id']}", json={"name": "Ada"}, headers=auth(token))
    assert response.status_code == 200, response.text


# -- earlier tokens stop working ---------------------------------------------------------


def test_password_change_revokes_every_earlier_token(client: TestClient) -> None:
    user, first = _signed_up(client)
    second = _login(client, user["email"], PASSWORD).json()["data"]["access_token"]

    changed = client.patch(
        f"/users/{user['id']}",
        json={"password": NEW_PASSWORD, "currentPassword": PASSWORD},
        headers=auth(first),
    )
    assert changed.status_code == 200, changed.text

    for stale in (first, second):
        assert _error_code(client.get("/users/me", headers=auth(stale)), 401) == "token_revoked"
    assert _error_code(_login(client, user["email"], PASSWORD), 401) == "invalid_credentials"
    fresh = _login(client, user["email"], NEW_PASSWORD)
    assert fresh.status_code == 200
    fresh_token = fresh.json()["data"]["access_token"]
    assert client.get("/users/me", headers=auth(fresh_token)).status_code == 200


def test_email_change_revokes_every_earlier_token(client: TestClient) -> None:
    user, token = _signed_up(client)
    new_email = unique_email("moved")

    changed = client.patch(
        f"/users/{user['id']}",
        json={"email": new_email, "currentPassword": PASSWORD},
        headers=auth(token),
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["data"]["email"] == new_email

    assert _error_code(client.get("/users/me", headers=auth(token)), 401) == "token_revoked"
    fresh = _login(client, new_email, PASSWORD).json()["data"]["access_token"]
    assert client.get("/users/me", headers=auth(fresh)).status_code == 200


def test_revoked_token_is_refused_on_the_consume_hot_path(client: TestClient) -> None:
    user, token = _signed_up(client)
    body = {"amount": 5, "idempotencyKey": "k-1", "reason": "render"}
    # Valid: the debit is refused for want of credits, not for the token.
    assert _error_code(client.post("/credits/consume", json=body, headers=auth(token)), 402)

    client.patch(
        f"/users/{user['id']}",
        json={"password": NEW_PASSWORD, "currentPassword": PASSWORD},
        headers=auth(token),
    ).raise_for_status()

    refused = client.post("/credits/consume", json=body, headers=auth(token))
    assert _error_code(refused, 401) == "token_revoked"
    fresh = _login(client, user["email"], NEW_PASSWORD).json()["data"]["access_token"]
    assert _error_code(client.post("/credits/consume", json=body, headers=auth(fresh)), 402)


# -- admins and service keys -------------------------------------------------------------


def test_admin_sets_another_users_password_without_theirs_and_it_is_audited(
    client: TestClient, services: Services
) -> None:
    user, token = _signed_up(client)
    admin = admin_token(client, services)

    response = client.patch(
        f"/users/{user['id']}", json={"password": NEW_PASSWORD}, headers=auth(admin)
    )

    assert response.status_code == 200, response.text
    assert _error_code(client.get("/users/me", headers=auth(token)), 401) == "token_revoked"
    assert _login(client, user["email"], NEW_PASSWORD).status_code == 200
    actions = _audit(services, user["id"])
    assert ("user.password_change", actions[0][1]) in actions
    assert actions[0][1].startswith("usr_")
    assert actions[0][1] != user["id"]


def test_service_key_may_change_the_email_but_never_set_a_password(
    client: TestClient, services: Services
) -> None:
    user, token = _signed_up(client)
    admin = admin_token(client, services)
    key = client.post("/api-keys", json={"name": "backend"}, headers=auth(admin)).json()["data"]
    before = _user_row(services, user["id"])

    refused = client.patch(
        f"/users/{user['id']}", json={"password": NEW_PASSWORD}, headers=auth(key["key"])
    )
    assert _error_code(refused, 403) == "password_not_settable"
    assert _user_row(services, user["id"]).password_hash == before.password_hash

    new_email = unique_email("synced")
    moved = client.patch(
        f"/users/{user['id']}", json={"email": new_email}, headers=auth(key["key"])
    )
    assert moved.status_code == 200, moved.text
    assert _error_code(client.get("/users/me", headers=auth(token)), 401) == "token_revoked"
    assert ("user.email_change", key["id"]) in _audit(services, user["id"])


def test_own_credential_changes_are_audited_without_secrets(
    client: TestClient, services: Services
) -> None:
    user, token = _signed_up(client)
    client.patch(
        f"/users/{user['id']}",
        json={"password": NEW_PASSWORD, "currentPassword": PASSWORD},
        headers=auth(token),
    ).raise_for_status()

    actions = _audit(services, user["id"])
    assert ("user.password_change", user["id"]) in actions
    with services.db.transaction() as session:
        details = [a.details for a in session.scalars(select(AuditEntry))]
    assert NEW_PASSWORD not in repr(details)
    assert PASSWORD not in repr(details)


# -- password hashing ---------------------------------------------------------------------


def test_stored_password_hashes_use_owasp_argon2id_parameters(
    client: TestClient, services: Services
) -> None:
    user, _ = _signed_up(client)
    stored = _user_row(services, user["id"]).password_hash
    assert stored is not None
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")


def test_login_rehashes_a_hash_made_with_older_costs(
    client: TestClient, services: Services
) -> None:
    user, _ = _signed_up(client)
    old = PasswordHasher(time_cost=3, memory_cost=65536, parallelism=4).hash(PASSWORD)
    with services.db.transaction() as session:
        session.execute(update(User).where(User.id == user["id"]).values(password_hash=old))

    assert _login(client, user["email"], PASSWORD).status_code == 200

    stored = _user_row(services, user["id"]).password_hash
    assert stored is not None
    assert stored != old
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert ("user.password_rehash", user["id"]) in _audit(services, user["id"])
    assert _login(client, user["email"], PASSWORD).status_code == 200


def test_logins_beyond_the_hashing_slots_wait_then_answer_503_busy(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    user, _ = _signed_up(client)
    monkeypatch.setattr(auth_service, "HASH_WAIT_SECONDS", 0.2)
    with ExitStack() as held:
        for _ in range(auth_service.MAX_CONCURRENT_HASHES):
            held.enter_context(auth_service._hashing_slot())
        busy = _login(client, user["email"], PASSWORD)
        assert _error_code(busy, 503) == "busy"
        assert busy.headers["retry-after"] == "1"
    assert _login(client, user["email"], PASSWORD).status_code == 200


def test_hashing_slots_bound_concurrent_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    running = peak = 0
    lock = threading.Lock()

    class CountingHasher(PasswordHasher):
        def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
            nonlocal running, peak
            with lock:
                running += 1
                peak = max(peak, running)
            try:
                return super().hash(password, salt=salt)
            finally:
                with lock:
                    running -= 1

    monkeypatch.setattr(
        auth_service, "_hasher", CountingHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
    )
    threads = [
        threading.Thread(target=auth_service.hash_password, args=(f"pw-{i}",))
        for i in range(3 * auth_service.MAX_CONCURRENT_HASHES)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert 1 <= peak <= auth_service.MAX_CONCURRENT_HASHES
