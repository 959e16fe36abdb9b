"""`POST /credits/consume` has two ways in: the ASGI hot path in front of FastAPI
(credits/hot_path.py) answers a JSON body without an `Idempotency-Key` header; the FastAPI
route answers the rest. Whichever answers, a caller must not be able to tell: the same
statuses, error codes, problems and debits, case by case.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import httpx
import pytest
from factories import signed_up
from fastapi.testclient import TestClient
from sqlalchemy import text
from starlette.types import Message, Receive, Scope, Send
from support.credits import balance, grant, ledger

from billfold.credits.hot_path import PATH, ConsumeHotPath
from billfold.services import Services

JSON = {"Content-Type": "application/json"}
_header_keys = itertools.count()


def post(
    client: TestClient, headers: dict[str, str], content: bytes, *, via_fastapi: bool
) -> httpx.Response:
    if via_fastapi:  # the header sends the call through the FastAPI route
        headers = {**headers, "Idempotency-Key": f"hot-path-{next(_header_keys)}"}
    response: httpx.Response = client.post(
        "/credits/consume", content=content, headers={**JSON, **headers}
    )
    return response


def comparable(response: httpx.Response) -> dict[str, Any]:
    """What a caller can see, less what differs by nature (IDs, clock)."""
    body = response.json()
    body.pop("timestamp")
    if "data" in body:
        body["data"].pop("transactionId")
    return {"status": response.status_code, "body": body}


CASES: list[tuple[str, bytes]] = [
    ("a debit", b'{"amount": 10, "idempotencyKey": "a", "reason": "render"}'),
    ("the same debit again", b'{"amount": 10, "idempotencyKey": "a", "reason": "render"}'),
    ("the same key, another amount", b'{"amount": 11, "idempotencyKey": "a"}'),
    ("more than the balance", b'{"amount": 1000, "idempotencyKey": "b"}'),
    ("a string amount", b'{"amount": "5", "idempotencyKey": "c"}'),
    ("a float amount", b'{"amount": 5.0, "idempotencyKey": "c"}'),
    ("a huge amount", b'{"amount": 100000000000000000000000, "idempotencyKey": "c"}'),
    ("a negative amount", b'{"amount": -5, "idempotencyKey": "c"}'),
    ("no key", b'{"amount": 5}'),
    ("an unknown field", b'{"amount": 5, "idempotencyKey": "c", "extra": 1}'),
    ("a list", b'[{"amount": 5, "idempotencyKey": "c"}]'),
    ("cut-off JSON", b'{"amount": 5, "idempotencyKey": '),
    ("an empty body", b""),
    ("not UTF-8", b'{"amount": 5, "idempotencyKey": "\xff\xfe"}'),
    ("a bad customer ID", b'{"amount": 5, "idempotencyKey": "c", "customerId": "x y"}'),
    ("a NUL in the key", b'{"amount": 5, "idempotencyKey": "c\\u0000"}'),
    ("a 30,000-deep body", b"[" * 30_000 + b"]" * 30_000),
    ("a 30,000-deep field", b'{"amount": 5, "reason": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"),
    ("a 5,000-digit amount", b'{"amount": ' + b"9" * 5000 + b', "idempotencyKey": "c"}'),
    ("a 5,000-digit float", b'{"amount": 1.' + b"9" * 5000 + b', "idempotencyKey": "c"}'),
]


def test_both_ways_in_answer_every_case_alike(
    client: TestClient, admin: dict[str, str], buyer: dict[str, Any]
) -> None:
    twin = signed_up(client)  # the same starting point, served by the FastAPI route
    for customer in (buyer, twin):
        assert grant(client, admin, customer["customerId"], 100).status_code == 201

    for label, content in CASES:
        fast = post(client, buyer["headers"], content, via_fastapi=False)
        slow = post(client, twin["headers"], content, via_fastapi=True)
        assert comparable(fast) == comparable(slow), label
        assert fast.status_code < 500, (label, fast.text)

    assert balance(client, buyer["headers"]) == balance(client, twin["headers"]) == 90
    assert [e["amount"] for e in ledger(client, buyer["headers"])] == [-10, 100]


@pytest.mark.parametrize("via_fastapi", [False, True])
def test_someone_elses_customer_and_a_missing_credential_are_refused_both_ways(
    client: TestClient, admin: dict[str, str], buyer: dict[str, Any], via_fastapi: bool
) -> None:
    other = signed_up(client)
    grant(client, admin, other["customerId"], 100)
    theirs = b'{"amount": 5, "idempotencyKey": "k", "customerId": "%s"}' % (
        other["customerId"].encode()
    )

    stolen = post(client, buyer["headers"], theirs, via_fastapi=via_fastapi)
    anonymous = post(client, {}, theirs, via_fastapi=via_fastapi)
    wrong_scheme = post(
        client, {"Authorization": "Basic dXNlcjpwdw=="}, theirs, via_fastapi=via_fastapi
    )

    assert (stolen.status_code, stolen.json()["error"]["code"]) == (404, "not_found")
    for refused in (anonymous, wrong_scheme):
        assert (refused.status_code, refused.json()["error"]["code"]) == (401, "unauthorized")
    assert balance(client, other["headers"]) == 100


def test_the_hot_path_keeps_the_request_id_and_refuses_an_oversized_body(
    client: TestClient, admin: dict[str, str], buyer: dict[str, Any]
) -> None:
    grant(client, admin, buyer["customerId"], 100)
    body = b'{"amount": 1, "idempotencyKey": "r"}'

    answered = client.post(
        "/credits/consume", content=body, headers={**JSON, **buyer["headers"], "X-Request-ID": "r1"}
    )
    limit = client.app.state.services.settings.max_request_body_bytes  # type: ignore[attr-defined]
    huge = post(client, buyer["headers"], b" " * limit + body, via_fastapi=False)

    assert answered.status_code == 200, answered.text
    assert answered.headers["x-request-id"] == "r1"
    assert answered.headers["content-type"] == "application/json"
    assert (huge.status_code, huge.json()["error"]["code"]) == (413, "body_too_large")
    assert balance(client, buyer["headers"]) == 99


def test_the_route_stays_documented(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()

    operation = schema["paths"]["/credits/consume"]["post"]
    assert operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "ConsumeIn"
    )


def test_a_caller_hanging_up_before_the_body_ends_debits_nothing(
    client: TestClient, admin: dict[str, str], buyer: dict[str, Any]
) -> None:
    grant(client, admin, buyer["customerId"], 100)
    # A whole debit, but the request said more was coming when the caller hung up.
    messages: list[Message] = [
        {
            "type": "http.request",
            "body": b'{"amount": 5, "idempotencyKey": "gone"}',
            "more_body": True,
        },
        {"type": "http.disconnect"},
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return messages.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    async def fallen_through(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError("the hot path should have taken this call")

    scope: Scope = {
        "type": "http",
        "method": "POST",
        "path": PATH,
        "query_string": b"",
        "headers": [
            (b"authorization", buyer["headers"]["Authorization"].encode()),
            (b"content-type", b"application/json"),
        ],
    }
    hot_path = ConsumeHotPath(fallen_through, client.app.state.consume_batcher)  # type: ignore[attr-defined]

    asyncio.run(hot_path(scope, receive, send))

    assert sent == []
    assert balance(client, buyer["headers"]) == 100


@pytest.mark.postgres_only
def test_a_batcher_whose_connection_the_database_cut_debits_once_on_a_new_one(
    client: TestClient, admin: dict[str, str], buyer: dict[str, Any], services: Services
) -> None:
    grant(client, admin, buyer["customerId"], 100)
    first = post(
        client, buyer["headers"], b'{"amount": 5, "idempotencyKey": "before"}', via_fastapi=False
    )
    assert first.status_code == 200, first.text
    # The batcher keeps its connection between batches: cut it (and every other) server-side,
    # as a database restart or an idle-session timeout would.
    with services.db.engine.connect() as connection:
        cut = connection.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalar_one()
    assert cut >= 1

    after = post(
        client, buyer["headers"], b'{"amount": 7, "idempotencyKey": "after"}', via_fastapi=False
    )
    again = post(
        client, buyer["headers"], b'{"amount": 7, "idempotencyKey": "after"}', via_fastapi=False
    )

    assert after.status_code == 200, after.text
    assert (again.status_code, again.json()["data"]["replayed"]) == (200, True)
    assert balance(client, buyer["headers"]) == 88
    assert [e["amount"] for e in ledger(client, buyer["headers"])] == [-7, -5, 100]
