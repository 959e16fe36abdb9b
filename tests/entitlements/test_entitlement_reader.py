"""The entitlement reader: the questions that arrive together are answered from one read,
each as if asked alone (its caller's rights, its own errors), and never from anything kept
between reads: a debit, a plan change or a cancellation shows in the very next answer."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from factories import signed_up
from fastapi.testclient import TestClient
from sqlalchemy import event
from support.entitlements import service_key, trial_member

from billfold.auth.service import TokenIssuer
from billfold.config import secret
from billfold.entitlements.batching import EntitlementReader
from billfold.entitlements.service import Standing
from billfold.kit.errors import NotFound, Unauthorized
from billfold.services import Services


@pytest.fixture
def member(client: TestClient, admin: dict[str, str]) -> dict[str, Any]:
    return trial_member(client, admin)


@pytest.fixture
def service(client: TestClient, admin: dict[str, str]) -> dict[str, str]:
    return service_key(client, admin)


def _reader(services: Services) -> EntitlementReader:
    settings = services.settings
    return EntitlementReader(
        services,
        TokenIssuer(
            secret=secret(settings.jwt_secret),
            lifetime=timedelta(minutes=settings.jwt_expires_minutes),
        ),
    )


async def asked_together(
    reader: EntitlementReader, asks: list[tuple[str, str]]
) -> list[Standing | BaseException]:
    """Queue every question before the reader starts, so its first batch holds them all."""
    tasks = [asyncio.ensure_future(reader.standing(c, cid)) for c, cid in asks]
    await asyncio.sleep(0)  # one turn of the loop: each task runs up to its wait, queued
    reader.start()
    return await asyncio.gather(*tasks, return_exceptions=True)


def _credential(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


def test_questions_arriving_together_are_answered_from_one_read_each_as_if_alone(
    client: TestClient, services: Services, member: dict[str, Any], service: dict[str, str]
) -> None:
    other = signed_up(client)
    asks = [
        (_credential(service), member["customerId"]),  # a service key: anyone
        (_credential(member["headers"]), member["customerId"]),  # themself
        (_credential(other["headers"]), member["customerId"]),  # someone else's: 404
        (_credential(service), "cust_nobody"),  # no such customer: 404
        ("bf_not_a_key", member["customerId"]),  # a bad credential: 401
        (_credential(other["headers"]), other["customerId"]),  # themself, another customer
    ]
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    reader = _reader(services)
    event.listen(services.db.engine, "before_cursor_execute", seen)
    try:
        answers = asyncio.run(asked_together(reader, asks))
    finally:
        reader.stop()
        event.remove(services.db.engine, "before_cursor_execute", seen)

    reads = [s for s in statements if s.startswith("SELECT")]
    assert len([s for s in reads if "credit_accounts" in s]) == 1, reads  # every customer's
    assert len(reads) == 3, reads  # plan and balance in one query, beside the keys and users
    mine, themself, theirs, nobody, bad, own = answers
    assert isinstance(mine, Standing)
    assert (mine.plan, mine.status, mine.plan_active, mine.balance) == (
        "trial",
        "trialing",
        True,
        30,
    )
    assert themself == mine
    assert isinstance(theirs, NotFound)
    assert isinstance(nobody, NotFound)
    assert isinstance(bad, Unauthorized)
    assert isinstance(own, Standing)
    assert (own.customer_id, own.balance) == (other["customerId"], 0)


def test_a_debit_a_plan_change_and_a_cancellation_show_in_the_next_answer(
    client: TestClient, admin: dict[str, str], member: dict[str, Any], service: dict[str, str]
) -> None:
    cid = member["customerId"]

    def check(feature: str, amount: int = 1) -> dict[str, Any]:
        body = {"customerId": cid, "feature": feature, "amount": amount}
        answer = client.post("/entitlements/check", json=body, headers=service)
        assert answer.status_code == 200, answer.text
        data: dict[str, Any] = answer.json()["data"]
        return data

    assert (check("credits", 30)["allowed"], check("api")["allowed"]) == (True, False)
    spent = client.post(
        "/credits/consume",
        json={"customerId": cid, "amount": 1, "idempotencyKey": "one"},
        headers=service,
    )
    assert spent.status_code == 200, spent.text
    assert (check("credits", 30)["allowed"], check("credits", 30)["balance"]) == (False, 29)

    features = {"flags": {"api": True, "export": True}, "limits": {"seats": 1}}
    changed = client.patch("/plans/trial", json={"features": features}, headers=admin)
    assert changed.status_code == 200, changed.text
    assert check("api")["allowed"] is True
    assert check("projects")["reason"] == "not_in_plan"

    ended = client.post(
        "/subscriptions/cancel", json={"atPeriodEnd": False}, headers=member["headers"]
    )
    assert ended.status_code == 200, ended.text
    assert (check("api")["allowed"], check("api")["reason"]) == (False, "subscription_inactive")
    listed = client.get(f"/entitlements/{cid}", headers=service).json()["data"]
    assert (listed["status"], listed["active"]) == ("canceled", False)


@pytest.mark.sqlite_only
# The rate limiter takes its leases in write transactions of its own: off, so that only the
# check's own read meets the lock.
@pytest.mark.parametrize("settings_overrides", [{"rate_limits_enabled": False}])
def test_on_sqlite_a_check_is_answered_while_a_writer_holds_the_write_lock(
    client: TestClient, services: Services, member: dict[str, Any]
) -> None:
    cid = member["customerId"]
    body = {"customerId": cid, "feature": "credits", "amount": 30}
    with services.db.engine.connect() as writer:
        held = writer.begin()  # BEGIN IMMEDIATE: SQLite's one write lock, held
        writer.exec_driver_sql("UPDATE plans SET name = name")
        try:
            answered = client.post("/entitlements/check", json=body, headers=member["headers"])
            listed = client.get(f"/entitlements/{cid}", headers=member["headers"])
        finally:
            held.rollback()

    assert answered.status_code == 200, answered.text
    assert (answered.json()["data"]["allowed"], answered.json()["data"]["balance"]) == (True, 30)
    assert listed.status_code == 200, listed.text
