"""Subscriptions benchmark: license issue and verify time, and webhook processing time per
Stripe subscription event (stored, then applied by the worker, which re-reads Stripe), on
SQLite or a throwaway PostgreSQL against localstripe. Prints figures; asserts nothing.

    .venv/bin/python bench/subscriptions.py [--db sqlite|postgresql] [-n 200]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import uuid

import stripe
from harness import database, report, settings_for
from sqlalchemy import select
from support.stripe_events import event

from billfold import migrations
from billfold.customers import service
from billfold.kit.observability import configure_logging
from billfold.registry import build_services, build_worker
from billfold.standin import LocalStripe
from billfold.subscriptions import licenses, revocations
from billfold.subscriptions.lifecycle import start_trial
from billfold.subscriptions.models import Subscription
from billfold.subscriptions.plans import create_plan
from billfold.webhooks import inbox


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="postgresql")
    parser.add_argument("-n", type=int, default=200)
    args = parser.parse_args()
    configure_logging(level=logging.WARNING)

    with LocalStripe.start() as standin, database(args.db) as url:
        migrations.upgrade(url)
        services = build_services(settings_for(url, standin.url))
        stripe_api = stripe.StripeClient(
            "sk_test_bench",
            base_addresses={"api": standin.url},
            http_client=stripe.HTTPXClient(allow_sync_methods=True),
        )
        stripe_api.v1.plans.create(
            params={
                "id": "price_bench",
                "amount": 900,
                "currency": "usd",
                "interval": "month",
                "product": {"name": "Bench"},
            }
        )
        create_plan(
            services,
            {
                "code": "trial",
                "name": "Trial",
                "trial_days": 14,
                "features": {"limits": {"projects": 1}},
            },
            actor="bench",
        )
        create_plan(
            services,
            {
                "code": "starter",
                "name": "Starter",
                "stripe_price_id": "price_bench",
                "features": {"limits": {"projects": 5}},
            },
            actor="bench",
        )
        with services.db.transaction() as session:
            customer = service.register(
                session,
                name="Bench",
                email="bench@example.com",
                password="bench-password-1",
            )
            start_trial(session, customer, services.settings, services.licenses)
            customer_id = customer.id

        issued, verified = [], []
        for _ in range(args.n):
            with services.db.transaction() as session:
                subscription_row = session.scalars(
                    select(Subscription).where(Subscription.customer_id == customer_id)
                ).one()
                started = time.perf_counter()
                lic = licenses.issue(
                    session, subscription_row, services.settings, services.licenses
                )
                issued.append(time.perf_counter() - started)
                token = lic.token
            started = time.perf_counter()
            licenses.verify(token, services.licenses.public_keys())
            verified.append(time.perf_counter() - started)

        # The revocation list now names the n superseded licenses: built and signed anew
        # (what every request did) against served while nothing changed it.
        rebuilt, served = [], []
        for _ in range(args.n):
            with services.db.transaction() as session:
                started = time.perf_counter()
                listed = revocations.publish(session, services.licenses)
                rebuilt.append(time.perf_counter() - started)
            with services.db.transaction() as session:
                started = time.perf_counter()
                revocations.current(session, services.licenses, services.memo)
                served.append(time.perf_counter() - started)

        stripe_customer = stripe_api.v1.customers.create(params={"email": "bench@example.com"})
        card = stripe_api.v1.payment_methods.create(
            params={
                "type": "card",
                "card": {
                    "number": "4242424242424242",
                    "exp_month": 12,
                    "exp_year": 2034,
                    "cvc": "123",
                },
            }
        )
        stripe_api.v1.payment_methods.attach(card.id, params={"customer": stripe_customer.id})
        stripe_api.v1.customers.update(
            stripe_customer.id, params={"invoice_settings": {"default_payment_method": card.id}}
        )
        sub = stripe_api.v1.subscriptions.create(
            params={
                "customer": stripe_customer.id,
                "items": [{"plan": "price_bench"}],
                "metadata": {"customer_id": customer_id},
            }
        )
        obj = json.loads(json.dumps(sub.to_dict(for_json=True)))
        worker = build_worker(services)
        processed = []
        for i in range(args.n):
            evt = event(
                "customer.subscription.updated",
                obj,
                created=int(time.time()) + i,
                event_id=f"evt_bench_{uuid.uuid4().hex[:16]}",
            )
            with services.db.transaction() as session:
                inbox.receive(session, evt, json.dumps(evt).encode())
            started = time.perf_counter()
            worker.run_until_idle()
            processed.append(time.perf_counter() - started)

        print(f"Billfold subscriptions benchmark on {args.db} (localstripe at {standin.url})")
        report("license issue (sign + record + queue mail)", issued)
        report("license verify (offline, EdDSA)", verified)
        report(f"revocation list built + signed ({len(listed.revoked)} IDs)", rebuilt)
        report("revocation list served unchanged (one aggregate)", served)
        report("subscription webhook processed (re-read Stripe)", processed)
        services.db.dispose()


if __name__ == "__main__":
    main()
