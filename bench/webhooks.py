"""Outbound webhook delivery benchmark: N events to a local receiver through the job queue,
on PostgreSQL (or SQLite), by `billfold worker` processes.

    .venv/bin/python bench/webhooks.py [--events 3000] [--customers 300] [--workers 2]
                                       [--concurrency 8] [--db postgresql]

The events are written first (each with its delivery and job, as a change writes them); then
the workers start and the clock runs until every delivery is settled. The receiver, in its
own process (uvicorn), verifies every signature with the standardwebhooks library and counts
distinct webhook-ids, so lost and duplicated deliveries are counted, not assumed. Prints
deliveries per second; asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from harness import BENCH_LICENSE_KEY, database
from sqlalchemy import func, select

from billfold import migrations
from billfold.config import Settings
from billfold.kit.db import Database
from billfold.kit.observability import configure_logging
from billfold.standin import LocalStripe
from billfold.standin.launcher import free_port
from billfold.webhooks.outbound import endpoints
from billfold.webhooks.outbound.events import emit
from billfold.webhooks.outbound.models import DeliveryStatus, WebhookDelivery
from billfold.webhooks.outbound.urls import check_url

JWT_SECRET = "bench-secret-" + "x" * 32


def _receiver(port: int, secret: str) -> None:
    """A fast receiver: verify each delivery, remember its webhook-id, answer 204."""
    import uvicorn
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError

    webhook = Webhook(secret)
    seen: set[str] = set()
    counts = {"requests": 0, "rejected": 0}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["method"] == "GET":
            stats = json.dumps({**counts, "distinct": len(seen)}).encode()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": stats})
            return
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        counts["requests"] += 1
        try:
            webhook.verify(body, headers)
            seen.add(headers["webhook-id"])
            status = 204
        except WebhookVerificationError:
            counts["rejected"] += 1
            status = 400
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _stats(port: int) -> dict[str, int]:
    stats: dict[str, int] = httpx.get(f"http://127.0.0.1:{port}/stats", timeout=30).json()
    return stats


def _cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used (Linux), to judge the cost apart from the load."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _settled(db: Database) -> tuple[int, int]:
    with db.transaction() as session:
        rows = dict(
            session.execute(
                select(WebhookDelivery.status, func.count()).group_by(WebhookDelivery.status)
            ).all()
        )
    done = int(rows.get(DeliveryStatus.DELIVERED, 0))
    return done, int(rows.get(DeliveryStatus.FAILED, 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--customers", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2, help="billfold worker processes")
    parser.add_argument("--concurrency", type=int, default=8, help="threads per worker")
    parser.add_argument("--db", choices=["postgresql", "sqlite"], default="postgresql")
    args = parser.parse_args()
    configure_logging(level=logging.WARNING)

    with LocalStripe.start() as standin, database(args.db) as url:
        migrations.upgrade(url)
        settings = Settings(
            _env_file=None,
            database_url=url,
            stripe_api_base=standin.url,
            stripe_secret_key="sk_test_bench",
            jwt_secret=JWT_SECRET,
            license_private_key=BENCH_LICENSE_KEY,
            webhook_allow_private_urls="loopback",
        )
        db = Database(url)
        port = free_port()
        receiver_url = f"http://127.0.0.1:{port}/hooks"
        with db.transaction() as session:
            created = endpoints.create(
                session,
                settings,
                url=check_url(receiver_url, settings.webhook_allow_private_urls),
                event_types=None,
                description="bench",
                actor="bench",
            )
        receiver = multiprocessing.get_context("spawn").Process(
            target=_receiver, args=(port, created.secret), daemon=True
        )
        receiver.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                _stats(port)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        started = time.perf_counter()
        with db.transaction() as session:
            for n in range(args.events):
                customer = f"cust_bench{n % args.customers:06d}"
                emit(session, "credits.low_balance", customer, {"customerId": customer, "n": n})
        written = time.perf_counter() - started

        env = {
            **os.environ,
            "DATABASE_URL": url,
            "STRIPE_API_BASE": standin.url,
            "STRIPE_SECRET_KEY": "sk_test_bench",
            "JWT_SECRET": JWT_SECRET,
            "LICENSE_PRIVATE_KEY": BENCH_LICENSE_KEY,
            "WEBHOOK_ALLOW_PRIVATE_URLS": "loopback",
            "JOB_POLL_SECONDS": "0.05",
            "LOG_JSON": "true",
        }
        started = time.perf_counter()
        workers = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "billfold",
                    "worker",
                    "--concurrency",
                    str(args.concurrency),
                ],
                env=env,
                cwd=tempfile.gettempdir(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(args.workers)
        ]
        # The workers' CPU once the first delivery is recorded: what delivering costs,
        # apart from their start-up (imports: about a second and a half each).
        warm: tuple[float, int] | None = None
        try:
            while True:
                delivered, failed = _settled(db)
                if delivered + failed >= args.events:
                    break
                if warm is None and delivered:
                    warm = (sum(_cpu_seconds(w.pid) for w in workers), delivered)
                time.sleep(0.05 if warm is None else 0.2)
            elapsed = time.perf_counter() - started
            cpu = sum(_cpu_seconds(w.pid) for w in workers)
        finally:
            for worker in workers:
                worker.terminate()
            for worker in workers:
                worker.wait(timeout=30)
        with db.transaction() as session:
            first, last = session.execute(
                select(
                    func.min(WebhookDelivery.delivered_at), func.max(WebhookDelivery.delivered_at)
                )
            ).one()
        steady = (last - first).total_seconds() if first and last else 0.0
        stats = _stats(port)
        receiver.terminate()
        db.dispose()
    print(
        f"Billfold webhook delivery benchmark: {args.db}, {args.events} events for "
        f"{args.customers} customers, {args.workers} worker processes x {args.concurrency} threads"
    )
    print(f"  events written (with deliveries and jobs): {args.events / written:8.0f} events/s")
    print(
        f"  delivered: {delivered / elapsed:8.0f} deliveries/s  ({delivered} in {elapsed:.1f} s, "
        f"worker start-up included)  failed={failed}"
    )
    print(
        f"  worker CPU: {cpu / max(delivered, 1) * 1000:.2f} ms per delivery "
        f"(~{max(delivered, 1) / max(cpu, 1e-9):.0f} deliveries/s per free core)"
    )
    if warm is not None and delivered > warm[1]:
        print(
            f"  worker CPU after start-up: {(cpu - warm[0]) / (delivered - warm[1]) * 1000:.2f} ms "
            f"per delivery ({delivered - warm[1]} deliveries)"
        )
    if steady > 0:
        print(f"  first to last delivery: {delivered / steady:8.0f} deliveries/s ({steady:.1f} s)")
    lost = args.events - stats["distinct"]
    print(
        f"  receiver: {stats['requests']} requests, {stats['distinct']} distinct webhook-ids, "
        f"lost={lost}, duplicates={stats['requests'] - stats['distinct']}, "
        f"bad signatures={stats['rejected']}"
    )


if __name__ == "__main__":
    main()
