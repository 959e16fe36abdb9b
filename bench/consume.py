"""Consume benchmark: POST /credits/consume over HTTP on PostgreSQL with N concurrent clients,
on many accounts and on one hot account, against what pgbench reaches for the same bare SQL
(update the balance + insert the ledger row) on the same server, in the same run.

    .venv/bin/python bench/consume.py [--clients 32] [--seconds 10] [--accounts 200]

Each account starts with a ledger history and the database with fresh statistics (ANALYZE),
as a running deployment has them. Billfold runs as `billfold serve --no-worker --workers N`;
the load comes from separate processes (keep-alive connections). On a 2-core machine the
load generator, the server and PostgreSQL share the cores. Prints figures; asserts nothing
about speed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import multiprocessing
import os
import pstats
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import cast

import httpx
import uvloop
from harness import BENCH_LICENSE_KEY, percentile
from sqlalchemy import insert, text
from support.postgres import ThrowawayPostgres, find_pg_bin

from billfold import migrations
from billfold.auth.models import User
from billfold.auth.service import create_api_key
from billfold.credits.models import CreditAccount, EntryKind, LedgerEntry
from billfold.customers.models import Customer
from billfold.kit.db import Database, new_id, utcnow
from billfold.kit.observability import configure_logging
from billfold.standin import LocalStripe, free_port

START_BALANCE = 10**12
# Ledger entries each account starts with. A running deployment has history and planner
# statistics: on empty, never-analysed tables PostgreSQL plans sequential scans until
# autovacuum's first ANALYZE (a minute or more in), which is not the steady state measured.
HISTORY = 50

PGBENCH_SCRIPT = """\\set aid random(1, :naccounts)
BEGIN;
UPDATE credit_accounts SET balance = balance - 1, entries = entries + 1
  WHERE customer_id = 'cust_' || lpad(:aid::text, 32, '0') AND balance >= 1
  RETURNING balance, entries \\gset
INSERT INTO credit_transactions
  (id, customer_id, entry_no, amount, balance_after, kind, idempotency_key, created_at)
  VALUES ('ctx_' || md5(random()::text), 'cust_' || lpad(:aid::text, 32, '0'), :entries, -1,
          :balance, 'consume', 'consume:' || md5(random()::text), now());
