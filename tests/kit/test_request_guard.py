"""Every request passes `RequestGuard` first: an oversized body is refused (413) before it is
read, by its Content-Length or while it streams, on every route (the consume hot path too);
a NUL character in the path, the query, a header or a JSON body is a 422, never a 500."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from starlette.types import ASGIApp, Message
from support.stripe_events import delivery, event

from billfold.auth.models import User
from billfold.services import Services

API_LIMIT, WEBHOOK_LIMIT = 4096, 16384
ROUTES = ["/webhooks/stripe", "/users", "/orders", "/credits/consume"]


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"max_request_body_bytes": API_LIMIT, "max_webhook_body_bytes": WEBHOOK_LIMIT}


def _limit(path: str) -> int:
    return WEBHOOK_LIMIT if path == "/webhooks/stripe" else API_LIMIT


def _call(
    app: ASGIApp, path: str, headers: list[tuple[bytes, bytes]], chunks: list[bytes]
) -> tuple[list[Message], int]:
    """Send a request straight to the ASGI app; answers what it sent and how many body chunks
    it read."""
    pending = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    read = 0
    sent: list[Message] = []

    async def receive() -> Message:
        nonlocal read
        if not pending:
            await asyncio.sleep(3600)  # a body that never ends: only a refusal gets past this
        read += 1
        return pending.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), *headers],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
    }
    # A loop of its own on a thread of its own: Playwright's sync API, used by the browser tests
    # in the same session, leaves an event loop running on the main thread.
    with ThreadPoolExecutor(max_workers=1) as thread:
        thread.submit(asyncio.run, asyncio.wait_for(app(scope, receive, send), timeout=30)).result()
    return sent, read


def _answer(sent: list[Message]) -> tuple[int, dict[str, Any]]:
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(body)


@pytest.mark.parametrize("path", ROUTES)
def test_a_body_declared_too_large_is_refused_413_before_a_byte_is_read(
    client: TestClient, buyer: dict[str, Any], path: str
) -> None:
    declared = str(300 * 1024 * 1024).encode()  # the 300 MB of the report, never sent
    headers = [
        (b"content-length", declared),
        (b"authorization", buyer["headers"]["Authorization"].encode()),
    ]

    sent, read = _call(client.app, path, headers, [b"{"])

    status, body = _answer(sent)
    assert (status, body["error"]["code"]) == (413, "body_too_large")
    assert body["error"]["details"] == {"limitBytes": _limit(path)}
    assert read == 0


@pytest.mark.parametrize("path", ROUTES)
def test_a_streamed_body_is_refused_413_as_soon_as_it_passes_the_limit(
    client: TestClient, buyer: dict[str, Any], path: str, services: Services
) -> None:
    users_before = _users(services)
    chunk = b" " * 1024
    # No Content-Length (chunked): an endless body, cut off by the guard.
    headers = [(b"authorization", buyer["headers"]["Authorization"].encode())]
    chunks = [b"{"] + [chunk] * (_limit(path) // len(chunk) + 1000)

    sent, read = _call(client.app, path, headers, chunks)

    status, body = _answer(sent)
    assert (status, body["error"]["code"]) == (413, "body_too_large")
    assert read <= _limit(path) // len(chunk) + 2  # stopped at the limit, not at the end
    assert _users(services) == users_before


def test_webhooks_have_their_own_larger_limit(client: TestClient, buyer: dict[str, Any]) -> None:
    padding = " " * (API_LIMIT * 2)
    body, headers = delivery(event("customer.updated", {"id": "cus_x", "pad": padding}), "nope")

    webhook = client.post("/webhooks/stripe", content=body, headers=headers)
    user = client.post(
        "/orders", content=b'{"items": []' + padding.encode() + b"}", headers=buyer["headers"]
    )

    assert webhook.status_code == 400, webhook.text  # read, and refused for its signature
    assert webhook.json()["error"]["code"] == "invalid_signature"
    assert (user.status_code, user.json()["error"]["code"]) == (413, "body_too_large")


def test_a_nul_character_in_the_path_or_query_is_a_422(
    client: TestClient, admin: dict[str, str], buyer: dict[str, Any]
) -> None:
    answers = [
        client.get("/users/usr_%00abc", headers=buyer["headers"]),
        client.get("/customers", params={"email": "a\x00@example.com"}, headers=admin),
        client.get("/customers", params={"customerId": "cust_\x00"}, headers=admin),
        client.get("/webhooks/events", params={"type": "customer.\x00"}, headers=admin),
        client.post("/payments/pay_%00/refund", json={"amount": 1}, headers=admin),
    ]
    for answer in answers:
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"]["code"] == "validation_error"


def test_a_nul_character_in_a_header_is_a_422(
    client: TestClient, buyer: dict[str, Any], services: Services
) -> None:
    users_before = _users(services)
    sent, _read = _call(
        client.app,
        "/users",
        [(b"idempotency-key", b"key-\x00-1")],
        [b'{"name": "A", "email": "nul-header@example.com", "password": "correct horse 1"}'],
    )

    status, body = _answer(sent)
    assert (status, body["error"]["code"]) == (422, "validation_error")
    assert _users(services) == users_before


def test_a_nul_character_in_a_json_body_is_a_422(
    client: TestClient, admin: dict[str, str], services: Services
) -> None:
    users_before = _users(services)
    answers = [
        client.post(
            "/users",
            json={"name": "Ada\x00", "email": "nul@example.com", "password": "correct horse 1"},
        ),
        client.post(
            "/auth/login", json={"email": "nul\x00@example.com", "password": "correct horse 1"}
        ),
        client.post(
            "/plans",
            json={"code": "nul", "name": "Nul", "features": {"flags": {"a\x00": True}}},
            headers=admin,
        ),
    ]
    for answer in answers:
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"]["code"] == "validation_error"
    assert _users(services) == users_before


def _users(services: Services) -> int:
    with services.db.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(User)) or 0)
