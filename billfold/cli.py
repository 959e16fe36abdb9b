"""The `billfold` command: serve, worker, migrate, dev, and admin commands."""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from billfold import migrations
from billfold.auth import service as auth
from billfold.auth.models import Role, User
from billfold.catalog.cli import apply_file, catalog_cli
from billfold.config import MissingSettings, Settings
from billfold.customers import service as customers
from billfold.jobs import admin as jobs_admin
from billfold.jobs import queue
from billfold.jobs.models import JobStatus
from billfold.kit.db import Database
from billfold.kit.errors import BillfoldError, NotFound
from billfold.kit.observability import configure_logging
from billfold.kit.paging import MAX_LIMIT
from billfold.kit.signing_keys import new_private_key_text
from billfold.reconcile.cli import add_recovery_commands
from billfold.services import Services

app = typer.Typer(help="Billfold: billing beside your SaaS backend.", no_args_is_help=True)
api_keys = typer.Typer(help="Service API keys for the host application's backend.")
app.add_typer(api_keys, name="api-keys")
license_cli = typer.Typer(help="License tokens: verify one offline, make a signing key.")
app.add_typer(license_cli, name="license")
jobs_cli = typer.Typer(help="Durable jobs: see them, and run dead ones again.")
app.add_typer(jobs_cli, name="jobs")
webhook_cli = typer.Typer(help="Outbound webhook endpoints: add, list, change, their log.")
app.add_typer(webhook_cli, name="webhook-endpoints")
console = Console()
DEV_DATABASE = "billfold-dev.db"
EXAMPLE_CATALOG = Path(__file__).resolve().parent.parent / "catalog.example.toml"


def _settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except MissingSettings as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc


def _database(settings: Settings) -> Database:
    return Database(settings.database_url, transaction_pooler=settings.database_transaction_pooler)


def _services(settings: Settings | None = None) -> Services:
    from billfold.registry import build_services

    try:
        return build_services(settings or Settings())
    except MissingSettings as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc


add_recovery_commands(app, _services)
app.add_typer(catalog_cli, name="catalog", context_settings={"obj": _services})


@app.command()
def migrate(
    trial_plan: Annotated[
        bool, typer.Option(help="Create the free `trial` plan if there is no plan of that code")
    ] = True,
) -> None:
    """Bring the database schema up to date (and make sure a `trial` plan exists)."""
    settings = _settings()
    migrations.upgrade(settings.database_url)
    console.print(f"Database is up to date: {_safe_url(settings.database_url)}")
    if trial_plan:
        _ensure_trial_plan(settings)


def _ensure_trial_plan(settings: Settings) -> None:
    """A fresh install grants new customers the trial (and its license) at sign-up."""
    from billfold.subscriptions.plans import TRIAL, ensure_trial_plan

    with _database(settings).transaction() as session:
        made = ensure_trial_plan(session, actor="cli")
    if made:
        console.print(f"Created the {TRIAL!r} plan: new customers start on a free trial.")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8000,
    worker: Annotated[bool, typer.Option(help="Run a job worker in this process")] = True,
    processes: Annotated[
        int, typer.Option("--workers", min=1, max=64, help="HTTP server processes")
    ] = 1,
) -> None:
    """Serve the HTTP API (and, unless --no-worker, a job worker in each process)."""
    settings = _settings()
    configure_logging(settings.log_json)
    if processes == 1:
        _serve(settings, host, port, run_worker=worker)
        return
    # Several processes: each builds its own app from the environment.
    os.environ["SERVE_JOB_WORKER"] = "true" if worker else "false"
    uvicorn.run(
        "billfold.app:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=processes,
        **uvicorn_options(settings),
    )


def uvicorn_options(settings: Settings, *, dev: bool = False) -> dict[str, Any]:
    """What every `uvicorn.run` of ours is given: the log level, and the access log when
    ACCESS_LOG asks for it (always under `billfold dev`)."""
    return {"log_level": "info", "access_log": dev or settings.access_log}


