"""Many debits at once on one account, over real HTTP against the app served by uvicorn, on
PostgreSQL: the balance never goes below zero, each debit is recorded exactly once however
often its key is sent, a 402 means the credits really were short, and crossings of the
auto-recharge threshold start at most one recharge at a time."""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import stripe
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text
from support.credits import starting_balance
from support.payments import saved_card
from support.waiting import wait_until

from billfold.app import create_app
from billfold.credits.models import (
    CreditAccount,
    CreditPurchase,
    EntryKind,
    LedgerEntry,
    PurchaseKind,
    PurchaseStatus,
)
from billfold.jobs.worker import Worker
from billfold.services import Services
from billfold.standin import free_port

pytestmark = pytest.mark.postgres_only

CONSUMERS = 50
SECONDS = 3.0
HARD_CAP = 90.0
MAX_DEBIT = 12


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    # The daily caps would stop a busy account's recharges; they are not what this tests.
    # Two batcher threads stand in for several server processes: batches of debits for one
    # account are in flight at once and race for its row, as in production.
    return {
        "credits_max_recharges_per_day": 1000,
        "credits_max_recharge_spend_per_day": 10**9,
        "credits_consume_batch_threads": 2,
    }


@pytest.fixture
def live(services: Services) -> Iterator[str]:
    """The app served by uvicorn on a free port (a TestClient would serialise requests)."""
    port = free_port()
    config = uvicorn.Config(
        create_app(services=services), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-credits", daemon=True)
    thread.start()
    assert wait_until(lambda: server.started, timeout=10), "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@dataclass(frozen=True)
class Call:
    key: str
    amount: int
    status: int
    body: dict[str, Any]
    started: float
    ended: float


@dataclass(frozen=True)
class Entry:
    id: str
    entry_no: int
    amount: int
    balance_after: int
    kind: str
    key: str
    reference_id: str | None


def ledger(services: Services, customer_id: str) -> tuple[int, int, list[Entry]]:
    """(balance, entries counter, the entries in order), read in one transaction."""
    with services.db.transaction() as session:
        account = session.get(CreditAccount, customer_id)
        assert account is not None
        rows = session.scalars(
            select(LedgerEntry)
            .where(LedgerEntry.customer_id == customer_id)
            .order_by(LedgerEntry.entry_no)
        ).all()
        entries = [
            Entry(
                e.id,
                e.entry_no,
                e.amount,
                e.balance_after,
                str(e.kind),
                e.idempotency_key,
                e.reference_id,
            )
            for e in rows
        ]
        return account.balance, account.entries, entries


def assert_ledger_consistent(balance: int, counter: int, entries: list[Entry]) -> None:
    assert balance >= 0
    assert balance == sum(e.amount for e in entries)
    assert counter == len(entries)
    assert [e.entry_no for e in entries] == list(range(1, len(entries) + 1))
    running = 0
    for entry in entries:
        running += entry.amount
        assert entry.balance_after == running, entry
        assert entry.balance_after >= 0, entry
    keys = [e.key for e in entries]
    assert len(keys) == len(set(keys)), "an idempotency key was recorded twice"


def hammer(url: str, headers: dict[str, str], *, seed: int, until_refused: int = 0) -> list[Call]:
    """CONSUMERS threads, each with its own HTTP connection, debit small random amounts for
    SECONDS. Some requests send a key again: a thread retries one of its own debits, or sends
    a key another thread has just sent (so both may be in flight at once).

    With `until_refused`, they go on past SECONDS until that many debits were refused (the
    account ran dry), however slowly a loaded machine serves them, up to a cap of HARD_CAP
    seconds: what the test can say then does not depend on the machine's speed."""
    calls: list[Call] = []
    refused = [0]
    recent: deque[tuple[str, int]] = deque(maxlen=20)
    recent_lock = threading.Lock()
    barrier = threading.Barrier(CONSUMERS + 1)
    stop_at = [0.0, 0.0]  # the earliest end, and the hard cap
    failures: list[BaseException] = []

    def consumer(number: int) -> None:
        rng = random.Random(seed * 1000 + number)
        mine: list[tuple[str, int]] = []
        try:
            with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
                http.get("/healthz")  # connect before the start line
                barrier.wait()
                count = 0
                while True:
                    now = time.monotonic()
                    if now >= stop_at[1] or (now >= stop_at[0] and refused[0] >= until_refused):
                        break
                    roll = rng.random()
                    if mine and roll < 0.15:
                        key, amount = rng.choice(mine)  # a retry of a debit that was answered
                    elif recent and roll < 0.25:
                        with recent_lock:  # another client's key, maybe still in flight
                            key, amount = rng.choice(list(recent))
                    else:
                        count += 1
                        key, amount = f"c{number}-{count}", rng.randint(1, MAX_DEBIT)
                        with recent_lock:
                            recent.append((key, amount))
                    started = time.monotonic()
                    response = http.post(
                        "/credits/consume",
                        json={"amount": amount, "idempotencyKey": key, "reason": "load"},
                    )
                    ended = time.monotonic()
                    calls.append(
                        Call(key, amount, response.status_code, response.json(), started, ended)
                    )
                    if response.status_code == 402:
                        refused[0] += 1  # a lost increment under a race only runs a bit longer
                    if response.status_code == 200 and key.startswith(f"c{number}-"):
                        mine.append((key, amount))
        except BaseException as exc:  # reported below, with the thread's calls
            failures.append(exc)
            raise

    threads = [
        threading.Thread(target=consumer, args=(n,), name=f"consumer-{n}", daemon=True)
        for n in range(CONSUMERS)
    ]
    for thread in threads:
        thread.start()
    stop_at[:] = [time.monotonic() + SECONDS + 1.0] * 2  # provisional, until all connect
    barrier.wait(timeout=30)
    started = time.monotonic()
    stop_at[:] = [started + SECONDS, started + HARD_CAP]
    for thread in threads:
        thread.join(timeout=120)
        assert not thread.is_alive(), f"{thread.name} is stuck"
    assert not failures, failures
    return calls


def check_debits(calls: list[Call], entries: list[Entry]) -> dict[str, Entry]:
    """Each key debited at most once, and every answer for a key agrees with the ledger."""
    assert calls
    assert {c.status for c in calls} <= {200, 402}, sorted({c.status for c in calls})
    debits = {e.key.removeprefix("consume:"): e for e in entries if e.kind == EntryKind.CONSUME}
    answered = {c.key for c in calls if c.status == 200}
    # Nothing lost, nothing invented: the debited keys are exactly the ones answered 200.
    assert set(debits) == answered
    for call in calls:
        entry = debits.get(call.key)
        if call.status == 200:
            assert entry is not None
            data = call.body["data"]
            assert (data["transactionId"], data["amount"]) == (entry.id, call.amount)
            assert data["balance"] == entry.balance_after  # a replay answers the same result
            assert entry.amount == -call.amount
        else:
            error = call.body["error"]
            assert error["code"] == "insufficient_credits"
            # A key that did debit never answers "not enough credits", even to a retry.
            assert entry is None, f"{call.key} debited {entry} yet a retry answered 402"
            assert error["details"]["required"] == call.amount
    first = [c for c in calls if c.status == 200 and not c.body["data"]["replayed"]]
    assert sorted(c.key for c in first) == sorted(debits)  # one first answer per debit
    assert any(c.body["data"]["replayed"] for c in calls if c.status == 200)
    return debits


def test_fifty_parallel_consumers_never_overdraw_lose_or_double_a_debit(
    client: TestClient,
    services: Services,
    admin: dict[str, str],
    buyer: dict[str, Any],
    live: str,
) -> None:
    initial = 1500  # drained in well under a second at this load: many 402s follow
    starting_balance(client, admin, buyer["customerId"], initial)

    # Until the account has run dry (however slow the machine), so that at least
    # initial / MAX_DEBIT debits were made.
    calls = hammer(live, buyer["headers"], seed=1, until_refused=CONSUMERS)

    balance, counter, entries = ledger(services, buyer["customerId"])
    assert_ledger_consistent(balance, counter, entries)
    debits = check_debits(calls, entries)
    assert len(entries) == len(debits) + 1  # the starting grant, and one entry per debit
    assert balance == initial - sum(-e.amount for e in debits.values())
    assert len(debits) >= (initial - MAX_DEBIT) // MAX_DEBIT, "the account never ran dry"

    # Nothing was added, so the balance only went down: every 402 saw a balance below what
    # it asked for, which the final balance (lower still) must be too...
    refused = [c for c in calls if c.status == 402]
    assert refused, "the account never ran short: raise the load or lower the grant"
    assert balance < min(c.amount for c in refused)
    # ...and by the time a 402 was answered, the debits sent before it had already left
    # less than it asked for (a 402 while plenty remained would break this).
    started_at: dict[str, float] = {}
    for call in sorted(calls, key=lambda c: c.started):
        started_at.setdefault(call.key, call.started)
    for call in refused:
        before = [e for e in entries[1:] if started_at[e.key.removeprefix("consume:")] < call.ended]
        low = before[-1].balance_after if before else initial
        assert low < call.amount, (call, low)
        assert call.body["error"]["details"]["balance"] < call.amount


@contextmanager
def account_held(services: Services, customer_id: str) -> Iterator[Callable[[], int]]:
    """Hold the account's row as a long debit would; yields a count of sessions waiting for
    a lock (the requests queued behind it), and lets go on leaving."""

    def waiting() -> int:
        with services.db.engine.connect() as conn:
            found = conn.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND datname = current_database()"
                )
            )
            return int(found or 0)

    with services.db.transaction() as session:
        session.execute(
            select(CreditAccount).where(CreditAccount.customer_id == customer_id).with_for_update()
        )
        yield waiting


