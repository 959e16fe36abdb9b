"""The wallet's invariants under random interleavings (hypothesis, stateful), on the real
database and a real localstripe: the balance always equals the sum of the ledger and is never
negative, entries are append-only and numbered without gaps, each movement is recorded once,
and every step moves the balance exactly as a simple model of the wallet says."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
import stripe
from factories import auth, register
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, seed
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import select
from support.payments import saved_card

from billfold.credits.models import (
    CreditAccount,
    CreditPurchase,
    EntryKind,
    LedgerEntry,
    PurchaseKind,
    PurchaseStatus,
)
from billfold.jobs.worker import Worker
from billfold.payments.models import Payment
from billfold.services import Services

# (credits, price) of the packages on sale; custom amounts cost 1 (minor unit) per credit.
PACKAGES = [(100, 100), (500, 450), (2000, 1800)]
AUTO = "/credits/auto-recharge"
# Shrinking a failure replays it hundreds of times against the database (up to Hypothesis's
# five minutes): off unless asked for; an unshrunk failure still prints its (few) steps.
PHASES = (
    tuple(Phase)
    if os.environ.get("BILLFOLD_HYPOTHESIS_SHRINK")
    else (Phase.explicit, Phase.reuse, Phase.generate)
)
# What a run must have done at least once (besides a recharge), or it proved little.
MUST_HAPPEN = ("grant", "purchase", "consume", "consume refused", "consume replayed", "refund")

Entry = tuple[str, int, int, int, str, str]  # id, entry_no, amount, balance_after, kind, key


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    # Daily caps are not what this models: a run recharges a fresh customer many times.
    return {"credits_max_recharges_per_day": 1000, "credits_max_recharge_spend_per_day": 10**9}


@dataclass
class Bought:
    """A credit purchase the machine made (by card or by auto-recharge): refundable."""

    payment_id: str
    credits: int
    price: int
    refunded: int = 0
    clawed: int = 0


@dataclass(frozen=True)
class AutoRecharge:
    enabled: bool
    threshold: int
    credits: int | None
    package: tuple[str, int] | None  # (id, credits)


@dataclass(frozen=True)
class Debited:
    transaction_id: str
    amount: int
    balance: int


def recharge_credits(auto: AutoRecharge, balance: int) -> int:
    """What the model expects a recharge to buy: the configured amount or the gap, whichever
    is bigger, rounded up to the smallest package that covers it (else exactly the need)."""
    configured = max(auto.credits or 0, auto.package[1] if auto.package else 0)
    needed = max(configured, auto.threshold - balance, 1)
    if auto.package is not None and auto.package[1] >= needed:
        return auto.package[1]
    covering = [credits for credits, _ in PACKAGES if credits >= needed]
    return min(covering) if covering else needed


def ledger_of(services: Services, customer_id: str) -> tuple[CreditAccount | None, list[Entry]]:
    with services.db.transaction() as session:
        account = session.get(CreditAccount, customer_id)
        if account is not None:
            session.expunge(account)
        rows = session.execute(
            select(
                LedgerEntry.id,
                LedgerEntry.entry_no,
                LedgerEntry.amount,
                LedgerEntry.balance_after,
                LedgerEntry.kind,
                LedgerEntry.idempotency_key,
            )
            .where(LedgerEntry.customer_id == customer_id)
            .order_by(LedgerEntry.entry_no)
        ).all()
        return account, [(r[0], r[1], r[2], r[3], str(r[4]), r[5]) for r in rows]


def pending_recharges(services: Services, customer_id: str) -> list[CreditPurchase]:
    with services.db.transaction() as session:
        found = list(
            session.scalars(
                select(CreditPurchase).where(
                    CreditPurchase.customer_id == customer_id,
                    CreditPurchase.kind == PurchaseKind.RECHARGE,
                    CreditPurchase.status == PurchaseStatus.PENDING,
                )
            )
        )
        session.expunge_all()
        return found


def test_random_interleavings_keep_the_balance_the_sum_of_an_append_only_ledger(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    admin: dict[str, str],
    stripe_api: stripe.StripeClient,
) -> None:
    packages: list[tuple[str, int, int]] = []
    for credits, price in PACKAGES:
        made = client.post(
            "/credits/packages",
            json={"name": f"{credits} credits", "credits": credits, "price": price},
            headers=admin,
        )
        assert made.status_code == 201, made.text
        packages.append((made.json()["data"]["id"], credits, price))
    steps: dict[str, int] = {}

    class Wallet(RuleBasedStateMachine):
        """One fresh customer per example; `expected` is the model of their balance."""

        def __init__(self) -> None:
            super().__init__()
            user = register(client)
            self.headers = auth(user["access_token"])
            self.customer_id: str = user["user"]["customerId"]
            self.expected = 0
            self.card: str | None = None
            self.debits: dict[str, Debited] = {}  # consume keys that debited
            self.short_keys: list[str] = []  # consume keys answered 402 (nothing recorded)
            self.grants: dict[str, tuple[int, str]] = {}  # key -> (amount, transaction id)
            self.bought: list[Bought] = []
            self.auto: AutoRecharge | None = None
            self.in_flight: tuple[str, int] | None = None  # (purchase id, credits expected)
            self.seen: list[Entry] = []

        def count(self, name: str) -> None:
            steps[name] = steps.get(name, 0) + 1

        def saved_card(self) -> str:
            if self.card is None:
                self.card = saved_card(client, stripe_api, self.headers)
            return self.card

        def after_debit(self) -> None:
            """A debit that leaves the balance below the threshold starts one recharge,
            unless one is in flight: check it is there, pending, for the expected credits."""
            auto = self.auto
            due = (
                auto is not None
                and auto.enabled
                and self.in_flight is None
                and self.expected < auto.threshold
            )
            pending = pending_recharges(services, self.customer_id)
            if due:
                assert auto is not None
                assert len(pending) == 1, pending
                assert pending[0].credits == recharge_credits(auto, self.expected)
                self.in_flight = (pending[0].id, pending[0].credits)
                self.count("recharge started by a debit")
            else:
                assert [p.id for p in pending] == ([self.in_flight[0]] if self.in_flight else [])

        # -- purchases and grants ---------------------------------------------------------

        def admin_grant(self, amount: int, key: str, kind: str = "grant") -> Any:
            return client.post(
                "/credits/grants",
                json={
                    "customerId": self.customer_id,
                    "amount": amount,
                    "kind": kind,
                    "reason": "property test",
                    "idempotencyKey": key,
                },
                headers=admin,
            )

        def granted(self, key: str, amount: int) -> None:
            response = self.admin_grant(amount, key)
            assert response.status_code == 201, response.text
            entry = response.json()["data"]
            self.expected += amount
            assert (entry["kind"], entry["amount"]) == ("grant", amount)
            assert entry["balanceAfter"] == self.expected
            self.grants[key] = (amount, entry["id"])
            self.count("grant")

        @initialize(start=st.integers(0, 3000))
        def starting_balance(self, start: int) -> None:
            if start:
                self.granted(uuid.uuid4().hex, start)

        @rule(amount=st.integers(-1500, 800).filter(bool), reuse=st.booleans())
        def grant_or_adjust(self, amount: int, reuse: bool) -> None:
            if amount > 0 and not (reuse and self.grants):
                self.granted(uuid.uuid4().hex, amount)
            elif amount > 0:  # the same grant again: the same entry, no new credits
                key = sorted(self.grants)[amount % len(self.grants)]
                again, transaction_id = self.grants[key]
                response = self.admin_grant(again, key)
                assert response.status_code == 201, response.text
                assert response.json()["data"]["id"] == transaction_id
                self.count("grant replayed")
            else:  # an admin's correction downwards: never below zero
                response = self.admin_grant(amount, uuid.uuid4().hex, "adjustment")
                if -amount > self.expected:
                    assert response.status_code == 402, response.text
                    self.count("adjustment refused")
                    return
                assert response.status_code == 201, response.text
                self.expected += amount
                assert response.json()["data"]["balanceAfter"] == self.expected
                self.count("adjustment")

        @rule(data=st.data())
        def buy_with_saved_card(self, data: st.DataObject) -> None:
            card = self.saved_card()
            choice = data.draw(st.sampled_from([*packages, None]), label="package")
            if choice is None:
                credits = data.draw(st.integers(100, 1000), label="custom credits")
                body: dict[str, Any] = {"customAmount": credits, "paymentMethodId": card}
                price = credits
            else:
                package_id, credits, price = choice
                body = {"packageId": package_id, "paymentMethodId": card}
            response = client.post("/credits/purchase", json=body, headers=self.headers)
            assert response.status_code == 200, response.text
            bought = response.json()["data"]
            assert bought["status"] == "succeeded"
            assert (bought["credits"], bought["amount"]) == (credits, price)
            self.expected += credits
            assert bought["balance"] == self.expected
            self.bought.append(Bought(bought["paymentId"], credits, price))
            self.count("purchase")

        # -- spending -----------------------------------------------------------------------

        @rule(data=st.data())
        def consume(self, data: st.DataObject) -> None:
            """A new key, or one answered 402 before (which recorded nothing): 200 or 402."""
            key = uuid.uuid4().hex
            reuse: bool = data.draw(st.booleans(), label="a key refused before")
            if reuse and self.short_keys:
                key = data.draw(st.sampled_from(self.short_keys), label="key")
            amount = data.draw(st.integers(1, self.expected + 100), label="amount")
            response = client.post(
                "/credits/consume",
                json={"amount": amount, "idempotencyKey": key, "reason": "property test"},
                headers=self.headers,
            )
            if amount > self.expected:
                assert response.status_code == 402, response.text
                error = response.json()["error"]
                assert error["code"] == "insufficient_credits"
                if key not in self.short_keys:
                    self.short_keys.append(key)
                self.count("consume refused")
                return
            assert response.status_code == 200, response.text
            answer = response.json()["data"]
            assert answer["replayed"] is False
            self.expected -= amount
            assert answer["balance"] == self.expected
            self.debits[key] = Debited(answer["transactionId"], amount, self.expected)
            if key in self.short_keys:
                self.short_keys.remove(key)
            self.count("consume")
            self.after_debit()

        @precondition(lambda self: bool(self.debits))
        @rule(data=st.data())
        def consume_again_with_a_used_key(self, data: st.DataObject) -> None:
            """The same key and amount answer the first result; another amount is refused."""
            key = data.draw(st.sampled_from(sorted(self.debits)), label="key")
            before = self.debits[key]
            extra = data.draw(st.sampled_from([0, 0, 1, 25]), label="extra")
            response = client.post(
                "/credits/consume",
                json={"amount": before.amount + extra, "idempotencyKey": key, "reason": "retry"},
                headers=self.headers,
            )
            if extra:
                assert response.status_code == 409, response.text
                assert response.json()["error"]["code"] == "idempotency_key_reused"
                self.count("consume key reused")
                return
            assert response.status_code == 200, response.text
            answer = response.json()["data"]
            assert answer["replayed"] is True
            assert answer["transactionId"] == before.transaction_id
            assert answer["balance"] == before.balance  # the same answer as the first time
            self.count("consume replayed")

        # -- refunds ------------------------------------------------------------------------

        @precondition(lambda self: bool(self.bought))
        @rule(data=st.data())
        def refund(self, data: st.DataObject) -> None:
            bought = data.draw(st.sampled_from(self.bought), label="purchase")
            remaining = bought.price - bought.refunded
            full = data.draw(st.booleans(), label="full")
            amount = remaining if full else data.draw(st.integers(1, bought.price), label="part")
            response = client.post(
                f"/payments/{bought.payment_id}/refund",
                json={} if full else {"amount": amount},
                headers=admin,
            )
            if remaining == 0:
                assert response.status_code == 409, response.text
                self.count("refund refused: nothing left")
                return
            if amount > remaining:
                assert response.status_code == 409, response.text
                assert response.json()["error"]["code"] == "refund_exceeds_remaining"
                self.count("refund refused: too much")
                return
            assert response.status_code == 201, response.text
            assert response.json()["data"]["status"] == "succeeded"
            bought.refunded += amount
            # The refunded share of the credits, less what was taken back already, and never
            # more than is left.
            share = bought.credits * bought.refunded // bought.price
            taken = max(0, min(share - bought.clawed, self.expected))
            bought.clawed += taken
            self.expected -= taken
            self.count("refund")

        # -- auto-recharge ------------------------------------------------------------------

        @rule(
            enabled=st.booleans(),
            threshold=st.integers(0, 1500),
            credits=st.none() | st.sampled_from([50, 300, 1500, 2500]),
            package=st.none() | st.sampled_from(range(len(PACKAGES))),
        )
        def configure_auto_recharge(
            self, enabled: bool, threshold: int, credits: int | None, package: int | None
        ) -> None:
            if not enabled:
                response = client.put(AUTO, json={"enabled": False}, headers=self.headers)
                assert response.status_code == 200, response.text
                assert response.json()["data"]["enabled"] is False
                self.auto = None
                self.count("auto-recharge off")
                return
            if credits is None and package is None:
                credits = 300
            chosen = packages[package] if package is not None else None
            response = client.put(
                AUTO,
                json={
                    "enabled": True,
                    "thresholdCredits": threshold,
                    "rechargeCredits": credits,
                    "rechargePackageId": chosen[0] if chosen else None,
                    "paymentMethodId": self.saved_card(),
                },
                headers=self.headers,
            )
            assert response.status_code == 200, response.text
            self.auto = AutoRecharge(
                True, threshold, credits, (chosen[0], chosen[1]) if chosen else None
            )
            self.count("auto-recharge configured")

        @rule()
        def trigger_recharge(self) -> None:
            response = client.post(f"{AUTO}/trigger", headers=self.headers)
            if self.auto is None or not self.auto.enabled:
                assert response.status_code == 409, response.text
                assert response.json()["error"]["code"] == "auto_recharge_disabled"
                return
            if self.in_flight is not None:
                assert response.status_code == 409, response.text
                assert response.json()["error"]["code"] == "recharge_not_started"
                self.count("trigger refused: one in flight")
                return
            assert response.status_code == 200, response.text
            made = response.json()["data"]
            assert made["kind"] == "recharge"
            assert made["status"] == "succeeded"
            assert made["credits"] == recharge_credits(self.auto, self.expected)
            self.expected += made["credits"]
            assert made["balance"] == self.expected
            self.bought.append(Bought(made["paymentId"], made["credits"], made["amount"]))
            self.count("recharge triggered")

        @rule()
        def run_worker(self) -> None:
            worker.run_until_idle()
            if self.in_flight is None:
                assert pending_recharges(services, self.customer_id) == []
                return
            purchase_id, credits = self.in_flight
            with services.db.transaction() as session:
                purchase = session.get(CreditPurchase, purchase_id)
                assert purchase is not None
                assert purchase.status == PurchaseStatus.SUCCEEDED, purchase.failure
                granted = session.scalars(
                    select(LedgerEntry.amount).where(
                        LedgerEntry.customer_id == self.customer_id,
                        LedgerEntry.idempotency_key == f"purchase:{purchase.payment_id}",
                    )
                ).all()
                assert list(granted) == [credits]
                payment = session.get(Payment, purchase.payment_id)
                assert payment is not None
                self.bought.append(Bought(payment.id, credits, payment.amount))
            self.expected += credits
            self.in_flight = None
            self.count("recharge completed by the worker")

        # -- invariants, read straight from the database -------------------------------------

        @invariant()
        def balance_is_the_sum_of_an_append_only_ledger(self) -> None:
            account, entries = ledger_of(services, self.customer_id)
            balance = account.balance if account is not None else 0
            assert balance == sum(e[2] for e in entries)
            assert balance >= 0
            assert balance == self.expected
            assert [e[1] for e in entries] == list(range(1, len(entries) + 1))
            assert account is None or account.entries == len(entries)
            running = 0
            for _, _, amount, balance_after, _, _ in entries:
                running += amount
                assert balance_after == running
                assert balance_after >= 0
            keys = [e[5] for e in entries]
            assert len(keys) == len(set(keys)), "an idempotency key was recorded twice"
            # Append-only: what was there before is still there, unchanged, in order.
            assert entries[: len(self.seen)] == self.seen
            self.seen = entries
            # Each payment's credits were granted at most once.
            purchases = [e[5] for e in entries if e[4] == EntryKind.PURCHASE]
            assert len(purchases) == len(set(purchases))
            # The API reads the same balance.
            shown = client.get("/credits/balance", headers=self.headers)
            assert shown.json()["data"]["balance"] == self.expected

        @invariant()
        def at_most_one_recharge_is_pending(self) -> None:
            pending = pending_recharges(services, self.customer_id)
            assert len(pending) <= 1
            with services.db.transaction() as session:
                account = session.get(CreditAccount, self.customer_id)
                in_flight = account.recharge_in_flight_id if account is not None else None
            assert in_flight == (pending[0].id if pending else None)

    def covered() -> bool:
        recharged = steps.get("recharge triggered", 0) + steps.get("recharge started by a debit", 0)
        return recharged > 0 and all(steps.get(name, 0) > 0 for name in MUST_HAPPEN)

    # Hypothesis switches rules off at random per example ("swarm testing"), so a short run
    # may never, say, refund: run again (rarely needed) until every movement was exercised.
    # Under CI Hypothesis derandomizes, so a plain rerun would replay the same examples:
    # each rerun gets its own fixed seed instead, and so differs from the first run anywhere.
    for attempt in range(4):
        if attempt:
            seed(attempt)(Wallet)
        run_state_machine_as_test(
            Wallet,
            settings=hypothesis_settings(
                max_examples=12,
                stateful_step_count=20,
                deadline=None,
                database=None,
                phases=PHASES,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
            ),
        )
        if covered():
            break
    missing = [name for name in MUST_HAPPEN if not steps.get(name)]
    assert covered(), f"never happened: {missing or 'a recharge'}; steps: {dict(steps)}"