def _serve(
    settings: Settings, host: str, port: int, *, run_worker: bool, dev: bool = False
) -> None:
    from billfold.app import create_app

    try:
        application = create_app(settings, run_worker=run_worker)
    except MissingSettings as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    uvicorn.run(application, host=host, port=port, **uvicorn_options(settings, dev=dev))


@app.command()
def worker(
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Worker threads")] = 1,
) -> None:
    """Run job workers until interrupted (any number of these may run at once)."""
    from billfold.registry import build_worker

    settings = _settings()
    configure_logging(settings.log_json)
    services = _services(settings)
    stop = threading.Event()
    threads = [build_worker(services).start_in_thread(stop) for _ in range(concurrency)]
    console.print(f"{concurrency} worker(s) running; Ctrl-C to stop.")
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(timeout=0.5)
    except KeyboardInterrupt:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)


@app.command("create-admin")
def create_admin(
    email: Annotated[str, typer.Option(help="The admin's e-mail")],
    password: Annotated[str, typer.Option(help="At least 8 characters")],
    name: Annotated[str, typer.Option(help="Display name")] = "Admin",
) -> None:
    """Create an admin account (or promote the account with that e-mail)."""
    if len(password) < 8:
        console.print("[red]The password needs at least 8 characters.[/red]")
        raise typer.Exit(2)
    db = _database(_settings())
    _create_admin(db, email, password, name)
    console.print(f"Admin ready: {email}")


def _create_admin(db: Database, email: str, password: str, name: str) -> None:
    from billfold.registry import build_wiring

    with db.transaction() as session:
        existing = session.scalar(select(User).where(User.email_normalized == email.lower()))
        if existing is not None:
            existing.role = Role.ADMIN
            auth.set_password(
                session, build_wiring(), existing, password, actor="cli", via="create-admin"
            )
            return
        customers.register(session, name=name, email=email, password=password, role=Role.ADMIN)


@api_keys.command("create")
def api_keys_create(name: Annotated[str, typer.Option(help="What the key is for")]) -> None:
    """Create a service API key and print it once."""
    db = _database(_settings())
    with db.transaction() as session:
        key, plaintext = auth.create_api_key(session, name, actor="cli")
    console.print(f"Created API key {key.id} ({name}). It is shown only now:")
    print(plaintext)


@api_keys.command("list")
def api_keys_list() -> None:
    """List service API keys (never their secrets)."""
    db = _database(_settings())
    with db.transaction() as session:
        keys = auth.list_api_keys(session)
        table = Table("id", "name", "prefix", "created", "revoked")
        for k in keys:
            table.add_row(
                k.id,
                k.name,
                k.prefix + "…",
                f"{k.created_at:%Y-%m-%d %H:%M}",
                str(k.revoked_at or ""),
            )
    console.print(table)


@api_keys.command("revoke")
def api_keys_revoke(key_id: str) -> None:
    """Revoke a service API key."""
    db = _database(_settings())
    try:
        with db.transaction() as session:
            auth.revoke_api_key(session, key_id, actor="cli")
    except NotFound as exc:
        console.print(f"[red]{exc.message}: {key_id}[/red]")
        raise typer.Exit(1) from exc
    console.print(f"Revoked {key_id}")


@jobs_cli.command("list")
def jobs_list(
    status: Annotated[
        JobStatus | None, typer.Option(help="Only jobs in this state (e.g. dead)")
    ] = None,
    kind: Annotated[str | None, typer.Option(help="Only jobs of this kind")] = None,
    limit: Annotated[int, typer.Option(min=1, max=MAX_LIMIT)] = 50,
) -> None:
    """List jobs, newest first, with each state's count."""
    db = _database(_settings())
    with db.transaction() as session:
        counts = queue.depth(session)
        page = jobs_admin.list_jobs(
            session, jobs_admin.JobFilter(status=status, kind=kind), limit=limit, offset=0
        )
        table = Table("id", "kind", "status", "tries", "run at", "last error")
        for job in page.items:
            table.add_row(
                job.id,
                job.kind,
                str(job.status),
                f"{job.attempts}/{job.max_attempts}",
                f"{job.run_at:%Y-%m-%d %H:%M:%S}",
                (job.last_error or "")[:60],
            )
    console.print(table)
    console.print(
        ", ".join(f"{state}: {counts.get(str(state), 0)}" for state in JobStatus)
        + f" (showing {len(page.items)} of {page.total})"
    )