def send_twice_while_held(
    services: Services,
    customer_id: str,
    url: str,
    path: str,
    body: dict[str, Any],
    headers: dict[str, str],
) -> list[httpx.Response]:
    """A client's request and its retry, both queued behind another debit of the account."""
    answers: list[httpx.Response] = []

    def send() -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
            answers.append(http.post(path, json=body))

    senders = [threading.Thread(target=send, daemon=True) for _ in range(2)]
    with account_held(services, customer_id) as waiting:
        for sender in senders:
            sender.start()
            assert wait_until(lambda: waiting() >= 1, timeout=10), "the request did not queue"
        # Debits are applied in batches: the two may wait as one batch or as two.
        wait_until(lambda: waiting() >= 2, timeout=1)
    for sender in senders:
        sender.join(timeout=30)
    return answers


def test_a_retry_queued_with_its_first_send_debits_once_and_both_answer_the_debit(
    client: TestClient,
    services: Services,
    admin: dict[str, str],
    buyer: dict[str, Any],
    live: str,
) -> None:
    """A client retries while its first request still waits for the account: both answers
    are the one debit, never a 402 for the credits the first send itself spent."""
    starting_balance(client, admin, buyer["customerId"], 10)

    answers = send_twice_while_held(
        services,
        buyer["customerId"],
        live,
        "/credits/consume",
        {"amount": 10, "idempotencyKey": "render-7"},
        buyer["headers"],
    )

    assert sorted(a.status_code for a in answers) == [200, 200], [a.text for a in answers]
    data = [a.json()["data"] for a in answers]
    assert data[0]["transactionId"] == data[1]["transactionId"]
    assert sorted(d["replayed"] for d in data) == [False, True]
    assert [d["balance"] for d in data] == [0, 0]
    balance, counter, entries = ledger(services, buyer["customerId"])
    assert_ledger_consistent(balance, counter, entries)
    assert [e.amount for e in entries] == [10, -10]


