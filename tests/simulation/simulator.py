"""A seeded fault simulation in the spirit of TigerBeetle's VOPR.

One seed decides everything: which API calls run in which order (sign-up, card attach, pay
an order, cancel it, buy credits, spend them, refund), which of Stripe's webhooks arrive
(duplicated, reordered, lost), when Stripe is unreachable or its answers are lost (the
FaultyLink), and when a real worker process is killed with SIGKILL mid-job. After every
step the invariants are checked; at the end the faults stop, the recovery tools run, and
what must not be lost is checked against Stripe. A failure names its seed and every step.
"""

from __future__ import annotations

import json
import random
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import stripe
from conftest import STRIPE_KEY, WEBHOOK_SECRET
from fastapi.testclient import TestClient
from sqlalchemy import and_, func, or_, select
from support.netfault import FaultyLink
from support.payments import GENERIC_DECLINE, VISA, browser_pays, card
from support.stripe_events import delivery
from support.waiting import wait_until
from support.worker_process import start_worker_process

from billfold.config import Settings
from billfold.credits.models import CreditAccount, CreditPurchase, EntryKind, LedgerEntry
from billfold.customers.models import Customer
from billfold.jobs.models import Job, JobStatus
from billfold.jobs.worker import Worker
from billfold.kit.db import utcnow
from billfold.payments.janitor import sweep
from billfold.payments.models import Order, Payment, Product, Refund
from billfold.reconcile.service import reconcile
from billfold.services import Services
from billfold.webhooks.backfill import backfill_events

_LIVE_REFUND = ("pending", "succeeded")


class InvariantBroken(AssertionError):
    pass


@dataclass
class _User:
    customer_id: str
    email: str
    headers: dict[str, str]
    cards: list[str] = field(default_factory=list)


@dataclass
class _Order:
    id: str
    user: _User
    intent_id: str | None = None


