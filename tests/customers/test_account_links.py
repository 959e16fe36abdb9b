"""E-mail verification and password reset by e-mailed single-use links, read from the real
mail outbox (.eml files written by the worker); Stripe-side e-mail edits wait for one."""

from __future__ import annotations

import email
import hashlib
import re
from datetime import timedelta
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
import stripe
from conftest import WEBHOOK_SECRET
from factories import auth, register, unique_email
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from support.stripe_events import delivery, event

from billfold.auth.models import AccountLink, User
from billfold.jobs.worker import Worker
from billfold.kit.audit import AuditEntry
from billfold.kit.db import utcnow
from billfold.mail.models import OutboxMail
from billfold.services import Services
from billfold.subscriptions.models import License, Subscription

PASSWORD = "correct horse 1"
TOKEN_IN_URL = re.compile(r"(https?://\S+/account/(verify-email|reset-password))\?token=(\S+)")


def _mails_to(services: Services, worker: Worker[Services], address: str) -> list[Message]:
    worker.run_until_idle()
    folder = Path(services.settings.mail_outbox_dir)
    found = []
    for path in sorted(folder.glob("*.eml"), key=lambda p: p.stat().st_mtime):
        message = email.message_from_bytes(path.read_bytes())
        if message["To"] == address:
            found.append(message)
    return found


def _link(message: Message) -> tuple[str, str, str]:
    """(page URL, page, token) of the link in an e-mail."""
    body = message.get_payload(decode=True)
    assert isinstance(body, bytes)
    match = TOKEN_IN_URL.search(body.decode())
    assert match is not None, body
    return match[1], match[2], match[3]


def _token_of_last_mail(
    services: Services, worker: Worker[Services], address: str, page: str
) -> str:
    links = [_link(m) for m in _mails_to(services, worker, address)]
    tokens = [token for _, p, token in links if p == page]
    assert tokens, links
    return tokens[-1]


def _user(services: Services, user_id: str) -> User:
    with services.db.transaction() as session:
        user = session.get(User, user_id)
        assert user is not None
        return user


