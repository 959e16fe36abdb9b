"""The recovery commands: `billfold reconcile` and `billfold events backfill`.

Thin: parse the options, call the service, print what it answers.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from billfold.reconcile.drift import Drift
from billfold.reconcile.service import Report, reconcile
from billfold.services import Services
from billfold.stripe_gateway import StripeFailure
from billfold.webhooks.backfill import backfill_events

console = Console()
# Stripe keeps events for 30 days: an older start cannot find more.
STRIPE_EVENT_RETENTION = timedelta(days=30)
_DURATION = re.compile(r"^(\d+)\s*([mhd])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}
# Fewer records than this are compared without a progress bar.
PROGRESS_FROM = 25


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


def add_recovery_commands(app: typer.Typer, build_services: Callable[[], Services]) -> None:
    """Add `billfold events backfill` and `billfold reconcile` to `app`; they run on what
    `build_services()` answers (the CLI's services, with the application's wiring)."""
    events_cli = typer.Typer(help="Stripe's events: bring in the ones Billfold never stored.")
    app.add_typer(events_cli, name="events")

    def events_backfill(
        since: Annotated[
            str, typer.Option(help="From when: a duration (24h, 7d) or an ISO date/time")
        ],
    ) -> None:
        """Fetch Stripe's events since a time and store those the inbox lacks (the worker
        processes them as it does webhooks); events already stored are skipped by ID."""
        start = parse_since(since)
        oldest = datetime.now(UTC) - STRIPE_EVENT_RETENTION
        if start < oldest:
            console.print("[yellow]Stripe keeps events for 30 days: starting 30 days ago.[/yellow]")
            start = oldest
        services = build_services()
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

    def reconcile_command(
        fix: Annotated[
            bool, typer.Option("--fix", help="Repair what can safely be repaired; list the rest")
        ] = False,
        since: Annotated[
            str | None,
            typer.Option(help="Only records created or changed since: 24h, 7d, or an ISO time"),
        ] = None,
        quiet: Annotated[
            float, typer.Option(help="Leave out records changed in the last SECONDS (in flight)")
        ] = 60.0,
    ) -> None:
        """Compare Billfold with Stripe (customers, cards, payments and refunds, subscriptions),
        print the differences, and with --fix repair them through the webhook handlers.

        Exits 0 when nothing differs (or everything was fixed), 1 when differences remain.
        """
        start = parse_since(since) if since else None
        services = build_services()
        try:
            with Progress(
                TextColumn("Comparing with Stripe"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            ) as bar:
                task = bar.add_task("compare", total=None, visible=False)

                def advance(done: int, total: int) -> None:
                    bar.update(task, completed=done, total=total, visible=total >= PROGRESS_FROM)

                report = reconcile(
                    services, since=start, fix=fix, quiet_seconds=quiet, progress=advance
                )
        finally:
            services.db.dispose()
        _print_report(report, fixing=fix)
        if report.remaining:
            raise typer.Exit(1)

    events_cli.command("backfill")(events_backfill)
    app.command("reconcile")(reconcile_command)


def _print_report(report: Report, *, fixing: bool) -> None:
    if not report.drift:
        console.print(f"Checked {report.checked} record(s): Billfold and Stripe agree.")
        return
    table = Table("kind", "ours", "stripe", "problem", "detail", "fix" if fixing else "repair")
    for drift in report.drift:
        table.add_row(
            drift.kind,
            drift.ours,
            drift.stripe_id or "—",
            drift.problem,
            drift.detail,
            _fix_column(drift, fixing=fixing),
        )
    console.print(table)
    summary = f"Checked {report.checked} record(s): {len(report.drift)} difference(s)"
    if fixing:
        summary += f", {len(report.fixed)} fixed, {len(report.remaining)} left for a person."
    else:
        repairable = sum(1 for d in report.drift if d.repair)
        summary += f", {repairable} repairable with --fix."
    console.print(summary)


def _fix_column(drift: Drift, *, fixing: bool) -> str:
    if drift.repair is None:
        return "needs a person"
    if fixing:
        return drift.outcome or ""
    return drift.repair.describe
