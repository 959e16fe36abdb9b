"""Entitlement benchmark: POST /entitlements/check and GET /entitlements/{customerId} over
HTTP on PostgreSQL, beside POST /credits/consume on the same server in the same run, for
comparison.

    .venv/bin/python bench/entitlements.py [--clients 32] [--seconds 10] [--accounts 200]

Each account has a subscription to a plan with flags and limits, and a credits balance;
checks cycle through a flag, a limit and credits. Billfold runs as `billfold serve
--no-worker --workers N`; the load comes from separate processes on keep-alive connections
(bench/consume.py's load generator). Beside each rate it prints the CPU the server processes
spent per request (user + system, from /proc): a figure that holds when other work shares
the machine, unlike the rate. Prints figures; asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import multiprocessing
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import uvloop
from consume import _Client, customer_id, drive, seed, start_server
from harness import percentile
from sqlalchemy import insert
from support.postgres import ThrowawayPostgres

from billfold import migrations
from billfold.kit.db import Database, new_id, utcnow
from billfold.kit.observability import configure_logging
from billfold.standin import LocalStripe
from billfold.standin.launcher import free_port
from billfold.subscriptions.models import Plan, Subscription

FEATURES = {"flags": {"api": True, "sso": False}, "limits": {"projects": 50, "seats": 10}}
CHECKS = [b'"feature":"api"', b'"feature":"projects","amount":3', b'"feature":"credits","amount":5']


def subscribe(db: Database, accounts: int) -> None:
    plan_id = new_id("plan")
    with db.transaction() as session:
        session.execute(
            insert(Plan),
            [
                {
                    "id": plan_id,
                    "code": "bench",
                    "name": "Bench",
                    "interval": "month",
                    "trial_days": 0,
                    "features": FEATURES,
                    "active": True,
                    "created_at": utcnow(),
                }
            ],
        )
        session.execute(
            insert(Subscription),
            [
                {
                    "id": new_id("sub"),
                    "customer_id": customer_id(i),
                    "plan_id": plan_id,
                    "status": "trialing",
                    "trial_ends_at": utcnow().replace(year=utcnow().year + 1),
                    "cancel_at_period_end": False,
                    "created_at": utcnow(),
                    "updated_at": utcnow(),
                }
                for i in range(1, accounts + 1)
            ],
        )


class _Checker(_Client):
    """consume.py's keep-alive client, asking entitlement questions instead."""

    def _send(self) -> None:
        customer = self._customers[self._sent % len(self._customers)]
        check = CHECKS[self._sent % len(CHECKS)]
        body = b'{"customerId":"%s",%s}' % (customer, check)
        self._sent += 1
        self._started = time.perf_counter()
        self._transport.write(b"%s%d\r\n\r\n%s" % (self._head, len(body), body))


class _Lister(_Client):
    """The same client listing a customer's entitlements (GET, no body)."""

    def _send(self) -> None:
        customer = self._customers[self._sent % len(self._customers)]
        self._sent += 1
        self._started = time.perf_counter()
        self._transport.write(self._head % customer)


def _load(
    kind: str,
    port: int,
    key: str,
    connections: int,
    seconds: float,
    accounts: list[int],
    offset: int,
) -> tuple[int, list[float], int]:
    async def run() -> tuple[int, list[float], int]:
        loop = asyncio.get_running_loop()
        client_class: type[_Client]
        if kind == "check":
            client_class = _Checker
            head = (
                f"POST /entitlements/check HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
                "Content-Length: "
            ).encode()
        else:
            client_class = _Lister
            head = (
                f"GET /entitlements/%s HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Authorization: Bearer {key}\r\n\r\n"
            ).encode()
        deadline = time.perf_counter() + seconds
        clients = []
        for n in range(connections):
            start = (offset + n) % len(accounts)
            mine = [customer_id(a).encode() for a in accounts[start:] + accounts[:start]]
            _, client = await loop.create_connection(
                functools.partial(client_class, head, uuid.uuid4().hex, mine, deadline),
                "127.0.0.1",
                port,
            )
            clients.append(client)
        await asyncio.gather(*(c.done for c in clients))
        latencies = [lat for c in clients for lat in c.latencies]
        errors = sum(c.errors for c in clients)
        return len(latencies) - errors, latencies, errors

    return uvloop.run(run())


def _driver(kind: str) -> Callable[..., tuple[int, list[float], int]]:
    def drive_entitlements(
        port: int, key: str, clients: int, seconds: float, accounts: list[int], processes: int
    ) -> tuple[int, list[float], int]:
        per = max(1, clients // processes)
        with multiprocessing.get_context("fork").Pool(processes) as pool:
            parts = pool.starmap(
                _load,
                [(kind, port, key, per, seconds, accounts, p * per) for p in range(processes)],
            )
        return (
            sum(p[0] for p in parts),
            [x for p in parts for x in p[1]],
            sum(p[2] for p in parts),
        )

    return drive_entitlements


def server_cpu_seconds(pid: int) -> float:
    """User + system CPU of the server process and every process under it (its workers)."""
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        pending.extend(int(c) for c in children)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--accounts", type=int, default=200)
    parser.add_argument("--server-workers", type=int, default=2)
    parser.add_argument("--load-processes", type=int, default=2)
    args = parser.parse_args()
    configure_logging(level=logging.WARNING)

    with LocalStripe.start() as standin, ThrowawayPostgres.start() as pg:
        url = pg.create_database("bench")
        migrations.upgrade(url)
        db = Database(url)
        key = seed(db, args.accounts)
        subscribe(db, args.accounts)
        port = free_port()
        server = start_server(url, standin.url, port, args.server_workers)
        accounts = list(range(1, args.accounts + 1))
        try:
            print(
                f"Billfold entitlements benchmark: PostgreSQL, {args.clients} clients, "
                f"{args.server_workers} server processes, {args.seconds} s each, "
                f"{args.accounts} accounts"
            )
            for label, run in (
                ("entitlements/check", _driver("check")),
                ("GET entitlements/{id}", _driver("list")),
                ("credits/consume", drive),
            ):
                run(port, key, args.clients, 2, accounts, args.load_processes)  # warm up
                cpu = server_cpu_seconds(server.pid)
                done, latencies, errors = run(
                    port, key, args.clients, args.seconds, accounts, args.load_processes
                )
                cpu = server_cpu_seconds(server.pid) - cpu
                ms = [s * 1000 for s in latencies]
                print(
                    f"  {label:<21} {done / args.seconds:8.0f} req/s  "
                    f"p50={percentile(ms, 50):6.1f} ms  p99={percentile(ms, 99):6.1f} ms  "
                    f"errors={errors}  server CPU {cpu / max(done + errors, 1) * 1000:5.2f} ms/req"
                )
        finally:
            server.terminate()
            server.wait(timeout=10)
            db.dispose()


if __name__ == "__main__":
    main()
