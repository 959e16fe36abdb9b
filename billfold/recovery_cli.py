"""The recovery commands: `billfold reconcile` and `billfold events backfill`.

Thin: parse the options, call the service, print what it answers.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from rich.console import Console

from billfold.config import MissingSettings, Settings
from billfold.services import Services
from billfold.stripe_gateway import StripeFailure
from billfold.webhooks.backfill import backfill_events

events_cli = typer.Typer(help="Stripe's events: bring in the ones Billfold never stored.")
console = Console()
# Stripe keeps events for 30 days: an older start cannot find more.
STRIPE_EVENT_RETENTION = timedelta(days=30)
_DURATION = re.compile(r"^(\d+)\s*([mhd])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`90m`, `24h`, `7d` (that long ago), or an ISO date or time (UTC unless it says)."""
    now = now or datetime.now(UTC)
    duration = _DURATION.match(text.strip().lower())
    if duration:
        return now - timedelta(**{_UNITS[duration.group(2)]: int(duration.group(1))})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise typer.BadParameter(
            "use a duration (90m, 24h, 7d) or an ISO date/time (2026-11-01T09:00Z)"
        ) from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _services() -> Services:
    try:
        return Services.build(Settings())
    except MissingSettings as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc


@events_cli.command("backfill")
def events_backfill(
    since: Annotated[str, typer.Option(help="From when: a duration (24h, 7d) or an ISO date/time")],
) -> None:
    """Fetch Stripe's events since a time and store those the inbox lacks (the worker
    processes them as it does webhooks); events already stored are skipped by ID."""
    start = parse_since(since)
    oldest = datetime.now(UTC) - STRIPE_EVENT_RETENTION
    if start < oldest:
        console.print("[yellow]Stripe keeps events for 30 days: starting 30 days ago.[/yellow]")
        start = oldest
    services = _services()
    try:
        result = backfill_events(services, start)
    except StripeFailure as exc:
        console.print(f"[red]Stripe: {exc.message} ({exc.code})[/red]")
        raise typer.Exit(1) from exc
    finally:
        services.db.dispose()
    console.print(
        f"Stripe has {result.listed} event(s) since {start:%Y-%m-%d %H:%M:%S} UTC: "
        f"{result.stored} new, stored and queued; {result.skipped} already stored."
    )
