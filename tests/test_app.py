"""The app's own answers to requests no route takes."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient


def test_a_method_a_path_does_not_take_is_405_with_every_method_it_does_in_allow(
    client: TestClient, buyer: dict[str, Any]
) -> None:
    user_path = f"/users/{buyer['id']}"

    on_user = client.put(user_path, json={}, headers=buyer["headers"])
    on_login = client.get("/auth/login")

    assert (on_user.status_code, on_user.json()["error"]["code"]) == (405, "method_not_allowed")
    assert on_user.headers["allow"] == "GET, PATCH, DELETE"
    assert (on_login.status_code, on_login.headers["allow"]) == (405, "POST")