END;
"""


PROFILED_SERVE = Path(__file__).with_name("profiled_serve.py")


def customer_id(i: int) -> str:
    return f"cust_{i:032d}"


def seed(db: Database, accounts: int) -> str:
    """`accounts` customers with a large balance; answers a service API key."""
    users = [
        {
            "id": f"usr_{i:032d}",
            "email": f"bench{i}@example.com",
            "email_normalized": f"bench{i}@example.com",
            "name": f"Bench {i}",
            "role": "user",
            "is_email_verified": False,
        }
        for i in range(1, accounts + 1)
    ]
    with db.transaction() as session:
        session.execute(insert(User), users)
        session.execute(
            insert(Customer),
            [
                {
                    "id": customer_id(i),
                    "user_id": f"usr_{i:032d}",
                    "profile_version": 1,
                    "stripe_synced_version": 0,
                }
                for i in range(1, accounts + 1)
            ],
        )
        session.execute(
            insert(CreditAccount),
            [
                {
                    "customer_id": customer_id(i),
                    "balance": START_BALANCE,
                    "entries": HISTORY,
                    "auto_recharge_enabled": False,
                }
                for i in range(1, accounts + 1)
            ],
        )
        session.execute(
            insert(LedgerEntry), [e for i in range(1, accounts + 1) for e in history(i)]
        )
        _key, plaintext = create_api_key(session, "bench", actor="bench")
    with db.engine.begin() as connection:
        connection.execute(text("ANALYZE"))
    return plaintext


def history(i: int) -> list[dict[str, object]]:
    """A grant, then HISTORY - 1 debits of 1, ending at START_BALANCE."""
    now = utcnow()
    entries: list[dict[str, object]] = []
    balance = 0
    for n in range(1, HISTORY + 1):
        amount = START_BALANCE + HISTORY - 1 if n == 1 else -1
        balance += amount
        entries.append(
            {
                "id": new_id("ctx"),
                "customer_id": customer_id(i),
                "entry_no": n,
                "amount": amount,
                "balance_after": balance,
                "kind": EntryKind.GRANT if n == 1 else EntryKind.CONSUME,
                "idempotency_key": f"seed:{n}",
                "created_at": now,
            }
        )
    return entries


class _Client(asyncio.Protocol):
    """One keep-alive connection posting debits one after another until the deadline.

    Written against the socket rather than with an HTTP library: the load shares the
    machine's cores with the server and PostgreSQL, and pgbench (the yardstick) is C.
    """

    def __init__(self, head: bytes, run: str, customers: list[bytes], deadline: float) -> None:
        self._head = head
        self._run = run
        self._customers = customers
        self._deadline = deadline
        self._sent = 0
        self._buffer = b""
        self._started = 0.0
        self.latencies: list[float] = []
        self.errors = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.WriteTransport, transport)
        self._send()

    def _send(self) -> None:
        customer = self._customers[self._sent % len(self._customers)]
        body = b'{"amount":1,"idempotencyKey":"%s-%d","customerId":"%s"}' % (
            self._run.encode(),
            self._sent,
            customer,
        )
        self._sent += 1
        self._started = time.perf_counter()
        self._transport.write(b"%s%d\r\n\r\n%s" % (self._head, len(body), body))

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self._buffer[:end].lower()
        length = int(head.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
        if len(self._buffer) < end + 4 + length:
            return
        self._buffer = self._buffer[end + 4 + length :]
        self.latencies.append(time.perf_counter() - self._started)
        self.errors += not head.startswith(b"http/1.1 200")
        if time.perf_counter() < self._deadline:
            self._send()
        else:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


def _load(
    port: int, key: str, connections: int, seconds: float, accounts: list[int], offset: int
) -> tuple[int, list[float], int]:
    """One load process: `connections` keep-alive connections posting debits until the deadline."""

    async def run() -> tuple[int, list[float], int]:
        loop = asyncio.get_running_loop()
        head = (
            f"POST /credits/consume HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
            "Content-Length: "
        ).encode()
        deadline = time.perf_counter() + seconds
        run_id = uuid.uuid4().hex
        clients = []
        for n in range(connections):
            # Each connection walks the accounts from its own starting point.
            start = (offset + n) % len(accounts)
            mine = [customer_id(a).encode() for a in accounts[start:] + accounts[:start]]
            _, client = await loop.create_connection(
                functools.partial(_Client, head, f"{run_id}-{n}", mine, deadline), "127.0.0.1", port
            )
            clients.append(client)
        await asyncio.gather(*(c.done for c in clients))
        latencies = [lat for c in clients for lat in c.latencies]
        errors = sum(c.errors for c in clients)
        return len(latencies) - errors, latencies, errors

    return uvloop.run(run())


def drive(
    port: int, key: str, clients: int, seconds: float, accounts: list[int], processes: int
) -> tuple[int, list[float], int]:
    """(successful requests, latencies, errors) of `clients` connections over `processes`."""
    per = max(1, clients // processes)
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        parts = pool.starmap(
            _load, [(port, key, per, seconds, accounts, p * per) for p in range(processes)]
        )
    return (
        sum(p[0] for p in parts),
        [lat for p in parts for lat in p[1]],
        sum(p[2] for p in parts),
    )


def pgbench(
    pg: ThrowawayPostgres, database: str, clients: int, seconds: int, accounts: int
) -> float:
    bin_dir = find_pg_bin()
    assert bin_dir is not None
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as script:
        script.write(PGBENCH_SCRIPT)
    out = subprocess.run(
        [
            str(bin_dir / "pgbench"),
            "-n",
            "-c",
            str(clients),
            "-j",
            "2",
            "-T",
            str(seconds),
            "-D",
            f"naccounts={accounts}",
            "-f",
            script.name,
            "-h",
            "127.0.0.1",
            "-p",
            str(pg.port),
            "-U",
            "postgres",
            database,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    os.unlink(script.name)
    found = re.search(r"tps = ([0-9.]+)", out)
    assert found, out
    return float(found.group(1))


def autovacuum_runs(db: Database) -> int:
    """Autovacuum and autoanalyze runs so far on the benchmark's tables. They share the
    machine's cores with the run, so a figure taken while one ran is lower: say so."""
    with db.engine.connect() as connection:
        runs = connection.execute(
            text(
                "SELECT coalesce(sum(autovacuum_count + autoanalyze_count), 0)"
                " FROM pg_stat_user_tables"
            )
        ).scalar_one()
    return int(runs)


