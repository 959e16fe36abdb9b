"""`billfold events backfill`: the events Stripe sent that never reached us are fetched, stored
once and applied; the ones we already hold are skipped by their event ID."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import stripe
import typer
from conftest import STRIPE_KEY, WEBHOOK_SECRET
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from support.payments import browser_pays, make_product
from support.stripe_events import delivery
from typer.testing import CliRunner

from billfold.cli import app as cli_app
from billfold.config import Settings
from billfold.jobs.worker import Worker
from billfold.payments.models import Payment
from billfold.reconcile.cli import parse_since
from billfold.services import Services
from billfold.webhooks.backfill import backfill_events
from billfold.webhooks.models import StripeEvent


def cli_env(settings: Settings) -> dict[str, str | None]:
    return {
        "DATABASE_URL": settings.database_url,
        "STRIPE_API_BASE": settings.stripe_api_base,
        "STRIPE_SECRET_KEY": STRIPE_KEY,
        "STRIPE_MAX_NETWORK_RETRIES": "0",
        "JWT_SECRET": "cli-jwt-secret-" + "z" * 32,
        "LICENSE_PRIVATE_KEY": os.environ["LICENSE_PRIVATE_KEY"],
        "COLUMNS": "200",
    }


def stored_ids(services: Services) -> list[str]:
    with services.db.transaction() as session:
        return list(session.scalars(select(StripeEvent.stripe_event_id)))


def paid_without_webhook(
    client: TestClient, admin: dict[str, str], buyer: dict[str, Any], stripe_api: Any
) -> dict[str, Any]:
    """A payment the customer completed in the browser whose webhook never reached us."""
    product = make_product(client, admin)
    body = {"productId": product["id"], "quantity": 1}
    response = client.post("/payments/create-intent", json=body, headers=buyer["headers"])
    data: dict[str, Any] = response.json()["data"]
    browser_pays(stripe_api, data["payment_intent_id"])
    return data


def payment_status(services: Services, payment_id: str) -> str:
    with services.db.transaction() as session:
        payment = session.get(Payment, payment_id)
        assert payment is not None
        return str(payment.status)


def test_backfill_stores_the_lost_success_event_once_and_the_worker_pays_the_order(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
) -> None:
    since = datetime.now(UTC) - timedelta(seconds=2)
    data = paid_without_webhook(client, admin, buyer, stripe_api)
    worker.run_until_idle()
    assert payment_status(services, data["paymentId"]) == "requires_payment_method"

    first = backfill_events(services, since)
    worker.run_until_idle()

    assert first.stored >= 1
    assert first.listed == first.stored + first.skipped
    assert payment_status(services, data["paymentId"]) == "succeeded"
    with services.db.transaction() as session:
        succeeded = session.scalars(
            select(StripeEvent).where(StripeEvent.type == "payment_intent.succeeded")
        ).all()
        ours = [e for e in succeeded if data["payment_intent_id"] in e.payload]
        assert [e.status for e in ours] == ["processed"]

    again = backfill_events(services, since)

    assert again.stored == 0
    assert again.skipped == again.listed >= first.listed
    ids = stored_ids(services)
    assert len(ids) == len(set(ids))


def test_backfill_skips_an_event_that_arrived_by_webhook(
    client: TestClient,
    buyer: dict[str, Any],
    services: Services,
    stripe_api: stripe.StripeClient,
) -> None:
    since = datetime.now(UTC) - timedelta(seconds=2)
    stripe_api.v1.customers.update(buyer["stripeCustomerId"], params={"name": "Ada King"})
    listed = stripe_api.v1.events.list(params={"created": {"gte": int(since.timestamp())}})
    update = next(e for e in listed.auto_paging_iter() if e.type == "customer.updated")
    body, headers = delivery(update.to_dict(), WEBHOOK_SECRET)
    assert client.post("/webhooks/stripe", content=body, headers=headers).status_code == 200

    result = backfill_events(services, since)

    assert result.skipped >= 1
    with services.db.transaction() as session:
        copies = session.scalar(
            select(func.count())
            .select_from(StripeEvent)
            .where(StripeEvent.stripe_event_id == update.id)
        )
    assert copies == 1


def test_events_backfill_command_reports_new_and_skipped(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    settings: Settings,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
) -> None:
    data = paid_without_webhook(client, admin, buyer, stripe_api)
    since = (datetime.now(UTC) - timedelta(seconds=30)).isoformat()

    first = CliRunner().invoke(
        cli_app, ["events", "backfill", "--since", since], env=cli_env(settings)
    )
    second = CliRunner().invoke(
        cli_app, ["events", "backfill", "--since", since], env=cli_env(settings)
    )
    worker.run_until_idle()

    assert first.exit_code == 0, first.output
    assert " 0 new" not in first.output
    assert "new, stored and queued" in first.output
    assert second.exit_code == 0, second.output
    assert " 0 new, stored and queued" in second.output
    assert payment_status(services, data["paymentId"]) == "succeeded"


def test_events_backfill_with_stripe_down_exits_1_and_stores_nothing(
    services: Services, settings: Settings, stripe_link: Any
) -> None:
    stripe_link.down()

    result = CliRunner().invoke(
        cli_app, ["events", "backfill", "--since", "1h"], env=cli_env(settings)
    )

    assert result.exit_code == 1
    assert "stripe_unavailable" in result.output
    assert stored_ids(services) == []


def test_since_takes_durations_and_iso_times() -> None:
    now = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    assert parse_since("90m", now) == now - timedelta(minutes=90)
    assert parse_since("24h", now) == now - timedelta(hours=24)
    assert parse_since("7d", now) == now - timedelta(days=7)
    assert parse_since("2026-11-01", now) == datetime(2026, 11, 1, tzinfo=UTC)
    assert parse_since("2026-11-01T09:30:00+01:00", now) == datetime(2026, 11, 1, 8, 30, tzinfo=UTC)
    with pytest.raises(typer.BadParameter):
        parse_since("yesterday", now)