def _code(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    code: str = response.json()["error"]["code"]
    return code


# -- e-mail verification -----------------------------------------------------------------


def test_sign_up_emails_a_single_use_link_that_verifies_the_address(
    client: TestClient, services: Services, worker: Worker[Services]
) -> None:
    data = register(client, password=PASSWORD)
    user = data["user"]
    assert user["isEmailVerified"] is False
    token = _token_of_last_mail(services, worker, user["email"], "verify-email")

    verified = client.post("/auth/verify-email", json={"token": token})

    assert verified.status_code == 200, verified.text
    assert verified.json()["data"] == {"email": user["email"], "isEmailVerified": True}
    me = client.get("/users/me", headers=auth(data["access_token"]))
    assert me.json()["data"]["isEmailVerified"] is True
    assert _code(client.post("/auth/verify-email", json={"token": token}), 400) == "invalid_link"


def test_link_tokens_are_stored_hashed_never_in_plain_text(
    client: TestClient, services: Services, worker: Worker[Services]
) -> None:
    user = register(client, password=PASSWORD)["user"]
    token = _token_of_last_mail(services, worker, user["email"], "verify-email")
    with services.db.transaction() as session:
        links = list(session.scalars(select(AccountLink)))
        bodies = [m.body_text for m in session.scalars(select(OutboxMail))]
    assert [link.token_hash for link in links] == [hashlib.sha256(token.encode()).hexdigest()]
    dump = repr([vars(link) for link in links]) + repr(bodies)
    assert token not in dump
    assert token.split(".")[1] not in dump


def test_expired_or_forged_verification_link_is_400_and_verifies_nothing(
    client: TestClient, services: Services, worker: Worker[Services]
) -> None:
    user = register(client, password=PASSWORD)["user"]
    token = _token_of_last_mail(services, worker, user["email"], "verify-email")
    link_id = token.split(".")[0]
    forged = f"{link_id}.{'A' * 43}"
    assert _code(client.post("/auth/verify-email", json={"token": forged}), 400) == "invalid_link"

    with services.db.transaction() as session:
        session.execute(update(AccountLink).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert _code(client.post("/auth/verify-email", json={"token": token}), 400) == "invalid_link"
    assert _user(services, user["id"]).is_email_verified is False


def test_resend_sends_a_fresh_link_to_an_unverified_user(
    client: TestClient, services: Services, worker: Worker[Services]
) -> None:
    data = register(client, password=PASSWORD)
    resent = client.post("/auth/verify-email/resend", headers=auth(data["access_token"]))
    assert resent.status_code == 202
    links = [_link(m) for m in _mails_to(services, worker, data["user"]["email"])]
    assert len({token for *_, token in links}) == 2
    token = links[-1][2]
    assert client.post("/auth/verify-email", json={"token": token}).status_code == 200
    again = client.post("/auth/verify-email/resend", headers=auth(data["access_token"]))
    assert _code(again, 409) == "already_verified"


def test_email_change_sends_a_link_to_the_new_address_and_a_notice_to_the_old(
    client: TestClient, services: Services, worker: Worker[Services]
) -> None:
    data = register(client, password=PASSWORD)
    old, new = data["user"]["email"], unique_email("new")
    client.patch(
        f"/users/{data['user']['id']}",
        json={"email": new, "currentPassword": PASSWORD},
        headers=auth(data["access_token"]),
    ).raise_for_status()

    notices = [m for m in _mails_to(services, worker, old) if "changed" in m["Subject"]]
    assert len(notices) == 1
    token = _token_of_last_mail(services, worker, new, "verify-email")
    assert client.post("/auth/verify-email", json={"token": token}).status_code == 200
    assert _user(services, data["user"]["id"]).is_email_verified is True


def _trial_plan(client: TestClient, admin: dict[str, str]) -> None:
    body = {"code": "trial", "name": "Trial", "trialDays": 14, "features": {}}
    client.post("/plans", json=body, headers=admin).raise_for_status()


@pytest.mark.parametrize("settings_overrides", [{"email_verification_required": True}])
def test_with_verification_required_the_trial_waits_for_the_verified_address(
    client: TestClient, services: Services, worker: Worker[Services], admin: dict[str, str]
) -> None:
    _trial_plan(client, admin)
    data = register(client, password=PASSWORD)
    customer_id = data["user"]["customerId"]
    with services.db.transaction() as session:
        assert (
            session.scalar(select(Subscription).where(Subscription.customer_id == customer_id))
            is None
        )
        assert session.scalar(select(License)) is None
    token = _token_of_last_mail(services, worker, data["user"]["email"], "verify-email")

    client.post("/auth/verify-email", json={"token": token}).raise_for_status()

    with services.db.transaction() as session:
        subscription = session.scalar(
            select(Subscription).where(Subscription.customer_id == customer_id)
        )
        assert subscription is not None
        assert subscription.status == "trialing"
        assert session.scalar(select(License)) is not None


def test_without_verification_required_the_trial_starts_at_sign_up(
    client: TestClient, services: Services, admin: dict[str, str]
) -> None:
    _trial_plan(client, admin)
    data = register(client, password=PASSWORD)
    with services.db.transaction() as session:
        found = session.scalar(
            select(Subscription).where(Subscription.customer_id == data["user"]["customerId"])
        )
    assert found is not None


# -- password reset ----------------------------------------------------------------------


def test_password_reset_by_emailed_link_sets_a_new_password_and_revokes_tokens(
    client: TestClient, services: Services, worker: Worker[Services]
) -> None:
    data = register(client, password=PASSWORD)
    address = data["user"]["email"]
    asked = client.post("/auth/password-reset/request", json={"email": address.upper()})
    assert asked.status_code == 202
    token = _token_of_last_mail(services, worker, address, "reset-password")

    done = client.post(
        "/auth/password-reset/confirm", json={"token": token, "password": "new password 9"}
    )

    assert done.status_code == 200, done.text
    assert _code(client.get("/users/me", headers=auth(data["access_token"])), 401) == (
        "token_revoked"
    )
    login = {"email": address, "password": "new password 9"}
    assert client.post("/auth/login", json=login).status_code == 200
    again = client.post(
        "/auth/password-reset/confirm", json={"token": token, "password": "other password 9"}
    )
    assert _code(again, 400) == "invalid_link"
    with services.db.transaction() as session:
        actions = list(
            session.scalars(
                select(AuditEntry.action).where(AuditEntry.subject_id == data["user"]["id"])
            )
        )
    assert "user.password_reset_requested" in actions
    assert "user.password_change" in actions


def test_password_reset_answers_the_same_for_unknown_addresses(
    client: TestClient, services: Services, worker: Worker[Services]
) -> None:
    known = register(client, password=PASSWORD)["user"]["email"]
    answers = [
        client.post("/auth/password-reset/request", json={"email": address})
        for address in (known, unique_email("nobody"))
    ]
    assert [a.status_code for a in answers] == [202, 202]
    first, second = (a.json() for a in answers)
    assert first["data"] == second["data"]
    assert set(first) == set(second)
    worker.run_until_idle()
    with services.db.transaction() as session:
        resets = list(
            session.scalars(select(OutboxMail).where(OutboxMail.kind == "password_reset"))
        )
    assert [m.to_address for m in resets] == [known]


def test_reset_link_expires_after_its_short_lifetime(
    client: TestClient, services: Services, worker: Worker[Services]
) -> None:
    address = register(client, password=PASSWORD)["user"]["email"]
    client.post("/auth/password-reset/request", json={"email": address}).raise_for_status()
    token = _token_of_last_mail(services, worker, address, "reset-password")
    with services.db.transaction() as session:
        link = session.scalar(select(AccountLink).where(AccountLink.purpose == "reset_password"))
        assert link is not None
        assert link.expires_at - link.created_at == timedelta(minutes=30)
        link.expires_at = utcnow() - timedelta(seconds=1)
    refused = client.post(
        "/auth/password-reset/confirm", json={"token": token, "password": "new password 9"}
    )
    assert _code(refused, 400) == "invalid_link"
    assert (
        client.post("/auth/login", json={"email": address, "password": PASSWORD}).status_code == 200
    )


# -- a Stripe-side e-mail edit -----------------------------------------------------------


def test_stripe_customer_updated_does_not_change_the_login_email_until_verified(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
) -> None:
    data = register(client, password=PASSWORD)
    user = data["user"]
    worker.run_until_idle()
    stripe_id = user["stripeCustomerId"]
    assert stripe_id
    attacker = unique_email("attacker")
    stripe_api.v1.customers.update(stripe_id, params={"email": attacker})
    evt = event("customer.updated", stripe_api.v1.customers.retrieve(stripe_id).to_dict())
    body, headers = delivery(evt, WEBHOOK_SECRET)
    assert client.post("/webhooks/stripe", content=body, headers=headers).status_code == 200
    worker.run_until_idle()

    assert _user(services, user["id"]).email == user["email"]
    login = {"email": attacker, "password": PASSWORD}
    assert client.post("/auth/login", json=login).status_code == 401
    # Only following the link sent to the new address moves the login e-mail.
    token = _token_of_last_mail(services, worker, attacker, "verify-email")
    client.post("/auth/verify-email", json={"token": token}).raise_for_status()
    moved = _user(services, user["id"])
    assert moved.email == attacker
    assert moved.is_email_verified is True
    assert client.post("/auth/login", json=login).status_code == 200
