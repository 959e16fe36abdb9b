"""Helpers for driving the pages over HTTP without a browser (TestClient)."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

_CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token of the first form on a page."""
    found = _CSRF.search(html)
    assert found, "no CSRF token on the page"
    return found.group(1)


def post_form(client: TestClient, path: str, form: dict[str, str], *, page: str) -> object:
    """Post `form` to `path` with the CSRF token of `page`, as a browser would."""
    token = csrf_of(client.get(page).text)
    return client.post(path, data={**form, "csrf_token": token}, follow_redirects=False)


def sign_in(client: TestClient, email: str, password: str) -> None:
    response = post_form(
        client,
        "/billing/sign-in",
        {"email": email, "password": password, "next": "/billing"},
        page="/billing/sign-in",
    )
    assert getattr(response, "status_code", None) == 303, getattr(response, "text", "")
