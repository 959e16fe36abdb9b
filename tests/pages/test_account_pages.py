"""The pages the account e-mails link to: forgot password → e-mailed link → new password;
verifying an address. A GET only shows a form (mail scanners fetch links)."""

from __future__ import annotations

import email
import re
from pathlib import Path

from factories import register
from fastapi.testclient import TestClient
from support.pages import post_form, sign_in

from billfold.jobs.worker import Worker
from billfold.services import Services

TOKEN_IN_URL = re.compile(r"/account/(verify-email|reset-password)\?token=(\S+)")


def _last_token(services: Services, worker: Worker[Services], address: str, page: str) -> str:
    worker.run_until_idle()
    tokens: list[str] = []
    folder = Path(services.settings.mail_outbox_dir)
    for path in sorted(folder.glob("*.eml"), key=lambda p: p.stat().st_mtime):
        message = email.message_from_bytes(path.read_bytes())
        body = message.get_payload(decode=True)
        if message["To"] == address and isinstance(body, bytes):
            tokens += [t for p, t in TOKEN_IN_URL.findall(body.decode()) if p == page]
    assert tokens
    return tokens[-1]


def test_forgotten_password_is_reset_through_the_emailed_link(
    client: TestClient, services: Services, worker: Worker[Services]
) -> None:
    user = register(client)["user"]
    asked = post_form(
        client,
        "/billing/forgot-password",
        {"email": user["email"]},
        page="/billing/forgot-password",
    )
    assert asked.status_code == 303  # type: ignore[attr-defined]
    assert "we sent it a link" in client.get("/billing/sign-in").text

    token = _last_token(services, worker, user["email"], "reset-password")
    form_page = client.get(f"/account/reset-password?token={token}")
    assert form_page.status_code == 200
    assert "Choose a new password" in form_page.text
    done = post_form(
        client,
        "/account/reset-password",
        {"token": token, "password": "a brand new one"},
        page=f"/account/reset-password?token={token}",
    )
    assert done.status_code == 303  # type: ignore[attr-defined]
    sign_in(client, user["email"], "a brand new one")

    again = post_form(
        client,
        "/account/reset-password",
        {"token": token, "password": "yet another one"},
        page=f"/account/reset-password?token={token}",
    )
    assert again.status_code == 400  # type: ignore[attr-defined]
    assert "not valid" in again.text  # type: ignore[attr-defined]


def test_the_verification_link_verifies_only_when_the_form_is_sent(
    client: TestClient, services: Services, worker: Worker[Services]
) -> None:
    user = register(client)["user"]
    token = _last_token(services, worker, user["email"], "verify-email")
    shown = client.get(f"/account/verify-email?token={token}")  # what a mail scanner does
    assert "Verify my e-mail address" in shown.text
    assert "content-security-policy" in shown.headers
    answer = post_form(
        client,
        "/account/verify-email",
        {"token": token},
        page=f"/account/verify-email?token={token}",
    )
    assert answer.status_code == 303  # type: ignore[attr-defined]
    me = client.get(
        "/users/me", headers={"Authorization": f"Bearer {register(client)['access_token']}"}
    )
    assert me.status_code == 200
    reused = post_form(
        client,
        "/account/verify-email",
        {"token": token},
        page=f"/account/verify-email?token={token}",
    )
    assert reused.status_code == 400  # type: ignore[attr-defined]