@dataclass
class Simulation:
    seed: int
    services: Services
    settings: Settings
    client: TestClient
    worker: Worker[Services]
    link: FaultyLink
    stripe_api: stripe.StripeClient
    admin: dict[str, str]
    workdir: Path
    steps: int = 40
    rng: random.Random = field(init=False)
    trace: list[str] = field(default_factory=list)
    users: list[_User] = field(default_factory=list)
    orders: list[_Order] = field(default_factory=list)
    consume_keys: list[tuple[str, str, int]] = field(default_factory=list)
    pending_events: list[dict[str, Any]] = field(default_factory=list)
    seen_events: set[str] = field(default_factory=set)
    outage_steps: int = 0
    kills_left: int = 1
    started: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.kills_left = max(1, self.steps // 40)  # a worker start costs seconds

    # -- running -----------------------------------------------------------------------

    def run(self) -> None:
        self.started = datetime.now(UTC) - timedelta(seconds=1)
        self._setup()
        actions: list[tuple[int, Callable[[], str]]] = [
            (3, self.sign_up),
            (3, self.attach_card),
            (5, self.pay_order),
            (2, self.pay_pending_in_browser),
            (2, self.cancel_order),
            (3, self.buy_credits),
            (4, self.consume),
            (3, self.refund),
            (6, self.deliver_webhook),
            (2, self.stripe_fault),
            (3, self.run_worker),
            (1, self.kill_worker),
        ]
        weights = [w for w, _ in actions]
        for number in range(1, self.steps + 1):
            self._tick_outage()
            action = self.rng.choices([a for _, a in actions], weights)[0]
            try:
                what = action()
            except InvariantBroken:
                raise
            except Exception as exc:
                self._fail(number, f"{action.__name__} raised {exc!r}")
            self.trace.append(f"{number:3} {action.__name__}: {what}")
            self._check_now(number)
        self._heal()
        self._check_now(self.steps + 1)
        self._check_nothing_lost()

    def _fail(self, step: int, message: str) -> None:
        lines = "\n".join(self.trace[-80:])
        raise InvariantBroken(
            f"simulation seed={self.seed} failed at step {step}: {message}\n"
            f"rerun: BILLFOLD_SIM_SEED={self.seed} pytest tests/simulation -q\n"
            f"steps:\n{lines}"
        )

    def _setup(self) -> None:
        body = {"name": "Widget", "unitAmount": 1500, "currency": "usd", "stock": 500}
        self.product = self._ok(self.client.post("/products", json=body, headers=self.admin))
        package = {"name": "500 credits", "credits": 500, "price": 500}
        self.package = self._ok(
            self.client.post("/credits/packages", json=package, headers=self.admin)
        )
        key = self._ok(self.client.post("/api-keys", json={"name": "sim"}, headers=self.admin))
        self.service_key = {"Authorization": f"Bearer {key['key']}"}
        for _ in range(2):
            self.sign_up()

    def _ok(self, response: httpx.Response) -> dict[str, Any]:
        assert response.status_code in (200, 201), response.text
        data: dict[str, Any] = response.json()["data"]
        return data

    def _answer(self, response: httpx.Response) -> str:
        """The status (and error code) of an answer; a server error breaks an invariant."""
        if response.status_code >= 500 and response.status_code not in (502, 503):
            raise InvariantBroken(
                f"seed={self.seed}: server error {response.status_code}: {response.text[:300]}\n"
                + "\n".join(self.trace[-80:])
            )
        if response.status_code >= 400:
            return f"{response.status_code} {response.json()['error']['code']}"
        return str(response.status_code)

    # -- faults ------------------------------------------------------------------------

    def _tick_outage(self) -> None:
        if self.outage_steps > 0:
            self.outage_steps -= 1
            if self.outage_steps == 0:
                self.link.up()

    def stripe_fault(self) -> str:
        steps = self.rng.randint(1, 3)
        self.outage_steps = steps + 1  # counted down before each step, this one included
        if self.rng.random() < 0.5:
            self.link.down()
            return f"Stripe unreachable for {steps} step(s)"
        self.link.drop_responses()
        return f"Stripe's answers lost for {steps} step(s)"

    def run_worker(self) -> str:
        ran = self.worker.run_until_idle(max_jobs=200)
        return f"worker ran {ran} job(s)"

    def kill_worker(self) -> str:
        """A real worker process, killed with SIGKILL while it holds a job."""
        if self.kills_left <= 0 or not self._due_jobs():
            return "nothing to kill for"
        self.kills_left -= 1
        process = start_worker_process(self.settings, self.link.url, STRIPE_KEY, self.workdir)
        try:
            wait_until(lambda: self._running_jobs() > 0 or not self._due_jobs(), 15, 0.01)
            time.sleep(self.rng.uniform(0.0, 0.15))
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
        return f"worker process SIGKILLed with {self._running_jobs()} job(s) leased"

    def _due_jobs(self) -> int:
        with self.services.db.transaction() as session:
            return int(
                session.scalar(
                    select(func.count()).select_from(Job).where(Job.status == JobStatus.PENDING)
                )
                or 0
            )

    def _running_jobs(self) -> int:
        with self.services.db.transaction() as session:
            return int(
                session.scalar(
                    select(func.count()).select_from(Job).where(Job.status == JobStatus.RUNNING)
                )
                or 0
            )

    # -- webhooks ----------------------------------------------------------------------

    def _collect_events(self) -> None:
        listed = self.stripe_api.v1.events.list(
            params={"created": {"gte": int(self.started.timestamp())}, "limit": 100}
        )
        for evt in listed.auto_paging_iter():
            if evt.id not in self.seen_events:
                self.seen_events.add(evt.id)
                self.pending_events.append(json.loads(json.dumps(evt.to_dict(), default=str)))

    def deliver_webhook(self) -> str:
        self._collect_events()
        if not self.pending_events:
            return "no event to deliver"
        evt = self.pending_events[self.rng.randrange(len(self.pending_events))]
        roll = self.rng.random()
        if roll < 0.15:
            self.pending_events.remove(evt)
            return f"{evt['type']} {evt['id']} lost"
        body, headers = delivery(evt, WEBHOOK_SECRET)
        answer = self._answer(self.client.post("/webhooks/stripe", content=body, headers=headers))
        if roll < 0.35:
            return f"{evt['type']} {evt['id']} delivered (again later) → {answer}"
        self.pending_events.remove(evt)
        return f"{evt['type']} {evt['id']} delivered → {answer}"

    # -- API calls ---------------------------------------------------------------------

    def _user(self) -> _User:
        return self.users[self.rng.randrange(len(self.users))]

    def sign_up(self) -> str:
        email = f"sim-{self.seed}-{uuid.uuid4().hex[:8]}@example.com"
        body = {"name": "Sim User", "email": email, "password": "correct horse 1"}
        response = self.client.post("/users", json=body)
        answer = self._answer(response)
        if response.status_code == 201:
            data = response.json()["data"]
            user = _User(
                data["user"]["customerId"],
                email,
                {"Authorization": f"Bearer {data['access_token']}"},
            )
            self.users.append(user)
            return f"{user.customer_id} → {answer}"
        return f"{email} → {answer}"

    def attach_card(self) -> str:
        user = self._user()
        number = GENERIC_DECLINE if self.rng.random() < 0.1 else VISA
        pm = card(self.stripe_api, number)
        response = self.client.post(
            "/payments/customer/payment-methods", json={"paymentMethodId": pm}, headers=user.headers
        )
        if response.status_code == 200:
            user.cards.append(pm)
        return f"{user.customer_id} {pm} → {self._answer(response)}"

    def pay_order(self) -> str:
        user = self._user()
        body: dict[str, Any] = {"productId": self.product["id"], "quantity": 1}
        saved = bool(user.cards) and self.rng.random() < 0.6
        if saved:
            body["paymentMethodId"] = self.rng.choice(user.cards)
        response = self.client.post("/payments/create-intent", json=body, headers=user.headers)
        answer = self._answer(response)
        if response.status_code != 200:
            return f"{user.customer_id} saved={saved} → {answer}"
        data = response.json()["data"]
        order = _Order(data["orderId"], user, data.get("payment_intent_id"))
        self.orders.append(order)
        if not saved and order.intent_id and self.rng.random() < 0.5:
            return f"{order.id} opened; " + self._pay_in_browser(order)
        return f"{order.id} saved={saved} → {answer} {data['status']}"

    def pay_pending_in_browser(self) -> str:
        open_orders = [o for o in self.orders if o.intent_id]
        if not open_orders:
            return "no order with an intent"
        return self._pay_in_browser(self.rng.choice(open_orders))

    def _pay_in_browser(self, order: _Order) -> str:
        assert order.intent_id is not None
        intent = self.stripe_api.v1.payment_intents.retrieve(order.intent_id)
        if intent.status not in ("requires_payment_method", "requires_confirmation"):
            return f"{order.id} intent is {intent.status}"
        paid = browser_pays(self.stripe_api, order.intent_id)
        if self.rng.random() < 0.5:
            return f"{order.id} paid in the browser ({paid.status}); the page never confirmed"
        response = self.client.post(
            "/payments/confirm",
            json={"payment_intent_id": order.intent_id},
            headers=order.user.headers,
        )
        return f"{order.id} paid in the browser, confirm → {self._answer(response)}"

    def cancel_order(self) -> str:
        if not self.orders:
            return "no order"
        order = self.rng.choice(self.orders)
        response = self.client.post(f"/orders/{order.id}/cancel", headers=order.user.headers)
        return f"{order.id} → {self._answer(response)}"

    def buy_credits(self) -> str:
        user = self._user()
        if not user.cards:
            return f"{user.customer_id} has no card"
        body = {"packageId": self.package["id"], "paymentMethodId": self.rng.choice(user.cards)}
        response = self.client.post("/credits/purchase", json=body, headers=user.headers)
        return f"{user.customer_id} → {self._answer(response)}"

    def consume(self) -> str:
        user = self._user()
        if self.consume_keys and self.rng.random() < 0.3:
            customer_id, key, amount = self.rng.choice(self.consume_keys)  # a retry
        else:
            customer_id, key, amount = user.customer_id, uuid.uuid4().hex, self.rng.randint(1, 300)
            self.consume_keys.append((customer_id, key, amount))
        body = {"customerId": customer_id, "amount": amount, "idempotencyKey": key}
        response = self.client.post("/credits/consume", json=body, headers=self.service_key)
        return f"{customer_id} {amount} key={key[:6]} → {self._answer(response)}"

    def refund(self) -> str:
        with self.services.db.transaction() as session:
            paid = list(
                session.scalars(
                    select(Payment.id).where(Payment.status == "succeeded").order_by(Payment.id)
                )
            )
        if not paid:
            return "no payment to refund"
        payment_id = self.rng.choice(paid)
        body: dict[str, Any] = {"reason": "requested_by_customer"}
        if self.rng.random() < 0.5:
            body["amount"] = self.rng.randint(1, 900)
        response = self.client.post(f"/payments/{payment_id}/refund", json=body, headers=self.admin)
        return f"{payment_id} {body.get('amount', 'all')} → {self._answer(response)}"

    # -- the end: faults stop, recovery runs ---------------------------------------------

    def _heal(self) -> None:
        self.link.up()
        self.outage_steps = 0
        self._collect_events()
        self.rng.shuffle(self.pending_events)
        for evt in self.pending_events:
            body, headers = delivery(evt, WEBHOOK_SECRET)
            self._answer(self.client.post("/webhooks/stripe", content=body, headers=headers))
        self.pending_events.clear()
        self._drain()
        backfill_events(self.services, self.started)
        self._drain()
        if not wait_until(self._janitor_settled, 30, 0.2):
            self._fail(self.steps + 1, "the janitor left payments or refunds open")
        reconcile(self.services, fix=True, quiet_seconds=0)
        self._drain()
        self.trace.append("end: Stripe back, webhooks in, backfill, janitor, reconcile --fix")

    def _janitor_settled(self) -> bool:
        """One janitor sweep (it looks only at records older than its lease), then: is
        anything still `creating` or `pending`?"""
        sweep(self.services)
        self._drain()
        with self.services.db.transaction() as session:
            creating = session.scalar(
                select(func.count()).select_from(Payment).where(Payment.status == "creating")
            )
            pending = session.scalar(
                select(func.count()).select_from(Refund).where(Refund.status == "pending")
            )
        return not creating and not pending

    def _drain(self) -> None:
        """Run jobs until none is left; leases of a killed worker run out first."""

        def idle() -> bool:
            self.worker.run_until_idle(max_jobs=500)
            # Recurring jobs are always pending, far ahead: only what is due soon counts.
            soon = utcnow() + timedelta(seconds=10)
            with self.services.db.transaction() as session:
                left = session.scalar(
                    select(func.count())
                    .select_from(Job)
                    .where(
                        or_(
                            Job.status == JobStatus.RUNNING,
                            and_(Job.status == JobStatus.PENDING, Job.run_at <= soon),
                        )
                    )
                )
            return not left

        if not wait_until(idle, 60, 0.1):
            self._fail(self.steps + 1, "jobs still pending after the faults stopped")

    # -- invariants --------------------------------------------------------------------

    def _check_now(self, step: int) -> None:
        for problem in self._broken_now():
            self._fail(step, problem)

    def _broken_now(self) -> list[str]:
        broken: list[str] = []
        with self.services.db.transaction() as session:
            for account in session.scalars(select(CreditAccount)):
                total = session.scalar(
                    select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
                        LedgerEntry.customer_id == account.customer_id
                    )
                )
                if account.balance != total or account.balance < 0:
                    broken.append(
                        f"{account.customer_id}: balance {account.balance} != ledger sum {total}"
                    )
            for purchase in session.scalars(select(CreditPurchase)):
                granted = session.scalar(
                    select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
                        LedgerEntry.customer_id == purchase.customer_id,
                        LedgerEntry.kind == EntryKind.PURCHASE,
                        LedgerEntry.reference_id == purchase.payment_id,
                    )
                )
                if granted not in (0, purchase.credits):
                    broken.append(f"{purchase.payment_id}: granted {granted} credits")
            for payment in session.scalars(select(Payment)):
                live = sum(r.amount for r in payment.refunds if r.status in _LIVE_REFUND)
                if payment.amount_refunded != live or live > payment.amount:
                    broken.append(
                        f"{payment.id}: amount_refunded {payment.amount_refunded}, refunds "
                        f"{[(r.id, r.amount, r.status) for r in payment.refunds]}, "
                        f"amount {payment.amount}"
                    )
            for order in session.scalars(select(Order)):
                if order.canceled_at is not None and order.status == "paid":
                    broken.append(f"{order.id}: canceled at {order.canceled_at} yet paid")
                succeeded = session.scalar(
                    select(func.count())
                    .select_from(Payment)
                    .where(Payment.order_id == order.id, Payment.status == "succeeded")
                )
                if (succeeded or 0) > 1:
                    broken.append(f"{order.id}: paid {succeeded} times")
            product = session.get(Product, self.product["id"])
            if product is not None and product.stock < 0:
                broken.append(f"stock went below zero: {product.stock}")
            linked = {c.id: c.stripe_customer_id for c in session.scalars(select(Customer))}
        for user in self.users:
            theirs = [
                c.id
                for c in self.stripe_api.v1.customers.list(
                    params={"email": user.email, "limit": 100}
                ).auto_paging_iter()
                if (c.to_dict().get("metadata") or {}).get("customer_id") == user.customer_id
                and not c.to_dict().get("deleted")
            ]
            if len(theirs) > 1:
                broken.append(f"{user.customer_id} has {len(theirs)} Stripe customers: {theirs}")
            ours = linked.get(user.customer_id)
            if ours is not None and ours not in theirs:
                broken.append(f"{user.customer_id} is linked to {ours}, not one of {theirs}")
        return broken

    def _check_nothing_lost(self) -> None:
        """Once the faults stop and recovery ran: Stripe's money and ours agree."""
        broken: list[str] = []
        with self.services.db.transaction() as session:
            payments = {p.id: p for p in session.scalars(select(Payment))}
            for payment in payments.values():
                session.refresh(payment)
            by_intent = {p.stripe_payment_intent_id: p for p in payments.values()}
            orders = {o.id: o for o in session.scalars(select(Order))}
            refunds = {r.stripe_refund_id: r for r in session.scalars(select(Refund))}
            purchases = {p.payment_id: p for p in session.scalars(select(CreditPurchase))}
            granted = {
                e.reference_id: e.amount
                for e in session.scalars(
                    select(LedgerEntry).where(LedgerEntry.kind == EntryKind.PURCHASE)
                )
            }
        for intent in self._our_intents():
            payment_id = intent["metadata"]["payment_id"]
            found = by_intent.get(intent["id"]) or payments.get(payment_id)
            if found is None:
                broken.append(f"{intent['id']} ({payment_id}) is unknown here")
                continue
            payment = found
            if intent["status"] == "succeeded" and payment.status != "succeeded":
                order = orders.get(payment.order_id or "")
                refunded = sum(
                    r["amount"]
                    for r in self.stripe_api.v1.refunds.list(
                        params={"payment_intent": intent["id"]}
                    ).auto_paging_iter()
                )
                if not (order and order.canceled_at and refunded == intent["amount"]):
                    broken.append(
                        f"{payment.id}: charged at Stripe ({intent['id']}) but {payment.status} "
                        f"here (order {order.status if order else None}, refunded {refunded})"
                    )
            if payment.status == "succeeded" and intent["status"] != "succeeded":
                broken.append(f"{payment.id}: succeeded here, {intent['status']} at Stripe")
            purchase = purchases.get(payment.id)
            if (
                payment.status == "succeeded"
                and purchase is not None
                and granted.get(payment.id) != purchase.credits
            ):
                broken.append(f"{payment.id}: paid but granted {granted.get(payment.id)}")
            for remote in self.stripe_api.v1.refunds.list(
                params={"payment_intent": intent["id"]}
            ).auto_paging_iter():
                mine = refunds.get(remote.id)
                if mine is None or mine.amount != remote.amount:
                    broken.append(f"Stripe refund {remote.id} of {payment.id} not recorded once")
        for payment in payments.values():
            if payment.status == "creating" or any(r.status == "pending" for r in payment.refunds):
                broken.append(
                    f"{payment.id}: still {payment.status} with refunds "
                    f"{[(r.id, r.status) for r in payment.refunds]} after recovery"
                )
        for problem in broken:
            self._fail(self.steps + 1, problem)

    def _our_intents(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        with self.services.db.transaction() as session:
            ours = set(session.scalars(select(Payment.id)))
        for user in self.users:
            with self.services.db.transaction() as session:
                customer = session.get(Customer, user.customer_id)
                stripe_id = customer.stripe_customer_id if customer else None
            if stripe_id is None:
                continue
            listed = self.stripe_api.v1.payment_intents.list(
                params={"customer": stripe_id, "limit": 100}
            )
            for intent in listed.auto_paging_iter():
                plain = intent.to_dict()
                if (plain.get("metadata") or {}).get("payment_id") in ours:
                    found.append(plain)
        return found
