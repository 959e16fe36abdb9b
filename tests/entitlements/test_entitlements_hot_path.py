"""`POST /entitlements/check` and `GET /entitlements/{customerId}` have two ways in: the ASGI
hot path in front of FastAPI (entitlements/hot_path.py) and the FastAPI routes, which take a
call with a query string or an `Idempotency-Key` header. Whichever answers, a caller must not
be able to tell: the same statuses, error codes, problems and answers, case by case.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import httpx
import pytest
from factories import signed_up
from fastapi.testclient import TestClient
from starlette.types import Message, Receive, Scope, Send
from support.entitlements import service_key, trial_member

from billfold.entitlements.hot_path import CHECK_PATH, EntitlementsHotPath


@pytest.fixture
def member(client: TestClient, admin: dict[str, str]) -> dict[str, Any]:
    return trial_member(client, admin)


@pytest.fixture
def service(client: TestClient, admin: dict[str, str]) -> dict[str, str]:
    return service_key(client, admin)


JSON = {"Content-Type": "application/json"}
_header_keys = itertools.count()


def post(
    client: TestClient, headers: dict[str, str], content: bytes, *, via_fastapi: bool
) -> httpx.Response:
    if via_fastapi:  # the header sends the call through the FastAPI route
        headers = {**headers, "Idempotency-Key": f"check-{next(_header_keys)}"}
    response: httpx.Response = client.post(CHECK_PATH, content=content, headers={**JSON, **headers})
    return response


def listing(
    client: TestClient, headers: dict[str, str], customer_id: str, *, via_fastapi: bool
) -> httpx.Response:
    # A query string sends the call through the FastAPI route (which ignores it).
    query = "?via=fastapi" if via_fastapi else ""
    response: httpx.Response = client.get(f"/entitlements/{customer_id}{query}", headers=headers)
    return response


def comparable(response: httpx.Response) -> dict[str, Any]:
    """What a caller can see, less the clock."""
    body = response.json()
    body.pop("timestamp")
    return {
        "status": response.status_code,
        "content-type": response.headers["content-type"],
        "body": body,
    }


def check_cases(customer_id: str, someone_else: str) -> list[tuple[str, bytes]]:
    cid = customer_id.encode()
    return [
        ("a flag", b'{"customerId": "%s", "feature": "export"}' % cid),
        ("a flag not granted", b'{"customerId": "%s", "feature": "api"}' % cid),
        ("a limit", b'{"customerId": "%s", "feature": "seats", "amount": 1}' % cid),
        ("past a limit", b'{"customerId": "%s", "feature": "seats", "amount": 2}' % cid),
        ("credits", b'{"customerId": "%s", "feature": "credits", "amount": 25}' % cid),
        ("too many credits", b'{"customerId": "%s", "feature": "credits", "amount": 31}' % cid),
        ("an unknown feature", b'{"customerId": "%s", "feature": "nope"}' % cid),
        ("someone else", b'{"customerId": "%s", "feature": "export"}' % someone_else.encode()),
        ("no such customer", b'{"customerId": "cust_nobody", "feature": "export"}'),
        ("a negative amount", b'{"customerId": "%s", "feature": "x", "amount": -1}' % cid),
        ("a string amount", b'{"customerId": "%s", "feature": "x", "amount": "1"}' % cid),
        ("a float amount", b'{"customerId": "%s", "feature": "x", "amount": 1.0}' % cid),
        ("no feature", b'{"customerId": "%s"}' % cid),
        ("an unknown field", b'{"customerId": "%s", "feature": "x", "extra": 1}' % cid),
        ("a long customer ID", b'{"customerId": "%s", "feature": "x"}' % (b"c" * 41)),
        ("a list", b'[{"customerId": "%s", "feature": "x"}]' % cid),
        ("cut-off JSON", b'{"customerId": '),
        ("an empty body", b""),
        ("not UTF-8", b'{"customerId": "\xff\xfe", "feature": "x"}'),
        ("a 30,000-deep body", b"[" * 30_000 + b"]" * 30_000),
    ]


def test_both_ways_in_answer_every_check_alike(
    client: TestClient, member: dict[str, Any], service: dict[str, str]
) -> None:
    other = signed_up(client)
    for label, content in check_cases(member["customerId"], other["customerId"]):
        for headers in (member["headers"], service, {}, {"Authorization": "Bearer bf_nope"}):
            fast = post(client, headers, content, via_fastapi=False)
            slow = post(client, headers, content, via_fastapi=True)
            assert comparable(fast) == comparable(slow), label
            assert fast.status_code < 500, (label, fast.text)
    mine = post(
        client, member["headers"], check_cases(member["customerId"], "")[0][1], via_fastapi=False
    )
    assert (mine.status_code, mine.json()["data"]["allowed"]) == (200, True)


def test_both_ways_in_answer_every_listing_alike(
    client: TestClient, member: dict[str, Any], service: dict[str, str]
) -> None:
    other = signed_up(client)
    for customer_id in (member["customerId"], other["customerId"], "cust_nobody", "c%20d"):
        for headers in (member["headers"], service, {}, {"Authorization": "Basic dXNlcjpwdw=="}):
            fast = listing(client, headers, customer_id, via_fastapi=False)
            slow = listing(client, headers, customer_id, via_fastapi=True)
            assert comparable(fast) == comparable(slow), (customer_id, headers)
            assert fast.status_code < 500, fast.text
    theirs = listing(client, member["headers"], other["customerId"], via_fastapi=False)
    assert (theirs.status_code, theirs.json()["error"]["code"]) == (404, "not_found")


def test_the_hot_path_answers_checks_and_listings_itself(
    client: TestClient, member: dict[str, Any]
) -> None:
    async def fallen_through(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError("the hot path should have taken this call")

    hot_path = EntitlementsHotPath(fallen_through, client.app.state.entitlement_reader)  # type: ignore[attr-defined]
    authorization = member["headers"]["Authorization"].encode()
    check = b'{"customerId": "%s", "feature": "export"}' % member["customerId"].encode()

    def call(method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> Any:
        messages: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]
        sent: list[Message] = []

        async def receive() -> Message:
            return messages.pop(0)

        async def send(message: Message) -> None:
            sent.append(message)

        scope: Scope = {
            "type": "http",
            "method": method,
            "path": path,
            "query_string": b"",
            "headers": [(b"authorization", authorization), *headers],
        }
        asyncio.run(hot_path(scope, receive, send))
        return sent[0]["status"], sent[1]["body"]

    checked = call("POST", CHECK_PATH, [(b"content-type", b"application/json")], check)
    listed = call("GET", f"/entitlements/{member['customerId']}", [], b"")

    assert checked[0] == listed[0] == 200
    assert b'"allowed":true' in checked[1]
    assert b'"entitlements":[' in listed[1]


def test_the_routes_stay_documented(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]

    check = paths["/entitlements/check"]["post"]
    assert check["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("CheckIn")
    assert "CheckOut" in str(check["responses"]["200"])
    assert "EntitlementsOut" in str(paths["/entitlements/{customer_id}"]["get"]["responses"]["200"])
