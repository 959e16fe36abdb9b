"""License tokens: what they say, verifying them offline with nothing but the published keys
(or the CLI), and rotating the signing key without breaking licenses already issued."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
import stripe
from conftest import LICENSE_KEY, make_settings
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi.testclient import TestClient
from subscription_steps import (
    ON_FIRST_PAYMENT,
    STARTER_FEATURES,
    TRIAL_FEATURES,
    Member,
    at,
    checkout,
    complete_checkout,
    current_license,
    deliver_paid_checkout,
    now_epoch,
    seed_plans,
    sign_up,
    stripe_customer_of,
)
from typer.testing import CliRunner, Result

from billfold.app import create_app
from billfold.cli import app as cli_app
from billfold.config import Settings
from billfold.jobs.worker import Worker
from billfold.kit.signing_keys import key_id, load_private_key, new_private_key_text
from billfold.registry import build_services
from billfold.services import Services
from billfold.subscriptions.licenses import InvalidLicense, verify

GRACE = timedelta(days=3)


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return dict(ON_FIRST_PAYMENT)


@pytest.fixture
def trial_member(client: TestClient, admin: dict[str, str]) -> Member:
    plan = {"code": "trial", "name": "Trial", "trialDays": 14, "features": TRIAL_FEATURES}
    client.post("/plans", json=plan, headers=admin).raise_for_status()
    return sign_up(client)


def _offline_claims(token: str, jwks: dict[str, Any]) -> dict[str, Any]:
    """What a host application does with a saved JWKS: PyJWT and cryptography only."""
    kid = jwt.get_unverified_header(token)["kid"]
    [jwk] = [k for k in jwks["keys"] if k["kid"] == kid]
    claims: dict[str, Any] = jwt.decode(
        token, jwt.PyJWK(jwk).key, algorithms=["EdDSA"], issuer="billfold"
    )
    return claims


def _tampered(token: str, **changes: Any) -> str:
    """The same token with claims changed and the original signature kept."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def _public_raw_b64(private_key_text: str) -> str:
    public = load_private_key(private_key_text).public_key()
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def test_a_paid_license_carries_our_ids_plan_features_status_and_expiry_never_a_stripe_id(
    client: TestClient,
    admin: dict[str, str],
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
) -> None:
    seed_plans(client, admin, stripe_api)
    member = sign_up(client)
    paid = complete_checkout(stripe_api, checkout(client, member)["checkout_url"])
    deliver_paid_checkout(client, paid)
    worker.run_until_idle()

    issued = current_license(client, member)
    token = issued["token"]
    header = jwt.get_unverified_header(token)
    assert (header["alg"], header["kid"]) == ("EdDSA", services.licenses.kid)
    claims = verify(token, services.licenses.public_keys())
    assert set(claims) == {
        "iss",
        "sub",
        "jti",
        "customer_id",
        "plan",
        "features",
        "status",
        "iat",
        "nbf",
        "exp",
    }
    assert (claims["customer_id"], claims["sub"], claims["jti"]) == (
        member.customer_id,
        member.customer_id,
        issued["id"],
    )
    assert (claims["plan"], claims["status"], claims["features"]) == (
        "starter",
        "active",
        STARTER_FEATURES,
    )
    assert abs(claims["iat"] - now_epoch()) <= 5
    assert claims["exp"] == int((at(paid.subscription["current_period_end"]) + GRACE).timestamp())
    written = json.dumps(claims) + json.dumps(header)
    for stripe_id in ("cus_", "sub_", "price_", "si_", "in_", "pi_", "cs_"):
        assert stripe_id not in written, stripe_id
    stripe_customer = stripe_customer_of(services, member.customer_id)
    assert stripe_customer is not None
    assert stripe_customer not in written


def test_anyone_can_verify_a_license_offline_from_the_jwks_or_the_public_key(
    client: TestClient, services: Services, trial_member: Member
) -> None:
    token = current_license(client, trial_member)["token"]
    jwks = client.get("/.well-known/jwks.json")  # no credentials needed
    published = client.get("/licenses/public-key")
    assert (jwks.status_code, published.status_code) == (200, 200)
    [jwk] = jwks.json()["keys"]
    assert (jwk["kty"], jwk["crv"], jwk["alg"]) == ("OKP", "Ed25519", "EdDSA")
    assert (
        jwk["kid"] == published.json()["data"]["keyId"] == jwt.get_unverified_header(token)["kid"]
    )

    claims = _offline_claims(token, jwks.json())
    assert (claims["customer_id"], claims["plan"], claims["status"], claims["features"]) == (
        trial_member.customer_id,
        "trial",
        "trialing",
        TRIAL_FEATURES,
    )
    pem = serialization.load_pem_public_key(published.json()["data"]["publicKeyPem"].encode())
    assert isinstance(pem, Ed25519PublicKey)
    assert jwt.decode(token, pem, algorithms=["EdDSA"], issuer="billfold") == claims

    forged = _tampered(token, plan="professional", features={"limits": {"projects": 10_000}})
    with pytest.raises(jwt.InvalidSignatureError):
        _offline_claims(forged, jwks.json())
    with pytest.raises(InvalidLicense):
        verify(forged, services.licenses.public_keys())
    via_api = client.post("/licenses/verify", json={"token": token})
    assert via_api.json()["data"] == {"valid": True, "claims": claims, "superseded": False}
    refused = client.post("/licenses/verify", json={"token": forged})
    assert (refused.status_code, refused.json()["error"]["code"]) == (400, "invalid_license")