def _process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (uvicorn's supervisor and its worker processes)."""
    found = [pid]
    for at in found:
        with contextlib.suppress(OSError):
            found += [int(c) for c in Path(f"/proc/{at}/task/{at}/children").read_text().split()]
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU used so far by a process and its descendants (Linux): the server's
    cost apart from the load generator, pgbench and the other users of a shared machine."""
    total = 0.0
    for at in _process_tree(pid):
        try:
            fields = Path(f"/proc/{at}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def record_profiles(py_spy: str, pid: int, seconds: int, out: str) -> list[subprocess.Popen[bytes]]:
    """py-spy recording every server process (not the supervisor) for `seconds`, as raw
    collapsed stacks in OUT.<pid>.txt."""
    return [
        subprocess.Popen(
            [
                py_spy,
                "record",
                "--pid",
                str(at),
                "-d",
                str(seconds),
                "-r",
                "200",
                "-f",
                "raw",
                "-o",
                f"{out}.{at}.txt",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for at in _process_tree(pid)[1:]
    ]


def start_server(
    url: str, stripe_base: str, port: int, workers: int, profile: str | None = None
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "STRIPE_API_BASE": stripe_base,
        "STRIPE_SECRET_KEY": "sk_test_bench",
        "JWT_SECRET": "bench-secret-" + "x" * 32,
        "LICENSE_PRIVATE_KEY": BENCH_LICENSE_KEY,
    }
    command = [
        sys.executable,
        "-m",
        "billfold",
        "serve",
        "--no-worker",
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    if profile is not None:  # one process, every thread under cProfile
        command = [sys.executable, str(PROFILED_SERVE), profile, "--port", str(port)]
    process = subprocess.Popen(
        command,
        env=env,
        cwd=tempfile.gettempdir(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120  # a loaded machine starts the processes slowly
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("billfold serve did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--accounts", type=int, default=200)
    parser.add_argument("--server-workers", type=int, default=2, help="billfold serve processes")
    parser.add_argument("--load-processes", type=int, default=2, help="processes sending load")
    parser.add_argument(
        "--profile",
        metavar="OUT",
        help="run one server process under cProfile, write its statistics to OUT and print"
        " where its time went (figures are then far below the real ones)",
    )
    parser.add_argument("--only", choices=["many", "hot"], help="run one scenario")
    parser.add_argument(
        "--py-spy",
        nargs=2,
        metavar=("PY_SPY", "OUT"),
        help="record the server processes with this py-spy during each HTTP run, as raw"
        " collapsed stacks in OUT-<scenario>.<pid>.txt",
    )
    args = parser.parse_args()
    configure_logging(level=logging.WARNING)

    with LocalStripe.start() as standin, ThrowawayPostgres.start() as pg:
        url = pg.create_database("bench")
        migrations.upgrade(url)
        db = Database(url)
        key = seed(db, args.accounts)
        port = free_port()
        server = start_server(url, standin.url, port, args.server_workers, args.profile)
        try:
            print(
                f"Billfold consume benchmark: PostgreSQL, {args.clients} clients "
                f"({args.load_processes} load processes), "
                f"{1 if args.profile else args.server_workers} server processes"
                f"{' under cProfile' if args.profile else ''}, "
                f"{args.seconds} s per scenario, {args.accounts} accounts"
            )
            scenarios = [
                ("many", "many accounts", list(range(1, args.accounts + 1))),
                ("hot", "one hot account", [1]),
            ]
            for _name, label, accounts in [s for s in scenarios if args.only in (None, s[0])]:
                drive(port, key, args.clients, 2, accounts, args.load_processes)  # warm up
                vacuums = autovacuum_runs(db)
                spies = (
                    record_profiles(
                        args.py_spy[0], server.pid, args.seconds, f"{args.py_spy[1]}-{_name}"
                    )
                    if args.py_spy
                    else []
                )
                cpu = cpu_seconds(server.pid)
                done, latencies, errors = drive(
                    port, key, args.clients, args.seconds, accounts, args.load_processes
                )
                cpu = cpu_seconds(server.pid) - cpu
                for spy in spies:
                    spy.wait()
                vacuums = autovacuum_runs(db) - vacuums
                rps = done / args.seconds
                tps = pgbench(pg, "bench", args.clients, args.seconds, len(accounts))
                ms = [s * 1000 for s in latencies]
                print(
                    f"  {label:<16} HTTP {rps:8.0f} req/s  p50={percentile(ms, 50):6.1f} ms  "
                    f"p99={percentile(ms, 99):6.1f} ms  errors={errors}  |  pgbench {tps:8.0f} tps"
                    f"  |  ratio {rps / tps:5.2f}"
                    + (f"  (autovacuum ran {vacuums}x during the HTTP run)" if vacuums else "")
                )
                # CPU per request holds up on a busy machine, where requests/s do not.
                print(
                    f"  {'':<16} server CPU {cpu / max(done + errors, 1) * 1000:.3f} ms per"
                    f" request ({cpu:.1f} s for {done + errors} requests)"
                )
        finally:
            server.terminate()
            server.wait(timeout=30)
            db.dispose()
    if args.profile:
        stats = pstats.Stats(args.profile)
        stats.sort_stats("tottime").print_stats(25)
        stats.sort_stats("cumulative").print_stats(40)


if __name__ == "__main__":
    main()
