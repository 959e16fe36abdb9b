"""Soak benchmark: many processes, one PostgreSQL. Three `billfold serve` and three
`billfold worker` processes share a throwaway PostgreSQL (directly, or with --pgbouncer
through PgBouncer in transaction-pooling mode) and the Stripe stand-in, under mixed traffic:
sign-ups, card set-ups, credit purchases (payments with a saved card), consumes (a fifth of
them sent again, to another server, under the same key), Stripe's events relayed as signed
webhooks (a fifth of them twice, to two servers, as Stripe retries), refunds and
auto-recharges. Halfway through, one worker and one server are killed with SIGKILL (the
worker as soon as it holds a claimed job); the traffic goes on against the others. At the
end the queue is left to drain and every invariant is checked and printed, PASS or FAIL
with its counts, beside the throughput of each kind of traffic. Exits 1 when an invariant fails.

    .venv/bin/python bench/soak.py [--seconds 75] [--clients 6] [--pgbouncer]

How "no job ran twice to completion" is told: the jobs table keeps one row per job and only
its last outcome, so the workers' own record is read instead. Each worker process logs one
JSON line `job.done` (with the job's ID) for every job whose handler finished and which it
then settled or found taken over (`job.lease_lost`); the soak counts those lines across all
three workers (the killed one's too: they write unbuffered). A job ID with two such lines
ran to completion twice. Recurring jobs (one row run again and again) are left out. A job
whose worker died before settling it may run again elsewhere (it was not finished: that is
what the lease is for); its effects must still land once, which the other invariants check
by their unique keys (one ledger entry per payment, one Stripe customer per user, one
intent per payment, one refund at Stripe per refund).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import hmac
import json
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import stripe
from harness import BENCH_LICENSE_KEY, percentile
from sqlalchemy import text
from support.pgbouncer import ThrowawayPgBouncer
from support.postgres import ThrowawayPostgres

from billfold import migrations
from billfold.auth.models import Role
from billfold.customers import service
from billfold.kit.db import Database
from billfold.kit.observability import configure_logging
from billfold.standin import LocalStripe, free_port

JWT_SECRET = "bench-secret-" + "x" * 32
WEBHOOK_SECRET = "whsec_soak"
STRIPE_KEY = "sk_test_soak"
ADMIN = ("admin@soak.example", "soak-admin-1")
SERVERS = 3
WORKERS = 3
WORKER_THREADS = 2
# Short leases and backoff, so that what the killed worker held comes back (and retries
# settle) within the drain; the janitor settles payments a killed server left open.
PROCESS_ENV = {
    "JOB_LEASE_SECONDS": "10",
    "JOB_BACKOFF_BASE_SECONDS": "0.5",
    "JOB_BACKOFF_MAX_SECONDS": "4",
    "JOB_POLL_SECONDS": "0.2",
    "CUSTOMER_LINK_LEASE_SECONDS": "15",
    "PAYMENT_JANITOR_INTERVAL_SECONDS": "3",
    "PAYMENT_JANITOR_LEASE_SECONDS": "15",
    "STRIPE_MAX_NETWORK_RETRIES": "0",
    "STRIPE_TIMEOUT_SECONDS": "10",
    "RATE_LIMIT_SIGNUP": "1000000/minute",
    "RATE_LIMIT_LOGIN": "1000000/minute",
    "CREDITS_MAX_RECHARGES_PER_DAY": "1000",
    "CREDITS_MAX_RECHARGE_SPEND_PER_DAY": "100000000",
}
PACKAGE_CREDITS = 1000
PACKAGE_PRICE = 500
RECHARGE_THRESHOLD = 400
DRAIN_TIMEOUT_SECONDS = 180.0


@dataclass
class Tally:
    """What one kind of traffic did: answers by class and the latency of each call."""

    ok: int = 0
    refused: int = 0  # 4xx: a refusal the traffic can cause (no balance left, refunded twice)
    server_errors: int = 0  # 5xx: never acceptable
    cut: int = 0  # the connection died (the server was killed): retried on another server
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)


class Fleet:
    """The live servers; a client picks one at random for each call."""

    def __init__(self, urls: list[str]) -> None:
        self._urls = list(urls)
        self._lock = threading.Lock()

    def pick(self, avoid: str | None = None) -> str:
        with self._lock:
            choices = [u for u in self._urls if u != avoid] or self._urls
            return random.choice(choices)

    def drop(self, url: str) -> None:
        with self._lock:
            self._urls.remove(url)


class Traffic:
    def __init__(self, fleet: Fleet, stripe_api: stripe.StripeClient) -> None:
        self.fleet = fleet
        self.stripe_api = stripe_api
        self.tallies: dict[str, Tally] = defaultdict(Tally)
        self._lock = threading.Lock()
        self.http = threading.local()
        self.admin: dict[str, str] = {}
        self.package = ""
        # Credit purchases that succeeded (payment IDs), for refunds to pick from.
        self.paid: list[str] = []
        self.client_errors: Counter[str] = Counter()

    def _client(self) -> httpx.Client:
        client = getattr(self.http, "client", None)
        if client is None:
            client = httpx.Client(timeout=60)
            self.http.client = client
        return client

    def call(
        self,
        kind: str,
        method: str,
        path: str,
        *,
        avoid: str | None = None,
        **kwargs: Any,
    ) -> tuple[httpx.Response | None, str]:
        """One call to a live server; a cut connection is retried on another (with the same
        body, so a retried consume keeps its key). Answers the response and the server."""
        for _try in range(5):
            base = self.fleet.pick(avoid)
            started = time.perf_counter()
            try:
                response = self._client().request(method, base + path, **kwargs)
            except httpx.TransportError:
                with self._lock:
                    self.tallies[kind].cut += 1
                avoid = base
                continue
            elapsed = time.perf_counter() - started
            with self._lock:
                tally = self.tallies[kind]
                tally.latencies.append(elapsed)
                tally.statuses[response.status_code] += 1
                if response.status_code < 400:
                    tally.ok += 1
                elif response.status_code < 500:
                    tally.refused += 1
                else:
                    tally.server_errors += 1
            return response, base
        return None, ""

    def client_error(self, exc: Exception) -> None:
        with self._lock:
            self.client_errors[f"{type(exc).__name__}: {str(exc)[:100]}"] += 1

    # The traffic kinds.

    def sign_up(self) -> dict[str, str] | None:
        body = {
            "name": "Soak",
            "email": f"soak-{uuid.uuid4().hex[:16]}@example.com",
            "password": "soak-user-pass-1",
        }
        response, _ = self.call("sign-up", "POST", "/users", json=body)
        if response is None or response.status_code != 201:
            return None
        return {"Authorization": f"Bearer {response.json()['data']['access_token']}"}

    def set_up_card(self, user: dict[str, str]) -> str | None:
        pm = self.stripe_api.v1.payment_methods.create(
            params={
                "type": "card",
                "card": {
                    "number": "4242424242424242",
                    "exp_month": 12,
                    "exp_year": 2034,
                    "cvc": "123",
                },
            }
        ).id
        response, _ = self.call(
            "card set-up",
            "POST",
            "/payments/customer/payment-methods",
            json={"paymentMethodId": pm},
            headers=user,
        )
        return pm if response is not None and response.status_code == 200 else None

    def auto_recharge(self, user: dict[str, str], pm: str) -> None:
        self.call(
            "auto-recharge set-up",
            "PUT",
            "/credits/auto-recharge",
            json={
                "enabled": True,
                "thresholdCredits": RECHARGE_THRESHOLD,
                "rechargePackageId": self.package,
                "paymentMethodId": pm,
            },
            headers=user,
        )

    def purchase(self, user: dict[str, str], pm: str) -> None:
        response, _ = self.call(
            "credit purchase",
            "POST",
            "/credits/purchase",
            json={"packageId": self.package, "paymentMethodId": pm},
            headers=user,
        )
        if response is not None and response.status_code < 300:
            data = response.json()["data"]
            if data["status"] == "succeeded":
                with self._lock:
                    self.paid.append(data["paymentId"])

    def consume(self, user: dict[str, str]) -> None:
        body = {"amount": random.randint(10, 100), "idempotencyKey": uuid.uuid4().hex}
        _, server = self.call("consume", "POST", "/credits/consume", json=body, headers=user)
        if server and random.random() < 0.2:  # a client retrying, on another server
            self.call(
                "consume (same key again)",
                "POST",
                "/credits/consume",
                json=body,
                headers=user,
                avoid=server,
            )

    def refund(self) -> None:
        with self._lock:
            if not self.paid:
                return
            payment = self.paid.pop(random.randrange(len(self.paid)))
        amount = random.choice([None, PACKAGE_PRICE // 5])
        self.call(
            "refund",
            "POST",
            f"/payments/{payment}/refund",
            json={} if amount is None else {"amount": amount},
            headers=self.admin,
        )


def client_loop(traffic: Traffic, stop: threading.Event) -> None:
    """One customer after another (see `customer`); an error of the client itself (not an
    answer of Billfold's) is counted and the next customer comes."""
    while not stop.is_set():
        try:
            customer(traffic, stop)
        except Exception as exc:  # counted and printed; the soak goes on
            traffic.client_error(exc)


def customer(traffic: Traffic, stop: threading.Event) -> None:
    """Signs up, sets up a card (half of them auto-recharge), buys credits and spends them;
    now and then refunds someone's purchase (as the admin)."""
    user = traffic.sign_up()
    pm = traffic.set_up_card(user) if user is not None else None
    if user is None or pm is None:
        return
    recharging = random.random() < 0.5
    if recharging:
        traffic.auto_recharge(user, pm)
    traffic.purchase(user, pm)
    for _ in range(random.randint(10, 30)):
        if stop.is_set():
            return
        roll = random.random()
        if roll < 0.08 and not recharging:
            traffic.purchase(user, pm)
        elif roll < 0.12:
            traffic.refund()
        else:
            traffic.consume(user)


def sign(payload: bytes, secret: str) -> str:
    """The Stripe-Signature header Stripe would send for `payload` now."""
    timestamp = int(time.time())
    signed = f"{timestamp}.".encode() + payload
    return f"t={timestamp},v1={hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()}"


class Relay:
    """Forwards the stand-in's events to the servers as Stripe would: signed, each at least
    once, a fifth of them twice (to two servers)."""

    def __init__(self, traffic: Traffic, since: int) -> None:
        self.traffic = traffic
        self.since = since
        self.seen: set[str] = set()

    def once(self) -> int:
        listed = self.traffic.stripe_api.v1.events.list(
            params={"created": {"gte": self.since}, "limit": 100_000}
        )
        fresh = sorted(
            (e for e in listed.data if e.id not in self.seen), key=lambda e: int(e.created)
        )
        for evt in fresh:
            body = json.dumps(evt.to_dict(for_json=True)).encode()
            copies = 2 if random.random() < 0.2 else 1
            server: str | None = None
            for _ in range(copies):
                headers = {
                    "Stripe-Signature": sign(body, WEBHOOK_SECRET),
                    "Content-Type": "application/json",
                }
                _, server = self.traffic.call(
                    "Stripe webhook",
                    "POST",
                    "/webhooks/stripe",
                    content=body,
                    headers=headers,
                    avoid=server,
                )
            self.seen.add(evt.id)
        return len(fresh)

    def loop(self, stop: threading.Event) -> None:
        while not stop.wait(0.5):
            try:
                self.once()
            except Exception as exc:  # counted and printed; the relay goes on
                self.traffic.client_error(exc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=75, help="how long the traffic runs")
    parser.add_argument("--clients", type=int, default=6, help="concurrent customers")
    parser.add_argument(
        "--pgbouncer", action="store_true", help="servers and workers through PgBouncer"
    )
    args = parser.parse_args()
    configure_logging(level=logging.WARNING)
    ok = run(args)
    sys.exit(0 if ok else 1)


def run(args: argparse.Namespace) -> bool:
    workdir = Path(tempfile.mkdtemp(prefix="billfold-soak-"))
    mode = "through PgBouncer (transaction pooling)" if args.pgbouncer else "direct"
    print(
        f"Billfold soak: {SERVERS} servers, {WORKERS} workers x {WORKER_THREADS} threads, one "
        f"PostgreSQL {mode}; {args.clients} clients for {args.seconds:.0f} s; "
        f"load {os.getloadavg()[0]:.2f} (1 min) at start",
        flush=True,
    )
    with LocalStripe.start() as standin, ThrowawayPostgres.start() as pg:
        direct_url = pg.create_database("soak")
        migrations.upgrade(direct_url)
        bouncer = ThrowawayPgBouncer.start(pg) if args.pgbouncer else None
        app_url = bouncer.url_for("soak") if bouncer else direct_url
        db = Database(direct_url)
        with db.transaction() as session:
            service.register(
                session, name="Admin", email=ADMIN[0], password=ADMIN[1], role=Role.ADMIN
            )
        env = {
            **os.environ,
            **PROCESS_ENV,
            "PYTHONUNBUFFERED": "1",
            "DATABASE_URL": app_url,
            "STRIPE_API_BASE": standin.url,
            "STRIPE_SECRET_KEY": STRIPE_KEY,
            "STRIPE_PUBLISHABLE_KEY": "pk_test_soak",
            "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "JWT_SECRET": JWT_SECRET,
            "LICENSE_PRIVATE_KEY": BENCH_LICENSE_KEY,
            "MAIL_OUTBOX_DIR": str(workdir / "mail"),
            "LOG_JSON": "true",
        }
        if bouncer:
            env["DATABASE_TRANSACTION_POOLER"] = "true"
            env["JOB_LISTEN_URL"] = direct_url
        processes: list[subprocess.Popen[bytes]] = []
        try:
            servers, urls = start_servers(env, workdir, processes)
            workers = start_workers(env, workdir, processes)
            fleet = Fleet(urls)
            stripe_api = stripe.StripeClient(
                STRIPE_KEY,
                base_addresses={"api": standin.url},
                http_client=stripe.HTTPXClient(allow_sync_methods=True),
            )
            traffic = Traffic(fleet, stripe_api)
            prepare(traffic)
            relay = Relay(traffic, int(time.time()) - 1)

            stop = threading.Event()
            threads = [
                threading.Thread(target=client_loop, args=(traffic, stop), daemon=True)
                for _ in range(args.clients)
            ]
            threads.append(threading.Thread(target=relay.loop, args=(stop,), daemon=True))
            started = time.monotonic()
            for thread in threads:
                thread.start()
            stop.wait(args.seconds / 2)
            # Midway: one worker and one server die at once, the worker (if it comes to it
            # within 10 s) while it holds a claimed job.
            wait_for_held_job(db, workers[0].pid, stop, 10.0)
            workers[0].send_signal(signal.SIGKILL)
            servers[0].send_signal(signal.SIGKILL)
            fleet.drop(urls[0])
            held, done_before = killed_worker_jobs(db, workers[0].pid, workdir / "worker0.log")
            print(
                f"  at {time.monotonic() - started:.0f} s: killed worker pid {workers[0].pid} "
                f"(it had completed {done_before} jobs and held {held} claimed) and server pid "
                f"{servers[0].pid}, with SIGKILL",
                flush=True,
            )
            stop.wait(max(0.0, started + args.seconds - time.monotonic()))
            stop.set()
            for thread in threads:
                thread.join(timeout=120)
            traffic_seconds = time.monotonic() - started
            load_end = os.getloadavg()[0]

            drained, drain_seconds = drain(db, relay)
            for process in processes:
                if process.poll() is None:
                    process.terminate()
            for process in processes:
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
            print_throughput(traffic, traffic_seconds, load_end)
            print_background(db, traffic_seconds)
            print(
                f"  queue drained in {drain_seconds:.1f} s after the traffic stopped"
                if drained
                else f"  queue NOT drained after {drain_seconds:.0f} s"
            )
            return check_invariants(db, stripe_api, workdir, traffic, workers[0].pid)
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                    process.wait(timeout=20)
            db.dispose()
            if bouncer:
                bouncer.stop()


def start_servers(
    env: dict[str, str], workdir: Path, processes: list[subprocess.Popen[bytes]]
) -> tuple[list[subprocess.Popen[bytes]], list[str]]:
    servers, urls = [], []
    for n in range(SERVERS):
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "billfold", "serve", "--no-worker", "--port", str(port)],
            env=env,
            cwd=workdir,
            stdout=(workdir / f"server{n}.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        processes.append(process)
        servers.append(process)
        urls.append(f"http://127.0.0.1:{port}")
    for process, url in zip(servers, urls, strict=True):
        wait_for(functools.partial(_healthy, url), 120, f"server {url}", process)
    return servers, urls


def start_workers(
    env: dict[str, str], workdir: Path, processes: list[subprocess.Popen[bytes]]
) -> list[subprocess.Popen[bytes]]:
    workers = []
    for n in range(WORKERS):
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "billfold",
                "worker",
                "--concurrency",
                str(WORKER_THREADS),
            ],
            env=env,
            cwd=workdir,
            stdout=(workdir / f"worker{n}.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        processes.append(process)
        workers.append(process)
    for n, process in enumerate(workers):
        log = workdir / f"worker{n}.log"
        wait_for(functools.partial(_says_running, log), 120, f"worker {n}", process)
    return workers


def _says_running(log: Path) -> bool:
    return b"worker(s) running" in log.read_bytes()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def wait_for(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    process: subprocess.Popen[bytes] | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready within {timeout:.0f} s")
        time.sleep(0.1)


def wait_for_held_job(db: Database, pid: int, stop: threading.Event, timeout: float) -> None:
    """Wait until the worker `pid` holds a claimed job (or `timeout` passes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stop.is_set():
        with db.engine.connect() as connection:
            held = connection.execute(
                text("SELECT count(*) FROM jobs WHERE status = 'running' AND locked_by LIKE :me"),
                {"me": f"%:{pid}:%"},
            ).scalar_one()
        if held:
            return
        time.sleep(0.02)


def killed_worker_jobs(db: Database, pid: int, log: Path) -> tuple[int, int]:
    """How many jobs the killed worker held claimed (they come back when the lease runs
    out), and how many it had completed."""
    with db.engine.connect() as connection:
        held = connection.execute(
            text("SELECT count(*) FROM jobs WHERE status = 'running' AND locked_by LIKE :me"),
            {"me": f"%:{pid}:%"},
        ).scalar_one()
    return int(held), log.read_bytes().count(b'"job.done"')


def prepare(traffic: Traffic) -> None:
    """The admin's token and the credit package everyone buys."""
    response, _ = traffic.call(
        "setup", "POST", "/auth/login", json={"email": ADMIN[0], "password": ADMIN[1]}
    )
    if response is None or response.status_code != 200:
        raise RuntimeError(f"admin login failed: {response and response.text}")
    traffic.admin = {"Authorization": f"Bearer {response.json()['data']['access_token']}"}
    response, _ = traffic.call(
        "setup",
        "POST",
        "/credits/packages",
        json={"name": "Soak pack", "credits": PACKAGE_CREDITS, "price": PACKAGE_PRICE},
        headers=traffic.admin,
    )
    if response is None or response.status_code != 201:
        raise RuntimeError(f"creating the credit package failed: {response and response.text}")
    traffic.package = response.json()["data"]["id"]


# Jobs still to run (recurring jobs are one row each, always pending: not counted).
_OPEN_JOBS = (
    "SELECT count(*) FROM jobs WHERE status IN ('pending', 'running') AND id NOT LIKE 'job_every_%'"
)
_OPEN_PAYMENTS = "SELECT count(*) FROM payments WHERE status = 'creating'"


def drain(db: Database, relay: Relay) -> tuple[bool, float]:
    """Relay the last events and wait until no job is left to run and no payment is left
    half-made (the janitor settles what the killed server left); answers whether it drained
    and how long it took."""
    started = time.monotonic()
    quiet_since: float | None = None
    while time.monotonic() - started < DRAIN_TIMEOUT_SECONDS:
        relayed = relay.once()
        with db.engine.connect() as connection:
            open_jobs = connection.execute(text(_OPEN_JOBS)).scalar_one()
            open_payments = connection.execute(text(_OPEN_PAYMENTS)).scalar_one()
        if relayed == 0 and open_jobs == 0 and open_payments == 0:
            # Quiet twice in a row, a second apart: a job's effect may be an event still
            # on its way from the stand-in.
            if quiet_since is not None and time.monotonic() - quiet_since >= 1.0:
                return True, time.monotonic() - started
            quiet_since = quiet_since or time.monotonic()
        else:
            quiet_since = None
        time.sleep(0.3)
    return False, time.monotonic() - started


def print_throughput(traffic: Traffic, seconds: float, load: float) -> None:
    print(f"Traffic over {seconds:.0f} s (load {load:.2f} at the end):")
    for kind, tally in sorted(traffic.tallies.items()):
        if kind == "setup":
            continue
        ms = [s * 1000 for s in tally.latencies] or [0.0]
        print(
            f"  {kind:<26} {tally.ok / seconds:7.1f}/s ok={tally.ok:<6} "
            f"refused={tally.refused:<4} 5xx={tally.server_errors:<3} cut={tally.cut:<3} "
            f"p50={percentile(ms, 50):6.0f} ms p99={percentile(ms, 99):6.0f} ms"
        )
        refusals = {s: n for s, n in tally.statuses.items() if s >= 400}
        if refusals:
            print(f"  {'':<26} statuses: {dict(sorted(refusals.items()))}")
    for error, count in traffic.client_errors.most_common():
        print(f"  the load generator's own error, {count}x: {error}")


def print_background(db: Database, seconds: float) -> None:
    """What the workers did: credit purchases by kind (auto-recharges are theirs) and jobs
    run per kind, over the traffic's duration and the drain."""
    with db.engine.connect() as connection:
        purchases = connection.execute(
            text("SELECT kind, status, count(*) FROM credit_purchases GROUP BY 1, 2 ORDER BY 1, 2")
        ).all()
        jobs = connection.execute(
            text(
                "SELECT kind, count(*) FROM jobs WHERE id NOT LIKE 'job_every_%'"
                " GROUP BY 1 ORDER BY 2 DESC"
            )
        ).all()
    print(
        "  credit purchases: "
        + ", ".join(f"{kind} {status} {count}" for kind, status, count in purchases)
        + f" (auto-recharges: {sum(n for k, _, n in purchases if k == 'recharge') / seconds:.2f}/s)"
    )
    print(
        f"  jobs: {sum(n for _, n in jobs)} "
        f"({sum(n for _, n in jobs) / seconds:.1f}/s over the traffic's {seconds:.0f} s): "
        + ", ".join(f"{kind} {count}" for kind, count in jobs)
    )


def check_invariants(
    db: Database,
    stripe_api: stripe.StripeClient,
    workdir: Path,
    traffic: Traffic,
    killed_pid: int,
) -> bool:
    results: list[tuple[bool, str, str]] = []

    def check(ok: bool, name: str, detail: str) -> None:
        results.append((ok, name, detail))

    with db.engine.connect() as c:

        def rows(query: str) -> list[Any]:
            return list(c.execute(text(query)))

        def one(query: str) -> Any:
            return c.execute(text(query)).scalar_one()

        # 1. Every credit account's balance is the sum of its ledger, its entry count is the
        # ledger's length, and its last entry's balance_after is the balance.
        accounts = one("SELECT count(*) FROM credit_accounts")
        entries = one("SELECT count(*) FROM credit_transactions")
        wrong = rows(
            "SELECT a.customer_id, a.balance, coalesce(sum(t.amount), 0), a.entries, count(t.id)"
            " FROM credit_accounts a LEFT JOIN credit_transactions t"
            " ON t.customer_id = a.customer_id GROUP BY a.customer_id, a.balance, a.entries"
            " HAVING a.balance <> coalesce(sum(t.amount), 0) OR a.entries <> count(t.id)"
        )
        broken_chain = one(
            "SELECT count(*) FROM credit_accounts a JOIN credit_transactions t"
            " ON t.customer_id = a.customer_id AND t.entry_no = a.entries"
            " WHERE t.balance_after <> a.balance"
        )
        check(
            not wrong and not broken_chain and accounts > 0,
            "balance = ledger sum for every credits account",
            f"{accounts} accounts, {entries} ledger entries; {len(wrong)} accounts off their "
            f"ledger, {broken_chain} whose last balance_after differs"
            + (f"; e.g. {wrong[:3]}" if wrong else ""),
        )

        # 2. One Stripe customer per user: ask the stand-in for every customer, by our ID.
        users = one("SELECT count(*) FROM users WHERE role = 'user'")
        # The customers of the users who signed up (the admin was made in-process).
        signed_up = " FROM customers c JOIN users u ON u.id = c.user_id WHERE u.role = 'user'"
        linked = dict(
            rows(
                "SELECT c.id, c.stripe_customer_id"
                + signed_up
                + " AND c.stripe_customer_id IS NOT NULL"
            )
        )
        at_stripe: dict[str, list[str]] = defaultdict(list)
        for customer in stripe_api.v1.customers.list(params={"limit": 100}).auto_paging_iter():
            ours = _metadata(customer, "customer_id")
            if ours and not getattr(customer, "deleted", False):
                at_stripe[ours].append(customer.id)
        twice = {k: v for k, v in at_stripe.items() if len(v) > 1}
        mismatched = [k for k, v in linked.items() if at_stripe.get(k) != [v]]
        customers = one("SELECT count(*)" + signed_up)
        check(
            not twice and not mismatched and len(linked) == customers,
            "one Stripe customer per user",
            f"{users} users, {customers} customers, {len(linked)} linked; "
            f"{len(at_stripe)} with a customer at Stripe, {len(twice)} with more than one, "
            f"{len(mismatched)} linked to another than Stripe holds, "
            f"{customers - len(linked)} never linked",
        )

        # 3. Each payment recorded once: one intent at Stripe per payment, one payment per
        # intent, and one ledger entry per paid credit purchase (none for an unpaid one).
        payments = dict(rows("SELECT status, count(*) FROM payments GROUP BY status"))
        intents: Counter[str] = Counter()
        for intent in stripe_api.v1.payment_intents.list(params={"limit": 100}).auto_paging_iter():
            ours = _metadata(intent, "payment_id")
            if ours:
                intents[ours] += 1
        double_intents = sum(1 for n in intents.values() if n > 1)
        ledger_per_payment = rows(
            "SELECT p.id, p.status, count(t.id) FROM credit_purchases cp"
            " JOIN payments p ON p.id = cp.payment_id"
            " LEFT JOIN credit_transactions t ON t.customer_id = cp.customer_id"
            " AND t.idempotency_key = 'purchase:' || p.id"
            " GROUP BY p.id, p.status"
        )
        paid_twice = [r for r in ledger_per_payment if r[2] > 1]
        paid_never = [r for r in ledger_per_payment if r[1] == "succeeded" and r[2] == 0]
        unpaid_granted = [r for r in ledger_per_payment if r[1] != "succeeded" and r[2] > 0]
        check(
            not double_intents and not paid_twice and not paid_never and not unpaid_granted,
            "each payment recorded once",
            f"{sum(payments.values())} payments {dict(sorted(payments.items()))}, "
            f"{sum(intents.values())} intents at Stripe; {double_intents} payments with two "
            f"intents; {len(ledger_per_payment)} credit purchases: {len(paid_twice)} granted "
            f"twice, {len(paid_never)} paid but not granted, {len(unpaid_granted)} granted "
            "unpaid",
        )

        # Refunds: one at Stripe per refund of ours, and each refund's credits taken back
        # once (its ledger key is unique, so count the entries per refund).
        refunds = dict(rows("SELECT status, count(*) FROM refunds GROUP BY status"))
        refunds_at_stripe: Counter[str] = Counter()
        for made in stripe_api.v1.refunds.list(params={"limit": 100}).auto_paging_iter():
            ours = _metadata(made, "refund_id")
            if ours:
                refunds_at_stripe[ours] += 1
        double_refunds = sum(1 for n in refunds_at_stripe.values() if n > 1)
        over_refunded = one("SELECT count(*) FROM payments WHERE amount_refunded > amount")
        check(
            not double_refunds and not over_refunded,
            "each refund made once",
            f"{sum(refunds.values())} refunds {dict(sorted(refunds.items()))}, "
            f"{sum(refunds_at_stripe.values())} at Stripe; {double_refunds} made twice, "
            f"{over_refunded} payments refunded beyond their amount",
        )

        # Stripe's events: each stored once however often it was delivered.
        events, distinct_events = c.execute(
            text("SELECT count(*), count(DISTINCT stripe_event_id) FROM stripe_events")
        ).one()
        webhooks = traffic.tallies["Stripe webhook"]
        relayed = webhooks.ok + webhooks.refused + webhooks.server_errors
        unprocessed = dict(rows("SELECT status, count(*) FROM stripe_events GROUP BY status"))
        check(
            events == distinct_events and events > 0,
            "each Stripe event stored once",
            f"{events} stored, {distinct_events} distinct, from {relayed} deliveries; "
            f"by status {dict(sorted(unprocessed.items()))}",
        )

        # 4. No job lost: every job is done or dead (failed for good), none pending or
        # running; none ran to completion twice (see the docstring).
        by_status = dict(
            rows(
                "SELECT status, count(*) FROM jobs WHERE id NOT LIKE 'job_every_%' GROUP BY status"
            )
        )
        open_jobs = by_status.get("pending", 0) + by_status.get("running", 0)
        dead = rows(
            "SELECT kind, left(coalesce(last_error, ''), 120), count(*) FROM jobs"
            " WHERE status = 'dead' GROUP BY 1, 2"
        )
        check(
            open_jobs == 0 and sum(by_status.values()) > 0,
            "no job lost (each done or failed for good)",
            f"{sum(by_status.values())} jobs {dict(sorted(by_status.items()))}"
            + (f"; dead: {dead}" if dead else ""),
        )
        completions = job_completions(workdir)
        recurring = {i for i in completions if i.startswith("job_every_")}
        repeated = {i: n for i, n in completions.items() if n > 1 and i not in recurring}
        # The lease token names the worker (host:pid:…): a job the killed worker settled
        # just before it died may have no line; any other done job must have one, or the
        # count above would prove nothing.
        done_by = dict(rows("SELECT id, locked_by FROM jobs WHERE status = 'done'"))
        unlogged = {
            i
            for i, by in done_by.items()
            if i not in completions and (by or "").split(":")[1:2] != [str(killed_pid)]
        }
        check(
            not repeated and not unlogged,
            "no job ran twice to completion",
            f"{sum(n for i, n in completions.items() if i not in recurring)} completions "
            f"logged for {len(completions) - len(recurring)} jobs; {len(repeated)} completed "
            f"twice, {len(unlogged)} done without a completion logged"
            + (f"; e.g. {list(repeated.items())[:3]}" if repeated else ""),
        )

    server_errors = {k: t.server_errors for k, t in traffic.tallies.items() if t.server_errors}
    check(
        not server_errors,
        "no server error (5xx)",
        f"{sum(server_errors.values())} answers 5xx"
        + (f": {server_errors}" if server_errors else ""),
    )

    print("Invariants:")
    for ok, name, detail in results:
        print(f"  {'PASS' if ok else 'FAIL'}  {name}: {detail}")
    failed = sum(1 for ok, _, _ in results if not ok)
    print(f"{len(results) - failed} of {len(results)} invariants hold; logs in {workdir}")
    return failed == 0


def _metadata(obj: Any, key: str) -> str | None:
    """One key of a Stripe object's metadata (None when it has none)."""
    value = (obj.to_dict().get("metadata") or {}).get(key)
    return None if value is None else str(value)


def job_completions(workdir: Path) -> Counter[str]:
    """How often each job ID's handler finished, from every worker's `job.done` lines."""
    done: Counter[str] = Counter()
    for log in workdir.glob("worker*.log"):
        for line in log.read_text(errors="replace").splitlines():
            if '"job.done"' not in line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # the killed worker's last line may be cut short
            if record.get("event") == "job.done":
                done[record["job_id"]] += 1
    return done


if __name__ == "__main__":
    main()