@jobs_cli.command("retry")
def jobs_retry(
    job_id: Annotated[str | None, typer.Argument(help="The dead job to run again")] = None,
    all_dead: Annotated[bool, typer.Option("--all-dead", help="Every dead job")] = False,
    kind: Annotated[str | None, typer.Option(help="With --all-dead: only this kind")] = None,
) -> None:
    """Run a dead job (or every dead job) again from its first try; audited."""
    if (job_id is None) == (not all_dead):
        console.print("[red]Give a job ID, or --all-dead.[/red]")
        raise typer.Exit(2)
    db = _database(_settings())
    try:
        with db.transaction() as session:
            if job_id is not None:
                retried = [jobs_admin.retry(session, job_id, actor="cli").id]
            else:
                retried = jobs_admin.retry_all_dead(session, actor="cli", kind=kind)
    except BillfoldError as exc:
        console.print(f"[red]{exc.message}: {job_id}[/red]")
        raise typer.Exit(1) from exc
    for retried_id in retried:
        console.print(f"Retrying {retried_id}")
    console.print(f"{len(retried)} job(s) queued again.")


EventTypesOption = Annotated[
    list[str] | None,
    typer.Option("--event-type", help="Send only this event type (repeat for more)"),
]


@webhook_cli.command("create")
def webhook_create(
    url: Annotated[str, typer.Option(help="Where to POST events")],
    event_types: EventTypesOption = None,
    description: Annotated[str | None, typer.Option(help="What it is for")] = None,
) -> None:
    """Add an endpoint and print its signing secret once."""
    from billfold.webhooks.outbound import endpoints
    from billfold.webhooks.outbound.urls import check_url

    settings = _settings()
    with _cli_errors():
        checked = check_url(url, settings.webhook_allow_private_urls)  # DNS: no transaction open
    with _cli_errors(), _database(settings).transaction() as session:
        created = endpoints.create(
            session,
            settings,
            url=checked,
            event_types=event_types,
            description=description,
            actor="cli",
        )
        endpoint_id = created.endpoint.id
    console.print(f"Created webhook endpoint {endpoint_id}. Its signing secret is shown only now:")
    print(created.secret)


@webhook_cli.command("list")
def webhook_list() -> None:
    """List endpoints (never their secrets)."""
    from billfold.webhooks.outbound import endpoints

    with _database(_settings()).transaction() as session:
        table = Table("id", "url", "event types", "enabled", "disabled because")
        for e in endpoints.list_endpoints(session):
            table.add_row(
                e.id,
                e.url,
                ", ".join(e.event_types) if e.event_types else "all",
                "yes" if e.enabled else "no",
                e.disabled_reason or "",
            )
    console.print(table)


@webhook_cli.command("update")
def webhook_update(
    endpoint_id: str,
    url: Annotated[str | None, typer.Option(help="A new URL")] = None,
    event_types: EventTypesOption = None,
    all_event_types: Annotated[bool, typer.Option(help="Send every event type")] = False,
    enabled: Annotated[bool | None, typer.Option("--enable/--disable")] = None,
) -> None:
    """Change an endpoint's URL or event types, or enable or disable it."""
    from billfold.webhooks.outbound import endpoints
    from billfold.webhooks.outbound.urls import check_url

    settings = _settings()
    with _cli_errors():  # DNS: no transaction open
        checked = None if url is None else check_url(url, settings.webhook_allow_private_urls)
    changes = endpoints.EndpointChanges(
        url=checked, event_types=event_types, all_event_types=all_event_types, enabled=enabled
    )
    with _cli_errors(), _database(settings).transaction() as session:
        endpoint = endpoints.update(session, endpoint_id, changes, "cli")
        state = "enabled" if endpoint.enabled else "disabled"
    console.print(f"Updated {endpoint_id} ({state})")