def test_a_retried_adjustment_queued_with_its_first_send_posts_once_and_both_agree(
    client: TestClient,
    services: Services,
    admin: dict[str, str],
    buyer: dict[str, Any],
    live: str,
) -> None:
    """The same through ledger.post itself (a negative adjustment; also the path of refunds'
    clawbacks and of a debit retried alone after its batch failed)."""
    starting_balance(client, admin, buyer["customerId"], 10)

    answers = send_twice_while_held(
        services,
        buyer["customerId"],
        live,
        "/credits/grants",
        {
            "customerId": buyer["customerId"],
            "amount": -10,
            "kind": "adjustment",
            "reason": "correction",
            "idempotencyKey": "fix-1",
        },
        admin,
    )

    balance, counter, entries = ledger(services, buyer["customerId"])
    assert_ledger_consistent(balance, counter, entries)
    assert [e.amount for e in entries] == [10, -10]
    assert sorted(a.status_code for a in answers) == [201, 201], [a.text for a in answers]
    assert answers[0].json()["data"]["id"] == answers[1].json()["data"]["id"]


def test_threshold_crossings_under_load_start_at_most_one_recharge_at_a_time(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    admin: dict[str, str],
    buyer: dict[str, Any],
    stripe_api: stripe.StripeClient,
    live: str,
) -> None:
    threshold, recharge_credits, initial = 1500, 2000, 1800
    card = saved_card(client, stripe_api, buyer["headers"])
    starting_balance(client, admin, buyer["customerId"], initial)
    configured = client.put(
        "/credits/auto-recharge",
        json={
            "enabled": True,
            "thresholdCredits": threshold,
            "rechargeCredits": recharge_credits,
            "paymentMethodId": card,
        },
        headers=buyer["headers"],
    )
    assert configured.status_code == 200, configured.text

    customer_id = buyer["customerId"]
    stop = threading.Event()
    most_pending = [0]

    def watch() -> None:
        """Count the recharges under way, over and over, while the debits run."""
        while not stop.is_set():
            with services.db.transaction() as session:
                pending = session.scalar(
                    select(func.count())
                    .select_from(CreditPurchase)
                    .where(
                        CreditPurchase.customer_id == customer_id,
                        CreditPurchase.kind == PurchaseKind.RECHARGE,
                        CreditPurchase.status == PurchaseStatus.PENDING,
                    )
                )
            most_pending[0] = max(most_pending[0], int(pending or 0))
            stop.wait(0.01)

    watcher = threading.Thread(target=watch, name="watch-recharges", daemon=True)
    watcher.start()
    working = worker.start_in_thread(stop)  # recharges complete while the debits go on
    try:
        calls = hammer(live, buyer["headers"], seed=2)
    finally:
        stop.set()
        watcher.join(timeout=10)
        working.join(timeout=30)
    worker.run_until_idle()

    assert most_pending[0] == 1, "never two recharges under way at once (and at least one)"
    balance, counter, entries = ledger(services, customer_id)
    assert_ledger_consistent(balance, counter, entries)
    debits = check_debits(calls, entries)
    with services.db.transaction() as session:
        recharges = session.scalars(
            select(CreditPurchase).where(
                CreditPurchase.customer_id == customer_id,
                CreditPurchase.kind == PurchaseKind.RECHARGE,
            )
        ).all()
        account = session.get(CreditAccount, customer_id)
        assert account is not None
        assert account.recharge_in_flight_id is None
        assert account.auto_recharge_enabled, account.auto_recharge_disabled_reason
        statuses = {r.id: r.status for r in recharges}
        granted = {r.payment_id: r.credits for r in recharges}
    assert set(statuses.values()) == {PurchaseStatus.SUCCEEDED}, statuses
    assert all(credits >= recharge_credits for credits in granted.values())
    purchases = [e for e in entries if e.kind == EntryKind.PURCHASE]
    # Each recharge granted its credits exactly once.
    assert sorted((e.reference_id, e.amount) for e in purchases) == sorted(granted.items())
    assert len(entries) == 1 + len(debits) + len(purchases)
    assert balance == initial + sum(granted.values()) - sum(-e.amount for e in debits.values())

    # At most one recharge per crossing: a recharge starts when a debit leaves the balance
    # below the threshold with none under way, which needs the balance to cross downwards
    # again, or a recharge that landed still below the threshold.
    crossings = sum(
        1
        for e in entries
        if e.kind == EntryKind.CONSUME and e.balance_after - e.amount >= threshold > e.balance_after
    )
    landed_short = sum(1 for e in purchases if e.balance_after < threshold)
    assert 1 <= len(recharges) <= crossings + landed_short, (
        len(recharges),
        crossings,
        landed_short,
    )
