"""A route on the request's unit of work is one transaction, caller lookup included."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from factories import auth, register
from fastapi.testclient import TestClient
from sqlalchemy import event, select

from billfold.auth.models import ApiKey
from billfold.services import Services


@contextmanager
def _transactions(services: Services) -> Iterator[list[str]]:
    begun: list[str] = []

    def on_begin(_conn: Any) -> None:
        begun.append("begin")

    event.listen(services.db.engine, "begin", on_begin)
    try:
        yield begun
    finally:
        event.remove(services.db.engine, "begin", on_begin)


def test_creating_an_api_key_is_one_transaction_with_the_caller_lookup(
    client: TestClient, services: Services, admin: dict[str, str]
) -> None:
    with _transactions(services) as begun:
        created = client.post("/api-keys", json={"name": "backend"}, headers=admin)

    assert created.status_code == 201, created.text
    assert len(begun) == 1
    with services.db.transaction() as session:
        assert session.scalar(select(ApiKey.name).where(ApiKey.id == created.json()["data"]["id"]))


def test_a_refused_revoke_rolls_the_whole_request_back(
    client: TestClient, services: Services, admin: dict[str, str]
) -> None:
    with _transactions(services) as begun:
        missing = client.delete("/api-keys/key_missing", headers=admin)

    assert missing.status_code == 404
    assert len(begun) == 1


def test_a_user_who_is_not_an_admin_is_refused_in_the_same_transaction(
    client: TestClient, services: Services
) -> None:
    user = register(client)
    with _transactions(services) as begun:
        refused = client.get("/api-keys", headers=auth(user["access_token"]))

    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "admin_only"
    assert len(begun) == 1
