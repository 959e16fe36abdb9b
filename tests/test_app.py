"""The app's own answers to requests no route takes."""

from __future__ import annotations

import os
from typing import Any

from fastapi.testclient import TestClient

from billfold.app import RequestIds


def test_a_method_a_path_does_not_take_is_405_with_every_method_it_does_in_allow(
    client: TestClient, buyer: dict[str, Any]
) -> None:
    user_path = f"/users/{buyer['id']}"

    on_user = client.put(user_path, json={}, headers=buyer["headers"])
    on_login = client.get("/auth/login")

    assert (on_user.status_code, on_user.json()["error"]["code"]) == (405, "method_not_allowed")
    assert on_user.headers["allow"] == "GET, PATCH, DELETE"
    assert (on_login.status_code, on_login.headers["allow"]) == (405, "POST")


def test_request_ids_are_unique_hex_and_differ_in_a_forked_process() -> None:
    ids = RequestIds()
    first = [ids.next() for _ in range(1000)]
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child answers the ID it would give its next request
        os.write(write, ids.next().encode())
        os._exit(0)
    os.close(write)
    in_child = os.read(read, 64).decode()
    os.waitpid(child, 0)
    in_parent = ids.next()

    assert len(set(first)) == 1000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in first)
    # The same counter position in both processes, and still not the same ID.
    assert in_child != in_parent
    assert in_child[:16] != in_parent[:16]


def test_a_request_without_an_id_gets_its_own(client: TestClient) -> None:
    answers = [client.get("/healthz") for _ in range(3)]
    given = client.get("/healthz", headers={"X-Request-ID": "mine"})

    ids = [a.headers["x-request-id"] for a in answers]
    assert len(set(ids)) == 3
    assert all(len(i) == 32 for i in ids)
    assert given.headers["x-request-id"] == "mine"
