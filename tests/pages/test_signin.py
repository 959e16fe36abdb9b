"""Getting into the billing pages: sign-up, sign-in, sign-out, CSRF, and the host backend's
single-use links."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from factories import register, unique_email
from fastapi.testclient import TestClient
from sqlalchemy import update
from support.pages import csrf_of, post_form, sign_in

from billfold.config import Settings
from billfold.kit.db import utcnow
from billfold.pages.models import SignInLink
from billfold.pages.security import PageSecurity
from billfold.services import Services


def test_pages_ask_to_sign_in_and_come_back_after(client: TestClient) -> None:
    user = register(client)["user"]
    response = client.get("/billing?from=mail", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/billing/sign-in?next=/billing%3Ffrom%3Dmail"

    answer = post_form(
        client,
        "/billing/sign-in",
        {"email": user["email"], "password": "correct horse 1", "next": "/billing/credits"},
        page="/billing/sign-in",
    )
    assert answer.status_code == 303  # type: ignore[attr-defined]
    assert answer.headers["location"] == "/billing/credits"  # type: ignore[attr-defined]
    assert "Billing overview" in client.get("/billing").text


def test_wrong_password_shows_a_message_on_the_page(client: TestClient) -> None:
    user = register(client)["user"]
    response = post_form(
        client,
        "/billing/sign-in",
        {"email": user["email"], "password": "not it at all", "next": "/billing"},
        page="/billing/sign-in",
    )
    assert response.status_code == 401  # type: ignore[attr-defined]
    assert "text/html" in response.headers["content-type"]  # type: ignore[attr-defined]
    assert "E-mail or password is wrong" in response.text  # type: ignore[attr-defined]


def test_sign_in_never_redirects_off_site(client: TestClient) -> None:
    user = register(client)["user"]
    for target in ("https://evil.example/", "//evil.example/billing", "/billing//evil"):
        response = post_form(
            client,
            "/billing/sign-in",
            {"email": user["email"], "password": "correct horse 1", "next": target},
            page="/billing/sign-in",
        )
        assert response.headers["location"] == "/billing"  # type: ignore[attr-defined]


def test_sign_up_creates_the_account_and_signs_in(
    client: TestClient, admin: dict[str, str]
) -> None:
    trial = {"code": "trial", "name": "Trial", "trialDays": 14, "features": {}}
    client.post("/plans", json=trial, headers=admin).raise_for_status()
    email = unique_email()
    response = post_form(
        client,
        "/billing/sign-up",
        {"name": "Grace Hopper", "email": email, "password": "long enough 1", "company_name": ""},
        page="/billing/sign-up",
    )
    assert response.status_code == 303  # type: ignore[attr-defined]
    page = client.get("/billing")
    assert page.status_code == 200
    assert email in page.text
    assert "Free trial" in page.text
    assert "14 days left" in page.text
    assert "Copy license token" in page.text


def test_sign_up_with_a_short_password_says_what_is_wrong(client: TestClient) -> None:
    response = post_form(
        client,
        "/billing/sign-up",
        {"name": "Grace", "email": unique_email(), "password": "short"},
        page="/billing/sign-up",
    )
    assert response.status_code == 422  # type: ignore[attr-defined]
    assert "Password: String should have at least 8 characters" in response.text  # type: ignore[attr-defined]


def test_a_form_without_the_csrf_token_is_refused(client: TestClient) -> None:
    user = register(client)["user"]
    client.get("/billing/sign-in")  # the browser has its CSRF cookie
    response = client.post(
        "/billing/sign-in",
        data={"email": user["email"], "password": "correct horse 1", "csrf_token": "0" * 64},
        follow_redirects=False,
    )
    assert response.status_code == 403
    assert "did not come from this site" in response.text
    assert client.get("/billing", follow_redirects=False).status_code == 303


def test_a_token_from_another_browser_is_refused(client: TestClient, services: Services) -> None:
    user = register(client)["user"]
    other = TestClient(client.app)
    token = csrf_of(other.get("/billing/sign-in").text)
    client.get("/billing/sign-in")
    response = client.post(
        "/billing/sign-in",
        data={"email": user["email"], "password": "correct horse 1", "csrf_token": token},
        follow_redirects=False,
    )
    assert response.status_code == 403


def test_sign_out_ends_the_session_for_every_copy_of_the_cookie(client: TestClient) -> None:
    user = register(client)["user"]
    sign_in(client, user["email"], "correct horse 1")
    stolen = client.cookies.get("bf_session")
    post_form(client, "/billing/sign-out", {}, page="/billing")
    copy = TestClient(client.app, cookies={"bf_session": stolen or ""})
    assert copy.get("/billing", follow_redirects=False).status_code == 303


def test_session_cookie_is_httponly_and_lax(client: TestClient) -> None:
    user = register(client)["user"]
    response = post_form(
        client,
        "/billing/sign-in",
        {"email": user["email"], "password": "correct horse 1", "next": "/billing"},
        page="/billing/sign-in",
    )
    cookie = next(
        c
        for c in response.headers.get_list("set-cookie")  # type: ignore[attr-defined]
        if c.startswith("bf_session=")
    )
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie or "SameSite=Lax" in cookie


def test_cookies_are_secure_outside_dev(settings: Settings) -> None:
    default = Settings(_env_file=None, **{**settings.model_dump(), "pages_secure_cookies": True})
    assert PageSecurity.from_settings(default).secure_cookies


def test_pages_send_a_strict_content_security_policy(client: TestClient) -> None:
    response = client.get("/billing/sign-in")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self' http://127.0.0.1:" in policy
    assert "'unsafe-inline'" not in policy
    assert "frame-ancestors 'none'" in policy
    assert "<script>" not in response.text


def _service_key(client: TestClient, admin: dict[str, str]) -> dict[str, str]:
    key = client.post("/api-keys", json={"name": "backend"}, headers=admin).json()["data"]["key"]
    return {"Authorization": f"Bearer {key}"}


def test_host_backend_link_signs_the_customer_in_once(
    client: TestClient, admin: dict[str, str]
) -> None:
    user = register(client)["user"]
    service = _service_key(client, admin)
    answer = client.post(
        "/billing/sessions",
        json={"customerId": user["customerId"], "returnUrl": "https://app.example/settings"},
        headers=service,
    )
    assert answer.status_code == 201, answer.text
    url: str = answer.json()["data"]["url"]
    path = "/billing/session/" + url.split("/billing/session/", 1)[1]

    browser = TestClient(client.app)
    opened = browser.get(path, follow_redirects=False)
    assert opened.status_code == 303
    page = browser.get("/billing")
    assert user["email"] in page.text
    assert "https://app.example/settings" in page.text  # "Back to the app"

    again = TestClient(client.app).get(path, follow_redirects=False)
    assert again.status_code == 410
    assert "already used" in again.text


def test_an_expired_link_does_not_sign_in(
    client: TestClient, admin: dict[str, str], services: Services
) -> None:
    user = register(client)["user"]
    answer = client.post(
        "/billing/sessions",
        json={"customerId": user["customerId"]},
        headers=_service_key(client, admin),
    )
    path = "/billing/session/" + answer.json()["data"]["url"].split("/billing/session/", 1)[1]
    with services.db.transaction() as session:
        session.execute(update(SignInLink).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert TestClient(client.app).get(path, follow_redirects=False).status_code == 410


@pytest.mark.parametrize("who", ["customer", "nobody"])
def test_only_a_service_key_or_admin_mints_links(client: TestClient, who: str) -> None:
    data: dict[str, Any] = register(client)
    headers = {"Authorization": f"Bearer {data['access_token']}"} if who == "customer" else {}
    answer = client.post(
        "/billing/sessions", json={"customerId": data["user"]["customerId"]}, headers=headers
    )
    assert answer.status_code in (401, 403)
    assert answer.json()["success"] is False


def test_unknown_billing_page_is_a_page_not_json(client: TestClient) -> None:
    response = client.get("/billing/no-such-thing")
    assert response.status_code == 404
    assert "text/html" in response.headers["content-type"]
    assert "There is no such page" in response.text


def test_a_password_change_ends_every_browser_session(client: TestClient) -> None:
    data = register(client)
    user = data["user"]
    sign_in(client, user["email"], "correct horse 1")
    assert client.get("/billing", follow_redirects=False).status_code == 200

    changed = client.patch(
        f"/users/{user['id']}",
        json={"password": "battery staple 2", "currentPassword": "correct horse 1"},
        headers={"Authorization": f"Bearer {data['access_token']}"},
    )
    assert changed.status_code == 200, changed.text

    assert client.get("/billing", follow_redirects=False).status_code == 303
