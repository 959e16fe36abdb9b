"""Superseded licenses: the one a change replaced still verifies offline until it expires,
but the signed revocation list names it and the online check says so."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import jwt
import pytest
import stripe
from fastapi.testclient import TestClient
from sqlalchemy import update
from subscription_steps import ON_FIRST_PAYMENT, Member, licenses_of, seed_plans, sign_up

from billfold.app import create_app
from billfold.config import Settings
from billfold.kit.db import utcnow
from billfold.registry import build_services
from billfold.services import Services
from billfold.subscriptions import revocations
from billfold.subscriptions.licenses import verify
from billfold.subscriptions.models import License


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return dict(ON_FIRST_PAYMENT)


@pytest.fixture
def member(client: TestClient, admin: dict[str, str], stripe_api: stripe.StripeClient) -> Member:
    seed_plans(client, admin, stripe_api)
    return sign_up(client)


def _published(client: TestClient, services: Services) -> tuple[dict[str, Any], dict[str, Any]]:
    """The list as answered, and its token's claims checked with the published JWKS."""
    answer = client.get("/licenses/revocations")
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()["data"]
    jwks = jwt.PyJWKSet.from_dict(client.get("/.well-known/jwks.json").json())
    kid = jwt.get_unverified_header(data["token"])["kid"]
    key = next(k for k in jwks.keys if k.key_id == kid)
    claims: dict[str, Any] = jwt.decode(
        data["token"], key.key, algorithms=["EdDSA"], issuer="billfold"
    )
    return data, claims


def test_a_superseded_license_verifies_offline_but_is_listed_revoked_and_flagged_online(
    client: TestClient, services: Services, member: Member
) -> None:
    client.post(
        "/subscriptions/cancel", json={"atPeriodEnd": True}, headers=member.headers
    ).raise_for_status()  # a change: a new license replaces the trial's first one
    first, current = licenses_of(services, member.customer_id)
    assert verify(first.token, services.licenses.public_keys())["jti"] == first.id  # offline

    data, claims = _published(client, services)
    assert first.id in data["revoked"]
    assert current.id not in data["revoked"]
    assert (claims["typ"], claims["revoked"]) == ("license-revocations", data["revoked"])
    assert claims["exp"] - claims["iat"] == 3600

    old = client.post("/licenses/verify", json={"token": first.token}).json()["data"]
    new = client.post("/licenses/verify", json={"token": current.token}).json()["data"]
    assert (old["valid"], old["superseded"]) == (True, True)
    assert (new["valid"], new["superseded"]) == (True, False)


def test_an_expired_superseded_license_leaves_the_list(
    client: TestClient, services: Services, member: Member
) -> None:
    client.post(
        "/subscriptions/cancel", json={"atPeriodEnd": True}, headers=member.headers
    ).raise_for_status()
    first, _current = licenses_of(services, member.customer_id)
    assert first.id in _published(client, services)[0]["revoked"]
    with services.db.transaction() as session:
        session.execute(
            update(License)
            .where(License.id == first.id)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    assert first.id not in _published(client, services)[0]["revoked"]


def test_the_list_is_signed_again_only_when_a_license_may_change_it(
    client: TestClient, services: Services, settings: Settings, member: Member
) -> None:
    """Served again as it was until a license is issued anywhere (here by another process's
    services, over the same database) or one expires; then it is built and signed anew."""
    client.post(
        "/subscriptions/cancel", json={"atPeriodEnd": True}, headers=member.headers
    ).raise_for_status()
    built = services.memo.made(revocations.MEMO_NAME)
    first, _ = _published(client, services)
    assert services.memo.made(revocations.MEMO_NAME) == built + 1  # the change: built anew
    # Served again as kept: not built nor signed again (a list signed again within the same
    # second would be the same token, Ed25519 being deterministic, so the count tells).
    assert _published(client, services)[0] == first
    assert services.memo.made(revocations.MEMO_NAME) == built + 1

    other = build_services(settings)  # a second server process's view of the database
    try:
        client_of_other = TestClient(create_app(services=other))
        client_of_other.post(
            "/subscriptions/resume", json={}, headers=member.headers
        ).raise_for_status()
    finally:
        other.db.dispose()
    changed, claims = _published(client, services)
    assert services.memo.made(revocations.MEMO_NAME) == built + 2
    assert changed["token"] != first["token"]
    superseded = licenses_of(services, member.customer_id)[:-1]
    assert sorted(changed["revoked"]) == sorted(lic.id for lic in superseded)
    assert claims["revoked"] == changed["revoked"]

    with services.db.transaction() as session:  # the oldest superseded license expires
        session.execute(
            update(License)
            .where(License.id == superseded[0].id)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    assert superseded[0].id not in _published(client, services)[0]["revoked"]
    assert services.memo.made(revocations.MEMO_NAME) == built + 3