@webhook_cli.command("delete")
def webhook_delete(endpoint_id: str) -> None:
    """Remove an endpoint and its delivery log."""
    from billfold.webhooks.outbound import endpoints

    with _cli_errors(), _database(_settings()).transaction() as session:
        endpoints.delete(session, endpoint_id, "cli")
    console.print(f"Deleted {endpoint_id}")


@webhook_cli.command("rotate-secret")
def webhook_rotate(endpoint_id: str) -> None:
    """A new signing secret (printed once); the old one keeps signing for the overlap."""
    from billfold.webhooks.outbound import endpoints

    settings = _settings()
    with _cli_errors(), _database(settings).transaction() as session:
        rotated = endpoints.rotate_secret(session, settings, endpoint_id, "cli")
    console.print(
        f"New secret for {endpoint_id}; the old one also signs for "
        f"{settings.webhook_secret_overlap_hours:g} h. It is shown only now:"
    )
    print(rotated.secret)


@webhook_cli.command("deliveries")
def webhook_deliveries(
    endpoint_id: str,
    limit: Annotated[int, typer.Option(min=1, max=500, help="How many, newest first")] = 50,
) -> None:
    """An endpoint's delivery log."""
    from billfold.webhooks.outbound import endpoints

    with _cli_errors(), _database(_settings()).transaction() as session:
        table = Table("delivery", "event", "type", "status", "tries", "last answer", "created")
        for view in endpoints.deliveries(session, endpoint_id, before=None, limit=limit):
            d = view.delivery
            table.add_row(
                d.id,
                view.event_id,
                view.event_type,
                str(d.status),
                str(d.attempts),
                str(d.last_status_code or d.last_error or ""),
                f"{d.created_at:%Y-%m-%d %H:%M:%S}",
            )
    console.print(table)


@webhook_cli.command("redeliver")
def webhook_redeliver(endpoint_id: str, delivery_id: str) -> None:
    """Send a delivery's event again, with the same webhook-id."""
    from billfold.webhooks.outbound import endpoints

    with _cli_errors(), _database(_settings()).transaction() as session:
        view = endpoints.redeliver(session, endpoint_id, delivery_id, "cli")
        new_id = view.delivery.id
    console.print(f"Queued {new_id}")


@contextmanager
def _cli_errors() -> Iterator[None]:
    """A domain error ends the command with its message and exit code 1."""
    try:
        yield
    except BillfoldError as exc:
        console.print(f"[red]{exc.message} ({exc.code})[/red]")
        raise typer.Exit(1) from exc