def _cli(*args: str) -> Result:
    return CliRunner().invoke(
        cli_app, list(args), env={"LICENSE_PRIVATE_KEY": LICENSE_KEY, "COLUMNS": "200"}
    )


def test_license_verify_command_prints_the_claims_and_refuses_a_tampered_token(
    client: TestClient, trial_member: Member, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = current_license(client, trial_member)["token"]
    monkeypatch.chdir(tmp_path)  # no .env is read

    result = _cli("license", "verify", token)
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert (printed["customer_id"], printed["plan"], printed["status"]) == (
        trial_member.customer_id,
        "trial",
        "trialing",
    )

    forged = _cli("license", "verify", _tampered(token, status="active"))
    assert forged.exit_code == 1
    assert "Invalid license" in forged.output
    assert trial_member.customer_id not in forged.output

    pem_file = tmp_path / "billfold.pub.pem"
    pem_file.write_text(client.get("/licenses/public-key").json()["data"]["publicKeyPem"])
    assert _cli("license", "verify", token, "--public-key", str(pem_file)).exit_code == 0
    other = load_private_key(new_private_key_text()).public_key()
    pem_file.write_text(
        other.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()
    )
    unknown = _cli("license", "verify", token, "--public-key", str(pem_file))
    assert unknown.exit_code == 1
    assert "unknown_key" in unknown.output


def test_license_keygen_prints_a_usable_signing_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    first, second = _cli("license", "keygen"), _cli("license", "keygen")
    assert first.exit_code == 0
    keys = [load_private_key(r.output.strip()) for r in (first, second)]
    assert key_id(keys[0].public_key()) != key_id(keys[1].public_key())


@pytest.fixture
def rotated(settings: Settings, tmp_path: Path) -> Iterator[tuple[Services, TestClient]]:
    """The same database and Stripe, served after LICENSE_PRIVATE_KEY was replaced and the
    old public key put in LICENSE_PREVIOUS_PUBLIC_KEYS."""
    rotated_settings = make_settings(
        settings.database_url,
        str(settings.stripe_api_base),
        stripe_customer_creation="on_first_payment",
        mail_outbox_dir=tmp_path / "mail-rotated",
        license_private_key=new_private_key_text(),
        license_previous_public_keys=_public_raw_b64(LICENSE_KEY),
    )
    services = build_services(rotated_settings)
    with TestClient(create_app(services=services)) as client:
        yield services, client
    services.db.dispose()


def test_after_a_key_rotation_old_licenses_still_verify_and_the_jwks_lists_both_keys(
    client: TestClient,
    services: Services,
    trial_member: Member,
    rotated: tuple[Services, TestClient],
) -> None:
    old_token = current_license(client, trial_member)["token"]
    new_services, new_client = rotated
    old_kid, new_kid = services.licenses.kid, new_services.licenses.kid
    assert old_kid != new_kid

    jwks = new_client.get("/.well-known/jwks.json").json()
    assert [k["kid"] for k in jwks["keys"]] == [new_kid, old_kid]
    assert new_client.get("/licenses/public-key").json()["data"]["keyId"] == new_kid
    old_claims = verify(old_token, new_services.licenses.public_keys())
    assert old_claims["customer_id"] == trial_member.customer_id
    assert _offline_claims(old_token, jwks) == old_claims
    assert new_client.post("/licenses/verify", json={"token": old_token}).status_code == 200

    # A customer signing up now gets a license signed with the new key, which the old
    # key set does not know.
    newcomer = sign_up(new_client)
    new_token = current_license(new_client, newcomer)["token"]
    assert jwt.get_unverified_header(new_token)["kid"] == new_kid
    assert _offline_claims(new_token, jwks)["customer_id"] == newcomer.customer_id
    with pytest.raises(InvalidLicense) as unknown:
        verify(new_token, services.licenses.public_keys())
    assert unknown.value.code == "unknown_key"


def test_without_a_trial_plan_a_new_customer_has_no_subscription_and_no_license(
    client: TestClient,
) -> None:
    member = sign_up(client)
    missing = client.get("/subscriptions/me", headers=member.headers)
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "no_subscription")
    none = client.get("/licenses/me", headers=member.headers)
    assert (none.status_code, none.json()["error"]["code"]) == (404, "no_license")


def test_license_verify_without_a_key_says_which_setting_is_missing_and_exits_non_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env is read
    not_a_key = tmp_path / "not-a-key.pem"
    not_a_key.write_text("hello")

    keyless = CliRunner().invoke(
        cli_app, ["license", "verify", "a.b.c"], env={"LICENSE_PRIVATE_KEY": None}
    )
    bad_file = _cli("license", "verify", "a.b.c", "--public-key", str(not_a_key))

    assert keyless.exit_code == 2, keyless.output
    assert "LICENSE_PRIVATE_KEY" in keyless.output
    assert "--public-key" in keyless.output
    assert bad_file.exit_code == 2, bad_file.output
    assert "Cannot read the public key" in bad_file.output
    for result in (keyless, bad_file):
        assert isinstance(result.exception, SystemExit)  # a message, not a traceback
        assert "Traceback" not in result.output
