"""The `billfold` command: migrate, create-admin, api-keys, and serve refusing to start."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from conftest import STRIPE_KEY, make_settings
from factories import auth, register
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, inspect, pool, select
from typer.testing import CliRunner, Result

import billfold.models  # noqa: F401  (registers every table on Base.metadata)
from billfold.app import create_app
from billfold.auth.models import Role, User
from billfold.cli import app as cli_app
from billfold.cli import uvicorn_options
from billfold.kit.db import Base, Database
from billfold.standin import LocalStripe


@pytest.fixture
def db_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh SQLite file; the CLI runs from an empty directory so no `.env` is read."""
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    return f"sqlite:///{tmp_path / 'cli.db'}"


@pytest.fixture
def env(db_url: str) -> dict[str, str | None]:
    return {
        "DATABASE_URL": db_url,
        "STRIPE_SECRET_KEY": STRIPE_KEY,
        "STRIPE_PUBLISHABLE_KEY": "pk_test_billfold",
        "JWT_SECRET": "cli-jwt-secret-" + "z" * 32,
        "COLUMNS": "200",  # rich wraps tables to the terminal width
    }


@pytest.fixture
def api(db_url: str, localstripe: LocalStripe) -> Iterator[TestClient]:
    """The HTTP API over the very database the CLI writes to."""
    with TestClient(create_app(make_settings(db_url, localstripe.url))) as client:
        yield client


def _run(env: dict[str, str | None], *args: str) -> Result:
    return CliRunner().invoke(cli_app, list(args), env=env)


def _migrated(env: dict[str, str | None]) -> None:
    result = _run(env, "migrate")
    assert result.exit_code == 0, result.output


def _login(api: TestClient, email: str, password: str) -> Any:
    return api.post("/auth/login", json={"email": email, "password": password})


def test_migrate_creates_the_schema(env: dict[str, str | None], db_url: str) -> None:
    result = _run(env, "migrate")
    assert result.exit_code == 0, result.output
    assert "up to date" in result.output
    engine = create_engine(db_url, poolclass=pool.NullPool)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert tables == set(Base.metadata.tables) | {"alembic_version"}
    assert _run(env, "migrate").exit_code == 0  # running it again is harmless


def test_migrate_makes_the_trial_plan_once_so_a_new_customer_starts_on_the_trial(
    env: dict[str, str | None], api: TestClient
) -> None:
    first = _run(env, "migrate")
    assert first.exit_code == 0, first.output
    assert "Created the 'trial' plan" in first.output
    again = _run(env, "migrate")
    assert "Created the" not in again.output
    headers = auth(register(api)["access_token"])
    mine = api.get("/subscriptions/me", headers=headers)
    assert (mine.json()["data"]["plan"], mine.json()["data"]["status"]) == ("trial", "trialing")
    plans = api.get("/plans", headers=headers).json()["data"]
    assert [p["code"] for p in plans] == ["trial"]


def test_migrate_without_the_trial_plan_leaves_plans_to_the_admin(
    env: dict[str, str | None], db_url: str
) -> None:
    assert _run(env, "migrate", "--no-trial-plan").exit_code == 0
    engine = create_engine(db_url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("SELECT count(*) FROM plans").scalar() == 0
    finally:
        engine.dispose()


def test_create_admin_makes_an_admin_who_can_log_in(
    env: dict[str, str | None], api: TestClient
) -> None:
    _migrated(env)
    result = _run(env, "create-admin", "--email", "Boss@Example.com", "--password", "admin-pass-1")
    assert result.exit_code == 0, result.output

    login = _login(api, "boss@example.com", "admin-pass-1")
    assert login.status_code == 200, login.text
    assert login.json()["data"]["user"]["role"] == "admin"
    token = login.json()["data"]["access_token"]
    # Admin powers, not just a role label: it may read another user and create API keys.
    other = register(api)["user"]
    assert api.get(f"/users/{other['id']}", headers=auth(token)).status_code == 200
    assert api.post("/api-keys", json={"name": "k"}, headers=auth(token)).status_code == 201


def test_create_admin_promotes_an_existing_account(
    env: dict[str, str | None], api: TestClient, db_url: str
) -> None:
    _migrated(env)
    user = register(api, email="grace@example.com")["user"]
    result = _run(env, "create-admin", "--email", "GRACE@example.com", "--password", "new-pass-123")
    assert result.exit_code == 0, result.output

    db = Database(db_url)
    try:
        with db.transaction() as session:
            users = session.scalars(select(User)).all()
    finally:
        db.dispose()
    assert [(u.id, u.role) for u in users] == [(user["id"], Role.ADMIN)]
    assert _login(api, "grace@example.com", "new-pass-123").status_code == 200


def test_create_admin_with_a_short_password_fails_and_creates_nobody(
    env: dict[str, str | None], api: TestClient
) -> None:
    _migrated(env)
    result = _run(env, "create-admin", "--email", "boss@example.com", "--password", "short")
    assert result.exit_code != 0
    assert "8 characters" in result.output
    assert _login(api, "boss@example.com", "short").status_code == 401


def test_api_key_created_by_the_cli_authenticates_until_revoked(
    env: dict[str, str | None], api: TestClient
) -> None:
    _migrated(env)
    user = register(api, name="Served")["user"]

    created = _run(env, "api-keys", "create", "--name", "host backend")
    assert created.exit_code == 0, created.output
    key = created.output.strip().splitlines()[-1]
    assert key.startswith("bf_sk_")
    assert created.output.count(key) == 1

    got = api.get(f"/users/{user['id']}", headers=auth(key))
    assert got.status_code == 200, got.text
    assert got.json()["data"]["name"] == "Served"

    listed = _run(env, "api-keys", "list")
    assert listed.exit_code == 0, listed.output
    assert "host backend" in listed.output
    assert key not in listed.output
    assert key[len("bf_sk_") + 4 :] not in listed.output
    lookup = api.get("/customers", params={"customerId": user["customerId"]}, headers=auth(key))
    assert lookup.status_code == 200
    assert [c["userId"] for c in lookup.json()["data"]] == [user["id"]]

    key_ids = [word for word in listed.output.split() if word.startswith("key_")]
    assert len(key_ids) == 1
    assert key_ids[0] in created.output
    revoked = _run(env, "api-keys", "revoke", key_ids[0])
    assert revoked.exit_code == 0, revoked.output

    refused = api.get(f"/users/{user['id']}", headers=auth(key))
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_api_key"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """`serve` configures structlog for the process; put the test run's set-up back."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.mark.usefixtures("restore_logging")
def test_serve_without_jwt_secret_exits_2_naming_it(env: dict[str, str | None]) -> None:
    _migrated(env)
    # Create_app checks the required settings before uvicorn.run, so nothing is served.
    result = _run({**env, "JWT_SECRET": None}, "serve", "--port", "1")
    assert result.exit_code == 2, result.output
    assert "JWT_SECRET" in result.output
    assert "STRIPE_SECRET_KEY" not in result.output


def test_serve_writes_no_access_log_unless_asked_and_dev_always_does(db_url: str) -> None:
    quiet = make_settings(db_url, "http://127.0.0.1:1")
    asked = make_settings(db_url, "http://127.0.0.1:1", access_log=True)

    assert uvicorn_options(quiet)["access_log"] is False
    assert uvicorn_options(asked)["access_log"] is True
    assert uvicorn_options(quiet, dev=True)["access_log"] is True
