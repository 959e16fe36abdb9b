"""Payments benchmark: latency of POST /payments/create-intent and /payments/confirm over HTTP,
against localstripe, on SQLite or a throwaway PostgreSQL, and how long the janitor takes to
settle payments whose outcome was lost. Prints figures; asserts nothing about speed.

    .venv/bin/python bench/payments.py [--db sqlite|postgresql] [-n 200]
"""

from __future__ import annotations

import argparse
import logging
import time

import httpx
import stripe
from harness import database, report, served, settings_for
from sqlalchemy import select, update

from billfold import migrations
from billfold.auth.models import Role
from billfold.customers import service
from billfold.kit.db import Database
from billfold.kit.observability import configure_logging
from billfold.payments.janitor import sweep
from billfold.payments.models import Payment
from billfold.registry import build_services
from billfold.standin import LocalStripe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="postgresql")
    parser.add_argument("-n", type=int, default=200, help="payments per scenario")
    args = parser.parse_args()
    configure_logging(level=logging.WARNING)

    with LocalStripe.start() as standin, database(args.db) as url:
        migrations.upgrade(url)
        with Database(url).transaction() as session:
            service.register(
                session,
                name="Admin",
                email="admin@bench.example",
                password="bench-admin-1",
                role=Role.ADMIN,
            )
        settings = settings_for(url, standin.url, stripe_publishable_key="pk_test_bench")
        stripe_api = stripe.StripeClient(
            "sk_test_bench",
            base_addresses={"api": standin.url},
            http_client=stripe.HTTPXClient(allow_sync_methods=True),
        )
        with served(settings) as base, httpx.Client(base_url=base, timeout=30) as http:
            admin = _login(http, "admin@bench.example", "bench-admin-1")
            product = http.post(
                "/products",
                json={"name": "Bench", "unitAmount": 1999, "currency": "usd", "stock": 10**8},
                headers=admin,
            ).json()["data"]["id"]
            buyer = _buyer(http)
            pm = _card(stripe_api)
            http.post(
                "/payments/customer/payment-methods", json={"paymentMethodId": pm}, headers=buyer
            ).raise_for_status()

            opened, confirmed, saved = [], [], []
            for _ in range(args.n):
                started = time.perf_counter()
                data = http.post(
                    "/payments/create-intent",
                    json={"productId": product, "quantity": 1},
                    headers=buyer,
                ).json()["data"]
                opened.append(time.perf_counter() - started)
                intent = data["payment_intent_id"]
                stripe_api.v1.payment_intents.update(
                    intent, params={"payment_method": _card(stripe_api)}
                )
                stripe_api.v1.payment_intents.confirm(intent)  # what Stripe.js does
                started = time.perf_counter()
                done = http.post(
                    "/payments/confirm", json={"payment_intent_id": intent}, headers=buyer
                ).json()["data"]
                confirmed.append(time.perf_counter() - started)
                assert done["status"] == "succeeded", done

                started = time.perf_counter()
                paid = http.post(
                    "/payments/create-intent",
                    json={"productId": product, "quantity": 1, "paymentMethodId": pm},
                    headers=buyer,
                ).json()["data"]
                saved.append(time.perf_counter() - started)
                assert paid["status"] == "succeeded", paid

            lost = _lost_payments(http, stripe_api, product, args.n)

        # The janitor settles them: a process killed before storing the intent, the webhook
        # lost. It finds each intent among the customer's by our payment_id.
        janitor_settings = settings_for(
            url, standin.url, stripe_timeout_seconds=1.0, payment_janitor_lease_seconds=1.5
        )
        janitor = build_services(janitor_settings)
        with janitor.db.transaction() as session:
            session.execute(
                update(Payment)
                .where(Payment.id.in_(lost))
                .values(status="creating", stripe_payment_intent_id=None)
            )
        time.sleep(janitor_settings.payment_janitor_lease_seconds)  # let them pass the lease
        started = time.perf_counter()
        while sweep(janitor).payments:
            pass
        swept = time.perf_counter() - started
        with janitor.db.transaction() as session:
            settled = session.scalars(select(Payment.status).where(Payment.id.in_(lost))).all()
        assert set(settled) == {"succeeded"}, set(settled)

        print(f"Billfold payments benchmark on {args.db} (localstripe at {standin.url})")
        report("create-intent (Elements: order + intent)", opened)
        report("confirm (re-read intent, record success)", confirmed)
        report("create-intent + pay with a saved card", saved)
        print(
            f"  janitor: {len(lost)} lost payments (no intent stored, one customer) settled in "
            f"{swept:.2f} s ({swept / max(1, len(lost)) * 1000:.1f} ms each)"
        )


def _lost_payments(
    http: httpx.Client, stripe_api: stripe.StripeClient, product: str, n: int
) -> list[str]:
    """`n` payments another customer paid at Stripe without Billfold hearing of it."""
    buyer = _buyer(http)
    lost = []
    for _ in range(n):
        data = http.post(
            "/payments/create-intent", json={"productId": product, "quantity": 1}, headers=buyer
        ).json()["data"]
        intent = data["payment_intent_id"]
        stripe_api.v1.payment_intents.update(intent, params={"payment_method": _card(stripe_api)})
        stripe_api.v1.payment_intents.confirm(intent)
        lost.append(data["paymentId"])
    return lost


def _login(http: httpx.Client, email: str, password: str) -> dict[str, str]:
    token = http.post("/auth/login", json={"email": email, "password": password}).json()["data"][
        "access_token"
    ]
    return {"Authorization": f"Bearer {token}"}


def _buyer(http: httpx.Client) -> dict[str, str]:
    body = {
        "name": "Buyer",
        "email": f"buyer-{time.time_ns()}@example.com",
        "password": "bench-buyer-1",
    }
    token = http.post("/users", json=body).json()["data"]["access_token"]
    return {"Authorization": f"Bearer {token}"}


def _card(stripe_api: stripe.StripeClient) -> str:
    return stripe_api.v1.payment_methods.create(
        params={
            "type": "card",
            "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2034, "cvc": "123"},
        }
    ).id


if __name__ == "__main__":
    main()
