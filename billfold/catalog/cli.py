"""`billfold catalog apply FILE [--dry-run]` and `billfold catalog export [FILE]`.

Thin: read the file, call the sync, print what changed as a table.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from billfold.catalog import sync
from billfold.catalog.spec import CatalogInvalid, parse_catalog, to_toml
from billfold.kit.errors import BillfoldError
from billfold.services import Services

catalog_cli = typer.Typer(help="Catalog as code: plans, credit packages and products.")
console = Console()


def _services(ctx: typer.Context) -> Services:
    """The CLI's services, with the application's wiring: billfold/cli.py hands in the
    builder as the context object (`add_typer(..., context_settings={"obj": ...})`)."""
    build: Callable[[], Services] = ctx.obj
    return build()


def changes_table(changes: list[sync.Change], *, title: str) -> Table:
    table = Table(title=title)
    for column in ("What", "Which", "Change", "Detail"):
        table.add_column(column)
    for change in changes:
        table.add_row(change.subject, change.name, change.action, change.detail)
    return table


def apply_file(services: Services, path: Path, *, dry_run: bool) -> list[sync.Change]:
    """Read, check and apply (or only compare) a catalog file; prints the changes."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogInvalid(f"Cannot read {path}: {exc.strerror}") from exc
    catalog = parse_catalog(text)
    if dry_run:
        found = sync.changes(services, catalog)
        verb = "would change"
    else:
        found = sync.apply(services, catalog)
        verb = "changed"
    if found:
        console.print(changes_table(found, title=f"{path.name}: {len(found)} {verb}"))
    else:
        console.print(f"{path.name}: Billfold and Stripe already agree with it; nothing to do.")
    return found


@catalog_cli.command("apply")
def apply_command(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="The catalog file (TOML)")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would change; change nothing")
    ] = False,
) -> None:
    """Make Billfold and Stripe agree with a catalog file: plans (and their Stripe products and
    prices), credit packages, products. Never deletes; a price whose amount changed is
    replaced by a new one and the old one retired, its subscriptions carrying on."""
    services = _services(ctx)
    try:
        apply_file(services, path, dry_run=dry_run)
    except BillfoldError as exc:
        console.print(f"[red]{exc.message} ({exc.code})[/red]")
        raise typer.Exit(1) from exc


@catalog_cli.command("export")
def export_command(
    ctx: typer.Context,
    path: Annotated[
        Path | None, typer.Argument(help="Where to write it (default: print it)")
    ] = None,
) -> None:
    """Write the current catalog as a file `apply` takes."""
    services = _services(ctx)
    try:
        text = to_toml(sync.export(services))
    except BillfoldError as exc:
        console.print(f"[red]{exc.message} ({exc.code})[/red]")
        raise typer.Exit(1) from exc
    if path is None:
        print(text, end="")
    else:
        path.write_text(text, encoding="utf-8")
        console.print(f"Catalog written to {path}")
