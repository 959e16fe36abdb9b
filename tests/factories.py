"""Small builders for test data, through the public API where a user would go."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.testclient import TestClient

from billfold.auth.models import Role
from billfold.customers import service
from billfold.services import Services


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}@example.com"


def register(client: TestClient, **fields: Any) -> dict[str, Any]:
    """Register through POST /users; answers the envelope's data (user and access_token)."""
    body = {"name": "Ada Lovelace", "email": unique_email(), "password": "correct horse 1"}
    body.update(fields)
    response = client.post("/users", json=body)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def signed_up(client: TestClient) -> dict[str, Any]:
    """A newly registered user: their user object plus the `headers` that sign them in."""
    data = register(client)
    return {**data["user"], "headers": auth(data["access_token"])}


def admin_token(client: TestClient, services: Services) -> str:
    email, password = unique_email("admin"), "admin-password-1"
    with services.db.transaction() as session:
        service.register(session, name="Admin", email=email, password=password, role=Role.ADMIN)
    response = client.post("/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    token: str = response.json()["data"]["access_token"]
    return token
