"""POST /entitlements/check and GET /entitlements/{customerId}: from the current plan and the
credits balance; for service keys (anyone) and the user themself."""

from __future__ import annotations

from typing import Any

import pytest
from factories import signed_up
from fastapi.testclient import TestClient
from support.entitlements import service_key, trial_member


@pytest.fixture
def member(client: TestClient, admin: dict[str, str]) -> dict[str, Any]:
    return trial_member(client, admin)


@pytest.fixture
def service(client: TestClient, admin: dict[str, str]) -> dict[str, str]:
    return service_key(client, admin)


def _check(client: TestClient, headers: dict[str, str], **body: Any) -> Any:
    return client.post("/entitlements/check", json=body, headers=headers)


def test_service_key_checks_flags_limits_and_credits_of_any_customer(
    client: TestClient, member: dict[str, Any], service: dict[str, str]
) -> None:
    cid = member["customerId"]
    export = _check(client, service, customerId=cid, feature="export").json()["data"]
    assert (export["allowed"], export["kind"], export["plan"], export["status"]) == (
        True,
        "flag",
        "trial",
        "trialing",
    )
    api = _check(client, service, customerId=cid, feature="api").json()["data"]
    assert (api["allowed"], api["reason"]) == (False, "not_in_plan")
    seats = _check(client, service, customerId=cid, feature="seats", amount=2).json()["data"]
    assert (seats["allowed"], seats["reason"], seats["limit"]) == (False, "limit_reached", 1)
    credits = _check(client, service, customerId=cid, feature="credits", amount=25).json()["data"]
    assert (credits["allowed"], credits["balance"], credits["remaining"]) == (True, 30, 5)
    short = _check(client, service, customerId=cid, feature="credits", amount=31).json()["data"]
    assert (short["allowed"], short["reason"]) == (False, "insufficient_credits")


def test_listing_gives_every_entitlement_with_what_remains(
    client: TestClient, member: dict[str, Any], service: dict[str, str]
) -> None:
    listed = client.get(f"/entitlements/{member['customerId']}", headers=service)
    assert listed.status_code == 200, listed.text
    data = listed.json()["data"]
    assert (data["plan"], data["status"], data["active"]) == ("trial", "trialing", True)
    assert {e["feature"]: (e["allowed"], e["remaining"]) for e in data["entitlements"]} == {
        "api": (False, None),
        "export": (True, None),
        "projects": (True, 1),
        "seats": (True, 1),
        "credits": (True, 30),
    }


def test_a_user_may_check_themself_but_not_anyone_else(
    client: TestClient, member: dict[str, Any]
) -> None:
    mine = _check(client, member["headers"], customerId=member["customerId"], feature="export")
    assert mine.json()["data"]["allowed"] is True
    other = signed_up(client)
    theirs = _check(client, other["headers"], customerId=member["customerId"], feature="export")
    assert theirs.status_code == 404
    listing = client.get(f"/entitlements/{member['customerId']}", headers=other["headers"])
    assert listing.status_code == 404


def test_a_canceled_plan_grants_nothing_but_credits(
    client: TestClient, member: dict[str, Any], service: dict[str, str]
) -> None:
    ended = client.post(
        "/subscriptions/cancel", json={"atPeriodEnd": False}, headers=member["headers"]
    )
    assert ended.status_code == 200, ended.text
    export = _check(client, service, customerId=member["customerId"], feature="export")
    assert (export.json()["data"]["allowed"], export.json()["data"]["reason"]) == (
        False,
        "subscription_inactive",
    )
    credits = _check(client, service, customerId=member["customerId"], feature="credits")
    assert credits.json()["data"]["allowed"] is True


def test_bad_checks_are_refused_with_a_code(
    client: TestClient, member: dict[str, Any], service: dict[str, str]
) -> None:
    negative = _check(client, service, customerId=member["customerId"], feature="x", amount=-1)
    assert negative.status_code == 422
    assert negative.json()["error"]["code"] == "validation_error"
    unknown = _check(client, service, customerId="cust_nobody", feature="export")
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "not_found")
    anonymous = client.post("/entitlements/check", json={"customerId": "c", "feature": "x"})
    assert anonymous.status_code == 401
