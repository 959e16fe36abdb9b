"""The credits wallet as a caller sees it over HTTP: grant, balance, the whole ledger."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from fastapi.testclient import TestClient


def grant(
    client: TestClient, admin: dict[str, str], customer_id: str, amount: int, **extra: Any
) -> httpx.Response:
    body = {
        "customerId": customer_id,
        "amount": amount,
        "reason": "goodwill",
        "idempotencyKey": f"g-{customer_id}-{amount}",
        **extra,
    }
    response: httpx.Response = client.post("/credits/grants", json=body, headers=admin)
    return response


def starting_balance(
    client: TestClient, admin: dict[str, str], customer_id: str, amount: int
) -> None:
    """A starting balance: grant `amount` under a fresh key, and require that it was granted."""
    response = grant(
        client,
        admin,
        customer_id,
        amount,
        reason="starting balance",
        idempotencyKey=uuid.uuid4().hex,
    )
    assert response.status_code == 201, response.text


def balance(client: TestClient, headers: dict[str, str], **params: Any) -> int:
    response = client.get("/credits/balance", params=params, headers=headers)
    assert response.status_code == 200, response.text
    value: int = response.json()["data"]["balance"]
    return value


def ledger(client: TestClient, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    """The whole ledger, newest first, in one page."""
    response = client.get("/credits/transactions", params={"limit": 200, **params}, headers=headers)
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()["data"]["transactions"]
    return entries
