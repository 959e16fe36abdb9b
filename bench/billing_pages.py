"""Billing pages benchmark: the server time of the overview, credits and orders pages for a
signed-in customer holding 1,000 ledger entries (and a few orders), over HTTP against
uvicorn, on a throwaway PostgreSQL (or SQLite). Prints figures; asserts nothing.

    .venv/bin/python bench/billing_pages.py [--db postgresql|sqlite] [-n 300] [--entries 1000]
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from datetime import timedelta

import httpx
from harness import database, percentile, report, served, settings_for

from billfold import migrations
from billfold.credits import ledger
from billfold.credits.models import EntryKind
from billfold.customers import service
from billfold.kit.db import Database
from billfold.kit.observability import configure_logging
from billfold.pages import sessions
from billfold.payments import catalog, orders
from billfold.standin import LocalStripe

# /healthz first: the floor (HTTP, middleware, no database) the pages' figures stand on.
PAGES = ("/healthz", "/billing", "/billing/credits", "/billing/orders")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="postgresql")
    parser.add_argument("-n", type=int, default=300)
    parser.add_argument("--entries", type=int, default=1000)
    args = parser.parse_args()
    configure_logging(level=logging.WARNING)

    with LocalStripe.start() as standin, database(args.db) as url:
        migrations.upgrade(url)
        settings = settings_for(url, standin.url, pages_secure_cookies=False)
        db = Database(url)
        with db.transaction() as session:
            customer = service.register(
                session, name="Bench", email="bench@example.com", password="bench-password"
            )
            customer_id = customer.id
            product = catalog.create_product(
                session,
                catalog.ProductFields(name="Widget", unit_amount=999, currency="usd", stock=10**6),
                actor="bench",
            )
            for _ in range(20):
                orders.create_order(session, customer, [(product.id, 1)])
            ledger.post(
                session, customer_id, 10**9, EntryKind.GRANT, idempotency_key="seed", actor="bench"
            )
            for i in range(args.entries - 1):
                ledger.post(session, customer_id, -1, EntryKind.CONSUME, idempotency_key=f"c{i}")
            token = sessions.start_session(session, customer.user, lifetime=timedelta(hours=1))
        db.dispose()

        with (
            served(settings) as base,
            httpx.Client(base_url=base, cookies={sessions.SESSION_COOKIE: token}) as client,
        ):
            print(
                f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores) "
                f"Billing pages on {args.db}: a customer with {args.entries} ledger entries "
                f"and 20 orders, {args.n} requests per page"
            )
            for path in PAGES:
                for _ in range(20):  # warm up
                    client.get(path).raise_for_status()
                samples = []
                for _ in range(args.n):
                    started = time.perf_counter()
                    answer = client.get(path)
                    samples.append(time.perf_counter() - started)
                    answer.raise_for_status()
                report(f"GET {path}", samples)
                print(f"  {'':<44} p95={percentile([s * 1000 for s in samples], 95):7.1f} ms")


if __name__ == "__main__":
    main()
