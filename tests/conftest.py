"""Real parts for every test: SQLite and a throwaway PostgreSQL, and a localstripe server.

Each test gets a fresh, migrated database (copied from a template migrated once per session)
and a FaultyLink in front of localstripe, so a test can take Stripe "down" at will.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import stripe
from factories import admin_token, auth, signed_up
from fastapi.testclient import TestClient
from psycopg import sql
from support.netfault import FaultyLink
from support.pgbouncer import ThrowawayPgBouncer
from support.postgres import ThrowawayPostgres
from support.stripe_events import EventRelay

from billfold import migrations
from billfold.app import create_app
from billfold.config import Settings
from billfold.jobs.worker import Worker
from billfold.registry import build_services, build_worker
from billfold.services import Services
from billfold.standin import LocalStripe

WEBHOOK_SECRET = "whsec_test_billfold"
# A fixed Ed25519 test key (base64 of the raw seed) that signs licenses; subprocesses the
# tests start (workers) inherit it through the environment.
LICENSE_KEY = "bGljZW5zZS1zaWduaW5nLWtleS1mb3ItdGVzdHMtMDE="
os.environ.setdefault("LICENSE_PRIVATE_KEY", LICENSE_KEY)
STRIPE_KEY = "sk_test_billfold"
# Set it to also run the `stripe_facing` tests against Stripe's own test mode.
REAL_STRIPE_KEY = os.environ.get("STRIPE_TEST_SECRET_KEY", "").strip()
DATABASES = [
    d.strip() for d in os.environ.get("BILLFOLD_TEST_DATABASES", "sqlite").split(",") if d.strip()
]


@pytest.fixture(scope="session")
def localstripe() -> Iterator[LocalStripe]:
    with LocalStripe.start() as server:
        yield server


@pytest.fixture(scope="session")
def postgres() -> Iterator[ThrowawayPostgres]:
    with ThrowawayPostgres.start() as server:
        yield server


@pytest.fixture(scope="session")
def pgbouncer(postgres: ThrowawayPostgres) -> Iterator[ThrowawayPgBouncer]:
    bouncer = ThrowawayPgBouncer.start(postgres)
    yield bouncer
    bouncer.stop()


# A database reached through PgBouncer → its direct URL (where workers LISTEN).
_POOLED: dict[str, str] = {}


@pytest.fixture(scope="session")
def template_databases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One migrated database per engine, copied for each test (much faster than migrating)."""
    return {}


def _sqlite_url(template_dir: Path, tmp_path: Path, cache: dict[str, Any]) -> str:
    if "sqlite" not in cache:
        template = template_dir / "template.db"
        migrations.upgrade(f"sqlite:///{template}")
        cache["sqlite"] = template
    target = tmp_path / "billfold.kit.db"
    shutil.copy(cache["sqlite"], target)
    return f"sqlite:///{target}"


def _postgres_url(server: ThrowawayPostgres, cache: dict[str, Any]) -> str:
    conninfo = f"host=127.0.0.1 port={server.port} user=postgres dbname=postgres"
    if "postgresql" not in cache:
        server.create_database("billfold_template")
        migrations.upgrade(server.url_for("billfold_template"))
        cache["postgresql"] = "billfold_template"
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(cache["postgresql"])
            )
        )
    return server.url_for(name)


@pytest.fixture(params=DATABASES)
def database_url(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    template_databases: dict[str, Any],
) -> str:
    if request.param == "sqlite":
        if request.node.get_closest_marker("postgres_only"):
            pytest.skip("needs PostgreSQL")
        return _sqlite_url(tmp_path_factory.getbasetemp(), tmp_path, template_databases)
    if request.node.get_closest_marker("sqlite_only"):
        pytest.skip("SQLite-only behaviour")
    if request.param == "pgbouncer" and not request.node.get_closest_marker("pgbouncer"):
        pytest.skip("not in the PgBouncer subset (mark it `pgbouncer`)")
    server: ThrowawayPostgres = request.getfixturevalue("postgres")
    direct = _postgres_url(server, template_databases)
    if request.param != "pgbouncer":
        return direct
    bouncer: ThrowawayPgBouncer = request.getfixturevalue("pgbouncer")
    pooled = bouncer.url_for(direct.rsplit("/", 1)[1])
    _POOLED[pooled] = direct
    return pooled