@app.command()
def dev(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8000,
    catalog: Annotated[
        Path, typer.Option(help="The catalog to apply (plans, credit packages, products)")
    ] = EXAMPLE_CATALOG,
) -> None:
    """The demo: SQLite, a local Stripe stand-in, an admin; no keys needed.

    The stand-in keeps its data in memory, so the demo database starts afresh each run too.
    """
    from billfold.standin import LocalStripe

    configure_logging()
    for leftover in (DEV_DATABASE, f"{DEV_DATABASE}-wal", f"{DEV_DATABASE}-shm"):
        Path(leftover).unlink(missing_ok=True)
    standin = LocalStripe.start()
    try:
        webhook_secret = "whsec_dev_" + secrets.token_hex(16)
        metrics_token = secrets.token_urlsafe(16)
        settings = _settings(
            stripe_api_base=standin.url,
            stripe_secret_key="sk_test_billfold_dev",  # noqa: S106 (the stand-in takes any key)
            stripe_publishable_key="pk_test_billfold_dev",
            stripe_webhook_secret=webhook_secret,
            jwt_secret=secrets.token_urlsafe(32),
            backend_url=f"http://{host}:{port}",
            database_url=f"sqlite:///{DEV_DATABASE}",
            license_private_key=new_private_key_text(),
            pages_secure_cookies=False,  # the demo serves plain http
            metrics_token=metrics_token,
            webhook_allow_private_urls="loopback",
        )
        migrations.upgrade(settings.database_url)
        with _cli_errors():
            apply_file(_services(settings), catalog, dry_run=False)
        admin_email, admin_password = "admin@billfold.dev", secrets.token_urlsafe(12)
        _create_admin(_database(settings), admin_email, admin_password, "Admin")
        standin.register_webhook(
            "billfold", f"{settings.backend_url}/webhooks/stripe", webhook_secret
        )
        console.rule("Billfold dev")
        console.print(f"API:            {settings.backend_url}")
        console.print(f"API docs:       {settings.backend_url}/docs")
        console.print(f"Billing pages:  {settings.backend_url}/billing")
        console.print(f"Console:        {settings.backend_url}/admin (sign in as the admin)")
        console.print(f"Stripe stand-in: {standin.url} (localstripe, in memory)")
        console.print(f"Webhook secret: {webhook_secret}")
        console.print(f"Database:       {_safe_url(settings.database_url)}")
        console.print(f"Admin:          {admin_email} / {admin_password}")
        console.print(f"Metrics:        {settings.backend_url}/metrics (Bearer {metrics_token})")
        console.print(
            "Test cards:     4242 4242 4242 4242 succeeds · 4000 0027 6000 3184 asks for "
            "3-D Secure · 4000 0000 0000 0341 is declined when charged · any future expiry, "
            "any CVC",
            soft_wrap=True,
        )
        console.print("A card without a browser (answers a payment method ID, pm_…):")
        console.print(
            f"  curl -s {standin.url}/v1/payment_methods -u sk_test_dev: -d type=card "
            "-d 'card[number]=4242424242424242' -d 'card[exp_month]=12' "
            "-d 'card[exp_year]=2034' -d 'card[cvc]=123'",
            soft_wrap=True,
            highlight=False,
            markup=False,
        )
        console.rule()
        _serve(settings, host, port, run_worker=True, dev=True)
    finally:
        standin.stop()


@license_cli.command("verify")
def license_verify(
    token: str,
    public_key: Annotated[
        Path | None,
        typer.Option(help="A PEM public key file (default: the key of LICENSE_PRIVATE_KEY)"),
    ] = None,
) -> None:
    """Verify a license token offline and print its claims."""
    from billfold.kit.signing_keys import key_id, load_public_key
    from billfold.services import license_keys
    from billfold.subscriptions.licenses import InvalidLicense, verify

    try:
        if public_key is not None:
            key = load_public_key(public_key.read_text())
            known = {key_id(key): key}
        else:
            known = license_keys(_settings()).public_keys()
    except MissingSettings as exc:
        console.print(
            "[red]No key to verify with: set LICENSE_PRIVATE_KEY (the server's setting) or "
            "pass --public-key FILE.pem[/red]"
        )
        raise typer.Exit(2) from exc
    except (OSError, ValueError) as exc:
        console.print(f"[red]Cannot read the public key: {exc}[/red]")
        raise typer.Exit(2) from exc
    try:
        claims = verify(token, known)
    except InvalidLicense as exc:
        console.print(f"[red]Invalid license ({exc.code}): {exc.message}[/red]")
        raise typer.Exit(1) from exc
    console.print_json(data=claims)


@license_cli.command("keygen")
def license_keygen() -> None:
    """Print a new Ed25519 signing key for LICENSE_PRIVATE_KEY (keep it secret)."""
    print(new_private_key_text())


def _safe_url(url: str) -> str:
    """A database URL fit to print: no password."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"
