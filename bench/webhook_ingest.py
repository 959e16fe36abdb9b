"""Webhook ingest benchmark: signed Stripe events posted to POST /webhooks/stripe on
PostgreSQL, acknowledged per second (p50/p99), a share of them sent twice (Stripe retries);
then each must be stored exactly once. Then `billfold worker` processes them: every event is
a `customer.updated` about a real customer in the stand-in, whose handler re-reads it from
Stripe, and the processing rate is printed beside the ingest rate.

    .venv/bin/python bench/webhook_ingest.py [--events 5000] [--clients 32] [--customers 20]

Billfold runs as `billfold serve --no-worker --workers N`; the load comes from separate
processes writing HTTP/1.1 to keep-alive sockets (as bench/consume.py does). Prints figures;
asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import hmac
import json
import logging
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import cast

import httpx
import uvloop
from consume import start_server
from harness import BENCH_LICENSE_KEY, percentile
from sqlalchemy import func, select
from support.postgres import ThrowawayPostgres

from billfold import migrations
from billfold.jobs.models import Job, JobStatus
from billfold.kit.db import Database
from billfold.kit.observability import configure_logging
from billfold.standin import LocalStripe, free_port
from billfold.webhooks.inbox import PROCESS_JOB
from billfold.webhooks.models import EventStatus, StripeEvent

WEBHOOK_SECRET = "whsec_bench"


def signed_request(port: int, event: dict[str, object]) -> bytes:
    body = json.dumps(event, separators=(",", ":")).encode()
    stamp = int(time.time())
    mac = hmac.new(WEBHOOK_SECRET.encode(), b"%d.%s" % (stamp, body), hashlib.sha256)
    return (
        f"POST /webhooks/stripe HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nStripe-Signature: t={stamp},v1={mac.hexdigest()}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def event(n: int, stripe_customer: str) -> dict[str, object]:
    return {
        "id": f"evt_bench_{n:09d}",
        "object": "event",
        "type": "customer.updated",
        "created": int(time.time()),
        "livemode": False,
        "data": {"object": {"id": stripe_customer, "object": "customer", "metadata": {}}},
    }


class _Client(asyncio.Protocol):
    """One keep-alive connection sending its requests one after another."""

    def __init__(self, requests: list[bytes]) -> None:
        self._requests = requests
        self._next = 0
        self._buffer = b""
        self._started = 0.0
        self.latencies: list[float] = []
        self.errors = 0
        self.duplicates = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.WriteTransport, transport)
        self._send()

    def _send(self) -> None:
        if self._next == len(self._requests):
            self._transport.close()
            return
        self._started = time.perf_counter()
        self._transport.write(self._requests[self._next])
        self._next += 1

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self._buffer[:end].lower()
        length = int(head.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
        if len(self._buffer) < end + 4 + length:
            return
        body = self._buffer[end + 4 : end + 4 + length]
        self._buffer = self._buffer[end + 4 + length :]
        self.latencies.append(time.perf_counter() - self._started)
        self.errors += not head.startswith(b"http/1.1 200")
        self.duplicates += b'"duplicate":true' in body
        self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


def _load(port: int, shares: list[list[bytes]]) -> tuple[list[float], int, int]:
    async def run() -> tuple[list[float], int, int]:
        loop = asyncio.get_running_loop()
        clients = []
        for requests in shares:
            _, client = await loop.create_connection(
                functools.partial(_Client, requests), "127.0.0.1", port
            )
            clients.append(client)
        await asyncio.gather(*(c.done for c in clients))
        return (
            [lat for c in clients for lat in c.latencies],
            sum(c.errors for c in clients),
            sum(c.duplicates for c in clients),
        )

    return uvloop.run(run())


def post_all(
    port: int, requests: list[bytes], clients: int, processes: int
) -> tuple[float, list[float], int, int]:
    """Seconds to answer all `requests` over `clients` connections; latencies, errors, dups."""
    shares = [requests[i::clients] for i in range(clients)]
    per_process = [shares[p::processes] for p in range(processes)]
    started = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        parts = pool.starmap(_load, [(port, share) for share in per_process])
    elapsed = time.perf_counter() - started
    return (
        elapsed,
        [lat for p in parts for lat in p[0]],
        sum(p[1] for p in parts),
        sum(p[2] for p in parts),
    )


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU used by a process and everything under it, alive or reaped (Linux):
    what the server costs per event, apart from how loaded the machine is."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended meanwhile
        pid = int(stat.parent.name)
        parents[pid] = int(fields[1])
        times[pid] = sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    tree, grew = {root}, True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= more
        grew = bool(more)
    return sum(times.get(pid, 0) for pid in tree) / os.sysconf("SC_CLK_TCK")


def register(base: str, n: int) -> list[str]:
    """`n` users with their Stripe customer (made inline at sign-up); their Stripe IDs."""
    ids = []
    with httpx.Client(base_url=base, timeout=60) as http:
        for i in range(n):
            answer = http.post(
                "/users",
                json={
                    "name": f"Hook {i}",
                    "email": f"hook-{i}-{time.time_ns()}@example.com",
                    "password": "bench-password-1",
                },
            )
            assert answer.status_code == 201, answer.text
            stripe_id = answer.json()["data"]["user"]["stripeCustomerId"]
            assert stripe_id, "sign-up did not link a Stripe customer"
            ids.append(stripe_id)
    return ids


def start_workers(
    url: str, stripe_base: str, count: int, threads: int
) -> list[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "STRIPE_API_BASE": stripe_base,
        "STRIPE_SECRET_KEY": "sk_test_bench",
        "JWT_SECRET": "bench-secret-" + "x" * 32,
        "LICENSE_PRIVATE_KEY": BENCH_LICENSE_KEY,
    }
    return [
        subprocess.Popen(
            [sys.executable, "-m", "billfold", "worker", "--concurrency", str(threads)],
            env=env,
            cwd=tempfile.gettempdir(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(count)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--duplicates", type=float, default=0.1, help="share sent twice")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--customers", type=int, default=20)
    parser.add_argument("--server-workers", type=int, default=2, help="billfold serve processes")
    parser.add_argument("--load-processes", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="billfold worker processes")
    parser.add_argument("--threads", type=int, default=4, help="threads per worker process")
    args = parser.parse_args()
    configure_logging(level=logging.WARNING)

    with LocalStripe.start() as standin, ThrowawayPostgres.start() as pg:
        url = pg.create_database("bench")
        migrations.upgrade(url)
        db = Database(url)
        port = free_port()
        os.environ["STRIPE_WEBHOOK_SECRET"] = WEBHOOK_SECRET
        os.environ["RATE_LIMIT_SIGNUP"] = "1000000/minute"
        server = start_server(url, standin.url, port, args.server_workers)
        workers: list[subprocess.Popen[bytes]] = []
        try:
            customers = register(f"http://127.0.0.1:{port}", args.customers)
            events = [event(n, customers[n % len(customers)]) for n in range(args.events)]
            requests = [signed_request(port, e) for e in events]
            requests += requests[: int(len(requests) * args.duplicates)]  # Stripe's retries
            print(
                f"Billfold webhook ingest benchmark: PostgreSQL, {args.events} events "
                f"(+{len(requests) - args.events} sent again), {args.clients} clients, "
                f"{args.server_workers} server processes; {os.getloadavg()[0]:.2f} load (1 min)"
            )
            post_all(
                port,
                [signed_request(port, event(10**8 + n, customers[0])) for n in range(200)],
                args.clients,
                args.load_processes,
            )  # warm up
            cpu_before = tree_cpu_seconds(server.pid)
            elapsed, latencies, errors, duplicates = post_all(
                port, requests, args.clients, args.load_processes
            )
            cpu = tree_cpu_seconds(server.pid) - cpu_before
            ms = [s * 1000 for s in latencies]
            with db.transaction() as session:
                stored = session.scalar(
                    select(func.count(func.distinct(StripeEvent.stripe_event_id))).where(
                        StripeEvent.stripe_event_id.like("evt_bench_0%")
                    )
                )
                rows = session.scalar(
                    select(func.count()).where(StripeEvent.stripe_event_id.like("evt_bench_0%"))
                )
            print(
                f"  acknowledged  {len(requests) / elapsed:8.0f} events/s  "
                f"p50={percentile(ms, 50):6.1f} ms  p99={percentile(ms, 99):6.1f} ms  "
                f"errors={errors}  answered duplicate={duplicates}"
            )
            print(
                f"  server CPU    {cpu / len(requests) * 1000:8.2f} ms per acknowledged event "
                f"(~{len(requests) / max(cpu, 1e-9):.0f} events/s per free core)"
            )
            print(f"  stored        {rows} rows for {stored} distinct of {args.events} events")

            started = time.perf_counter()
            workers = start_workers(url, standin.url, args.workers, args.threads)

            def left() -> int:
                with db.transaction() as session:
                    return int(
                        session.scalar(
                            select(func.count()).where(
                                Job.kind == PROCESS_JOB,
                                Job.status.in_([JobStatus.PENDING, JobStatus.RUNNING]),
                            )
                        )
                        or 0
                    )

            while left():
                time.sleep(0.2)
            elapsed = time.perf_counter() - started
            with db.transaction() as session:
                by_status = dict(
                    session.execute(
                        select(StripeEvent.status, func.count()).group_by(StripeEvent.status)
                    ).all()
                )
            processed = by_status.get(EventStatus.PROCESSED, 0)
            print(
                f"  processed     {(args.events + 200) / elapsed:8.0f} events/s by "
                f"{args.workers}x{args.threads} worker threads (each re-reads the customer "
                f"from the stand-in; includes worker start-up)  {by_status} processed={processed}"
            )
        finally:
            for process in [server, *workers]:
                process.terminate()
            for process in [server, *workers]:
                process.wait(timeout=20)
            db.dispose()


if __name__ == "__main__":
    main()