@pytest.fixture
def stripe_link(localstripe: LocalStripe) -> Iterator[FaultyLink]:
    """The app's way to Stripe: call .down(), .drop_responses(), .hold_responses(), .up()."""
    with FaultyLink.start("127.0.0.1", localstripe.port) as link:
        yield link


def make_settings(database_url: str, stripe_base: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "stripe_api_base": stripe_base,
        "stripe_secret_key": STRIPE_KEY,
        "stripe_publishable_key": "pk_test_billfold",
        "stripe_webhook_secret": WEBHOOK_SECRET,
        "jwt_secret": "test-jwt-secret-" + "x" * 32,
        "license_private_key": LICENSE_KEY,
        "stripe_timeout_seconds": 3.0,
        "stripe_max_network_retries": 0,
        "stripe_inline_timeout_seconds": 2.0,
        "customer_link_lease_seconds": 4.0,
        "job_lease_seconds": 4.0,
        "job_backoff_base_seconds": 0.01,
        "job_backoff_max_seconds": 0.05,
        "job_poll_seconds": 0.05,
        # Tests sign many users up and in from one address; tests of the limits set their own.
        "rate_limit_login": "100000/minute",
        "rate_limit_signup": "100000/minute",
        "rate_limit_account_mail": "100000/minute",
    }
    if database_url in _POOLED:  # through PgBouncer in transaction-pooling mode
        values["database_transaction_pooler"] = True
        values["job_listen_url"] = _POOLED[database_url]
    values.update(overrides)
    return Settings(_env_file=None, **values)


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Override in a test module (or with indirect parametrisation) to change settings."""
    return {}


@pytest.fixture
def settings(
    database_url: str,
    stripe_link: FaultyLink,
    settings_overrides: dict[str, Any],
    tmp_path: Path,
) -> Settings:
    return make_settings(
        database_url,
        stripe_link.url,
        **{"mail_outbox_dir": tmp_path / "mail", **settings_overrides},
    )


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    built = build_services(settings)
    yield built
    built.db.dispose()


@pytest.fixture
def worker(services: Services) -> Worker[Services]:
    return build_worker(services, name="test-worker")


@pytest.fixture
def client(services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services=services)) as test_client:
        yield test_client


@pytest.fixture
def admin(client: TestClient, services: Services) -> dict[str, str]:
    """Auth headers of a freshly made admin."""
    return auth(admin_token(client, services))


@pytest.fixture
def buyer(client: TestClient) -> dict[str, Any]:
    """A registered user (with a Stripe customer): their user object plus `headers`."""
    return signed_up(client)


@pytest.fixture
def stripe_api(localstripe: LocalStripe) -> stripe.StripeClient:
    """Straight to localstripe, bypassing Billfold and the FaultyLink: to check Stripe's state."""
    return stripe.StripeClient(
        STRIPE_KEY,
        base_addresses={"api": localstripe.url},
        http_client=stripe.HTTPXClient(allow_sync_methods=True),
    )


@pytest.fixture
def stripe_events(stripe_api: stripe.StripeClient) -> EventRelay:
    """The stand-in's events from now on, to relay to Billfold: `stripe_events.relay(client)`."""
    return EventRelay(stripe_api, WEBHOOK_SECRET)


@pytest.fixture(params=["standin", "stripe"])
def stripe_facing(request: pytest.FixtureRequest) -> stripe.StripeClient:
    """A Stripe client for a test of Stripe's own behaviour (mark it `stripe_facing`): the
    stand-in, and Stripe's test mode too when STRIPE_TEST_SECRET_KEY is set."""
    if request.param == "standin":
        standin: LocalStripe = request.getfixturevalue("localstripe")
        return stripe.StripeClient(
            STRIPE_KEY,
            base_addresses={"api": standin.url},
            http_client=stripe.HTTPXClient(allow_sync_methods=True),
        )
    if not REAL_STRIPE_KEY:
        pytest.skip("STRIPE_TEST_SECRET_KEY is not set: real Stripe not tried")
    if not REAL_STRIPE_KEY.startswith(("sk_test_", "rk_test_")):
        pytest.fail("STRIPE_TEST_SECRET_KEY must be a test-mode key (sk_test_…)")
    return stripe.StripeClient(
        REAL_STRIPE_KEY, http_client=stripe.HTTPXClient(allow_sync_methods=True)
    )
