"""A customer on a trial plan with credits, and a service key, for the entitlement tests."""

from __future__ import annotations

from typing import Any

from factories import signed_up
from fastapi.testclient import TestClient

from support.credits import starting_balance

TRIAL = {"limits": {"projects": 1, "seats": 1}, "flags": {"api": False, "export": True}}


def trial_member(client: TestClient, admin: dict[str, str]) -> dict[str, Any]:
    """A customer on the trial plan (code "trial"), with 30 credits."""
    plan = {"code": "trial", "name": "Trial", "trialDays": 14, "features": TRIAL}
    client.post("/plans", json=plan, headers=admin).raise_for_status()
    user = signed_up(client)
    starting_balance(client, admin, user["customerId"], 30)
    return user


def service_key(client: TestClient, admin: dict[str, str]) -> dict[str, str]:
    """The headers of a new service API key."""
    key = client.post("/api-keys", json={"name": "backend"}, headers=admin).json()["data"]["key"]
    return {"Authorization": f"Bearer {key}"}
