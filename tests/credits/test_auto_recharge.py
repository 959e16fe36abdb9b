"""Auto-recharge: one recharge per crossing of the threshold, however many debits cross it at
once; the best package for the gap; failures turn it off and tell the customer; daily caps;
the manual trigger; and a worker killed between Stripe's charge and our grant."""

from __future__ import annotations

import json
import signal
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe
from conftest import STRIPE_KEY, WEBHOOK_SECRET
from factories import register
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from support.credits import balance, starting_balance
from support.netfault import FaultyLink
from support.payments import THREE_D_SECURE, VISA, saved_card
from support.stripe_events import delivery, event
from support.waiting import wait_until, waits_on_a_lock
from support.worker_process import output, start_worker_process

from billfold.config import Settings
from billfold.credits.models import (
    CreditAccount,
    CreditPurchase,
    EntryKind,
    LedgerEntry,
    PurchaseKind,
    PurchaseStatus,
)
from billfold.credits.recharge import RECHARGE_JOB
from billfold.jobs.models import Job, JobStatus
from billfold.jobs.queue import recurring_job_id
from billfold.jobs.worker import Worker
from billfold.kit.db import utcnow
from billfold.mail.models import OutboxMail
from billfold.payments.models import Payment
from billfold.services import Services

# Attaches to the customer fine, then declines when charged.
DECLINES_AT_CHARGE = "4000000000000341"
AUTO = "/credits/auto-recharge"

# The recurring jobs (the janitor, the purge, trials' end...): one row each, never drained.
RECURRING = recurring_job_id("")


# -- helpers ---------------------------------------------------------------------------


def make_package(
    client: TestClient, admin: dict[str, str], credits: int, price: int
) -> dict[str, Any]:
    response = client.post(
        "/credits/packages",
        json={"name": f"{credits} credits", "credits": credits, "price": price},
        headers=admin,
    )
    assert response.status_code == 201, response.text
    package: dict[str, Any] = response.json()["data"]
    return package


def consume(client: TestClient, headers: dict[str, str], amount: int) -> httpx.Response:
    response: httpx.Response = client.post(
        "/credits/consume",
        json={"amount": amount, "idempotencyKey": uuid.uuid4().hex, "reason": "work"},
        headers=headers,
    )
    return response


def spend(client: TestClient, headers: dict[str, str], amount: int) -> int:
    response = consume(client, headers, amount)
    assert response.status_code == 200, response.text
    left: int = response.json()["data"]["balance"]
    return left


def put_settings(client: TestClient, headers: dict[str, str], **body: Any) -> httpx.Response:
    response: httpx.Response = client.put(AUTO, json=body, headers=headers)
    return response


def enable(
    client: TestClient, headers: dict[str, str], pm: str, threshold: int, **how: Any
) -> dict[str, Any]:
    response = put_settings(
        client, headers, enabled=True, thresholdCredits=threshold, paymentMethodId=pm, **how
    )
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def auto_recharge(client: TestClient, headers: dict[str, str]) -> dict[str, Any]:
    response = client.get(AUTO, headers=headers)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def set_up(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    stripe_api: stripe.StripeClient,
    *,
    start: int,
    threshold: int,
    number: str = VISA,
    **how: Any,
) -> str:
    """Give the buyer `start` credits and a saved card, and turn auto-recharge on with it."""
    pm = saved_card(client, stripe_api, buyer["headers"], number)
    if start:
        starting_balance(client, admin, buyer["customerId"], start)
    enable(client, buyer["headers"], pm, threshold, **how)
    return pm


def recharges(services: Services, customer_id: str) -> list[CreditPurchase]:
    with services.db.transaction() as session:
        return list(
            session.scalars(
                select(CreditPurchase)
                .where(
                    CreditPurchase.customer_id == customer_id,
                    CreditPurchase.kind == PurchaseKind.RECHARGE,
                )
                .order_by(CreditPurchase.created_at)
            )
        )


def payment(services: Services, payment_id: str) -> Payment:
    with services.db.transaction() as session:
        found = session.get(Payment, payment_id)
        assert found is not None
        return found


def grants_for(services: Services, customer_id: str, payment_id: str) -> int:
    """Ledger entries that granted the credits a payment bought."""
    with services.db.transaction() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(LedgerEntry)
                .where(
                    LedgerEntry.customer_id == customer_id,
                    LedgerEntry.kind == EntryKind.PURCHASE,
                    LedgerEntry.reference_id == payment_id,
                )
            )
            or 0
        )


def intents(stripe_api: stripe.StripeClient, stripe_customer_id: str) -> list[Any]:
    """The customer's PaymentIntents as Stripe has them (straight to the stand-in)."""
    listed = stripe_api.v1.payment_intents.list(
        params={"customer": stripe_customer_id, "limit": 100}
    )
    return list(listed.data)


def failure_mails(services: Services, to: str) -> list[OutboxMail]:
    with services.db.transaction() as session:
        return list(
            session.scalars(
                select(OutboxMail).where(
                    OutboxMail.kind == "auto_recharge_failed", OutboxMail.to_address == to
                )
            )
        )


def unfinished_jobs(services: Services) -> list[Job]:
    with services.db.transaction() as session:
        return list(
            session.scalars(
                select(Job).where(Job.status != JobStatus.DONE, ~Job.id.startswith(RECURRING))
            )
        )


def drain(services: Services, worker: Worker[Services], timeout: float = 20) -> None:
    """Run the worker until no job is left (a dead worker's job waits for its lease)."""

    def idle() -> bool:
        worker.run_until_idle()
        return not unfinished_jobs(services)

    assert wait_until(idle, timeout, interval=0.05), [
        (j.kind, j.status, j.last_error) for j in unfinished_jobs(services)
    ]


# -- settings --------------------------------------------------------------------------


def test_put_refuses_incomplete_foreign_unknown_and_mistyped_settings(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    stripe_api: stripe.StripeClient,
) -> None:
    headers = buyer["headers"]
    pm = saved_card(client, stripe_api, headers)
    other = register(client)
    others_card = saved_card(
        client, stripe_api, {"Authorization": f"Bearer {other['access_token']}"}
    )
    complete: dict[str, Any] = {"enabled": True, "thresholdCredits": 100, "rechargeCredits": 500}

    incomplete: list[dict[str, Any]] = [
        {"enabled": True, "rechargeCredits": 500, "paymentMethodId": pm},
        {"enabled": True, "thresholdCredits": 100, "rechargeCredits": 500},
        {"enabled": True, "thresholdCredits": 100, "paymentMethodId": pm},
    ]
    for body in incomplete:
        answer = put_settings(client, headers, **body)
        assert answer.status_code == 422, (body, answer.text)
        assert answer.json()["error"]["code"] == "incomplete_settings", body

    foreign = put_settings(client, headers, **complete, paymentMethodId=others_card)
    assert foreign.status_code == 404, foreign.text
    assert foreign.json()["error"]["code"] == "payment_method_not_found"
    unknown_card = put_settings(client, headers, **complete, paymentMethodId="pm_nosuchcard")
    assert unknown_card.status_code == 404, unknown_card.text

    unknown_package = put_settings(
        client,
        headers,
        enabled=True,
        thresholdCredits=100,
        rechargePackageId=f"cpk_{uuid.uuid4().hex}",
        paymentMethodId=pm,
    )
    assert unknown_package.status_code == 404, unknown_package.text
    assert unknown_package.json()["error"]["code"] == "not_found"

    mistyped: list[dict[str, Any]] = [
        {**complete, "paymentMethodId": pm, "thresholdCredits": "100"},
        {**complete, "paymentMethodId": pm, "thresholdCredits": 100.5},
        {**complete, "paymentMethodId": pm, "thresholdCredits": -1},
        {**complete, "paymentMethodId": pm, "rechargeCredits": 0},
        {**complete, "paymentMethodId": pm, "rechargeCredits": "500"},
        {**complete, "paymentMethodId": pm, "enabled": "sometimes"},
        {**complete, "paymentMethodId": "pm bad/id"},
        {**complete, "paymentMethodId": pm, "rechargePackageId": "not-an-id"},
        {**complete, "paymentMethodId": pm, "surprise": 1},
        {"thresholdCredits": 100, "paymentMethodId": pm},
    ]
    for body in mistyped:
        answer = put_settings(client, headers, **body)
        assert answer.status_code == 422, (body, answer.text)
        assert answer.json()["error"]["code"] == "validation_error", body

    untouched = auto_recharge(client, headers)
    assert untouched["enabled"] is False
    assert untouched["thresholdCredits"] is None
    assert untouched["paymentMethodId"] is None

    stored = enable(client, headers, pm, 100, rechargeCredits=500)
    assert auto_recharge(client, headers) == stored
    assert (stored["enabled"], stored["thresholdCredits"], stored["paymentMethodId"]) == (
        True,
        100,
        pm,
    )


# -- one recharge per crossing ---------------------------------------------------------


def test_ten_debits_crossing_the_threshold_at_once_start_exactly_one_recharge(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
) -> None:
    headers, customer_id = buyer["headers"], buyer["customerId"]
    pm = set_up(client, admin, buyer, stripe_api, start=1000, threshold=900, rechargeCredits=300)
    worker.run_until_idle()  # nothing of the set-up left over for the worker

    # Each of the ten debits leaves the balance below 900.
    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(lambda _: consume(client, headers, 20), range(10)))
    assert [a.status_code for a in answers] == [200] * 10, [a.text for a in answers]
    assert balance(client, headers) == 800
    started = recharges(services, customer_id)
    assert len(started) == 1
    assert auto_recharge(client, headers)["rechargeInFlightId"] == started[0].id

    # A recharge under way counts: more debits below the threshold start no second one.
    spend(client, headers, 50)
    spend(client, headers, 50)
    assert len(recharges(services, customer_id)) == 1
    assert intents(stripe_api, buyer["stripeCustomerId"]) == []  # the job has not run yet

    worker.run_until_idle()
    charged = intents(stripe_api, buyer["stripeCustomerId"])
    assert [(i.status, i.payment_method, i.amount) for i in charged] == [("succeeded", pm, 300)]
    done = recharges(services, customer_id)
    assert [p.status for p in done] == [PurchaseStatus.SUCCEEDED]
    assert done[0].credits == 300
    assert payment(services, done[0].payment_id).stripe_payment_intent_id == charged[0].id
    assert grants_for(services, customer_id, done[0].payment_id) == 1
    assert balance(client, headers) == 700 + 300
    assert auto_recharge(client, headers)["rechargeInFlightId"] is None


def test_a_finished_recharge_frees_the_slot_and_the_next_crossing_starts_a_new_one(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
) -> None:
    headers, customer_id = buyer["headers"], buyer["customerId"]
    set_up(client, admin, buyer, stripe_api, start=300, threshold=200, rechargeCredits=400)

    assert spend(client, headers, 200) == 100
    worker.run_until_idle()
    assert balance(client, headers) == 500
    assert auto_recharge(client, headers)["rechargeInFlightId"] is None

    assert spend(client, headers, 100) == 400  # above the threshold: nothing starts
    assert len(recharges(services, customer_id)) == 1
    assert spend(client, headers, 250) == 150
    second = recharges(services, customer_id)
    assert len(second) == 2
    worker.run_until_idle()

    assert balance(client, headers) == 550
    assert len(intents(stripe_api, buyer["stripeCustomerId"])) == 2
    for made in recharges(services, customer_id):
        assert made.status == PurchaseStatus.SUCCEEDED
        assert grants_for(services, customer_id, made.payment_id) == 1


# -- how much, and which package -------------------------------------------------------


def test_recharge_buys_the_smallest_package_that_covers_the_recharge_amount(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
) -> None:
    make_package(client, admin, credits=500, price=450)
    thousand = make_package(client, admin, credits=1000, price=850)
    make_package(client, admin, credits=5000, price=4000)
    set_up(client, admin, buyer, stripe_api, start=300, threshold=200, rechargeCredits=800)

    spend(client, buyer["headers"], 150)
    worker.run_until_idle()

    [bought] = recharges(services, buyer["customerId"])
    assert (bought.package_id, bought.credits) == (thousand["id"], 1000)
    assert payment(services, bought.payment_id).amount == 850
    assert [i.amount for i in intents(stripe_api, buyer["stripeCustomerId"])] == [850]
    assert balance(client, buyer["headers"]) == 150 + 1000


def test_a_balance_far_below_the_threshold_is_topped_up_in_one_charge(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
) -> None:
    make_package(client, admin, credits=500, price=500)
    big = make_package(client, admin, credits=2000, price=1700)
    set_up(client, admin, buyer, stripe_api, start=1000, threshold=1000, rechargeCredits=100)

    # One debit leaves 50: the gap (950) is larger than the 100 configured, and one charge
    # for a package that covers it closes it (not 100 now, then more on each debit).
    assert spend(client, buyer["headers"], 950) == 50
    worker.run_until_idle()

    [bought] = recharges(services, buyer["customerId"])
    assert (bought.package_id, bought.credits) == (big["id"], 2000)
    assert [i.amount for i in intents(stripe_api, buyer["stripeCustomerId"])] == [1700]
    assert balance(client, buyer["headers"]) == 2050


@pytest.mark.parametrize("settings_overrides", [{"credits_unit_price": 3}])
def test_with_no_package_large_enough_the_gap_is_bought_at_the_unit_price(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    settings_overrides: dict[str, Any],
) -> None:
    make_package(client, admin, credits=100, price=90)
    make_package(client, admin, credits=200, price=170)
    set_up(client, admin, buyer, stripe_api, start=1000, threshold=1000, rechargeCredits=300)

    assert spend(client, buyer["headers"], 900) == 100
    worker.run_until_idle()

    [bought] = recharges(services, buyer["customerId"])
    assert (bought.package_id, bought.credits) == (None, 900)
    charged = payment(services, bought.payment_id)
    assert (charged.amount, charged.currency) == (900 * 3, "usd")
    assert [i.amount for i in intents(stripe_api, buyer["stripeCustomerId"])] == [2700]
    assert balance(client, buyer["headers"]) == 1000


# -- failures turn it off --------------------------------------------------------------


def test_a_declined_recharge_turns_auto_recharge_off_says_why_and_emails_once(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
) -> None:
    headers, customer_id = buyer["headers"], buyer["customerId"]
    set_up(
        client,
        admin,
        buyer,
        stripe_api,
        start=300,
        threshold=200,
        rechargeCredits=500,
        number=DECLINES_AT_CHARGE,
    )

    assert spend(client, headers, 150) == 150
    worker.run_until_idle()

    state = auto_recharge(client, headers)
    assert state["enabled"] is False
    assert "generic_decline" in state["disabledReason"]
    assert state["disabledAt"] is not None
    assert state["rechargeInFlightId"] is None
    [failed] = recharges(services, customer_id)
    assert failed.status == PurchaseStatus.FAILED
    assert grants_for(services, customer_id, failed.payment_id) == 0
    assert balance(client, headers) == 150
    [mail] = failure_mails(services, buyer["email"])
    assert "declined" in mail.body_text
    # The link leads to a page (not the JSON API) where the customer can pay it another way.
    assert f"/billing/payments/{failed.payment_id}/authenticate" in mail.body_text

    # Off means off: further debits below the threshold start nothing, charge nothing.
    spend(client, headers, 50)
    spend(client, headers, 50)
    worker.run_until_idle()
    assert len(recharges(services, customer_id)) == 1
    assert len(intents(stripe_api, buyer["stripeCustomerId"])) == 1
    assert len(failure_mails(services, buyer["email"])) == 1


def test_authentication_required_turns_it_off_asks_to_authenticate_and_re_enabling_clears_it(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
) -> None:
    headers, customer_id = buyer["headers"], buyer["customerId"]
    set_up(
        client,
        admin,
        buyer,
        stripe_api,
        start=300,
        threshold=200,
        rechargeCredits=500,
        number=THREE_D_SECURE,
    )

    spend(client, headers, 150)
    worker.run_until_idle()

    state = auto_recharge(client, headers)
    assert state["enabled"] is False
    assert "authentication_required" in state["disabledReason"]
    [failed] = recharges(services, customer_id)
    assert failed.status == PurchaseStatus.FAILED
    assert balance(client, headers) == 150
    [mail] = failure_mails(services, buyer["email"])
    assert "confirm this payment yourself" in mail.body_text
    assert "declined" not in mail.body_text
    spend(client, headers, 10)
    assert len(recharges(services, customer_id)) == 1

    # The customer chooses a card that works: the reason goes, and recharging resumes.
    good = saved_card(client, stripe_api, headers)
    again = enable(client, headers, good, 200, rechargeCredits=500)
    assert (again["enabled"], again["disabledReason"], again["disabledAt"]) == (True, None, None)
    assert auto_recharge(client, headers)["disabledReason"] is None
    spend(client, headers, 10)
    worker.run_until_idle()
    assert balance(client, headers) == 130 + 500
    assert [p.status for p in recharges(services, customer_id)] == [
        PurchaseStatus.FAILED,
        PurchaseStatus.SUCCEEDED,
    ]


def test_a_recharge_whose_job_gives_up_does_not_hold_the_slot_forever(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_link: FaultyLink,
) -> None:
    headers, customer_id = buyer["headers"], buyer["customerId"]
    set_up(client, admin, buyer, stripe_api, start=300, threshold=200, rechargeCredits=250)
    worker.run_until_idle()
    stripe_link.down()
    spend(client, headers, 150)

    def recharge_job_dead() -> bool:
        worker.run_until_idle()
        with services.db.transaction() as session:
            job = session.scalar(select(Job).where(Job.kind == RECHARGE_JOB))
            return job is not None and job.status == JobStatus.DEAD

    assert wait_until(recharge_job_dead, 20)
    stripe_link.up()

    # Nothing will ever run that recharge again: it must not keep blocking every later one.
    [given_up] = recharges(services, customer_id)
    assert given_up.status == PurchaseStatus.FAILED, "a dead recharge is left pending"
    assert auto_recharge(client, headers)["rechargeInFlightId"] is None, "slot held forever"


# -- daily cap -------------------------------------------------------------------------


@pytest.mark.parametrize("settings_overrides", [{"credits_max_recharges_per_day": 1}])
def test_the_daily_cap_stops_a_second_recharge_the_same_day_and_pauses_until_tomorrow(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    settings_overrides: dict[str, Any],
) -> None:
    headers, customer_id = buyer["headers"], buyer["customerId"]
    set_up(client, admin, buyer, stripe_api, start=300, threshold=200, rechargeCredits=200)

    spend(client, headers, 150)  # 150: the day's one recharge
    worker.run_until_idle()
    assert balance(client, headers) == 350
    assert auto_recharge(client, headers)["pausedUntil"] is None

    spend(client, headers, 300)  # 50: a second crossing the same day
    spend(client, headers, 10)
    worker.run_until_idle()

    assert len(recharges(services, customer_id)) == 1
    assert len(intents(stripe_api, buyer["stripeCustomerId"])) == 1
    assert balance(client, headers) == 40
    state = auto_recharge(client, headers)
    assert state["pausedUntil"] is not None
    paused_until = datetime.fromisoformat(state["pausedUntil"])
    assert paused_until > utcnow()
    assert (paused_until - utcnow()).total_seconds() <= 24 * 3600
    assert state["enabled"] is True  # paused, not turned off
    assert state["rechargeInFlightId"] is None
    refused = client.post(f"{AUTO}/trigger", headers=headers)
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "recharge_not_started"
    assert refused.json()["error"]["details"]["cause"] == "daily_cap"


# -- manual trigger --------------------------------------------------------------------


def test_manual_trigger_charges_now_and_answers_the_purchase(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
) -> None:
    headers, customer_id = buyer["headers"], buyer["customerId"]
    pm = set_up(client, admin, buyer, stripe_api, start=500, threshold=100, rechargeCredits=250)

    triggered = client.post(f"{AUTO}/trigger", headers=headers)
    assert triggered.status_code == 200, triggered.text
    data = triggered.json()["data"]
    assert (data["kind"], data["status"], data["credits"]) == ("recharge", "succeeded", 250)
    assert (data["amount"], data["balance"]) == (250, 750)
    [intent] = intents(stripe_api, buyer["stripeCustomerId"])
    assert (data["payment_intent_id"], intent.payment_method) == (intent.id, pm)

    worker.run_until_idle()  # the backstop job finds the recharge done
    assert len(intents(stripe_api, buyer["stripeCustomerId"])) == 1
    assert grants_for(services, customer_id, data["paymentId"]) == 1
    assert balance(client, headers) == 750
    assert auto_recharge(client, headers)["rechargeInFlightId"] is None


def test_trigger_while_a_recharge_is_in_flight_is_409_and_starts_nothing(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    stripe_api: stripe.StripeClient,
) -> None:
    headers = buyer["headers"]
    set_up(client, admin, buyer, stripe_api, start=300, threshold=200, rechargeCredits=250)
    spend(client, headers, 150)  # starts one; the worker has not run it

    refused = client.post(f"{AUTO}/trigger", headers=headers)
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "recharge_not_started"
    [in_flight] = recharges(services, buyer["customerId"])
    assert refused.json()["error"]["details"] == {
        "cause": "in_flight",
        "recharge_in_flight_id": in_flight.id,
    }
    assert intents(stripe_api, buyer["stripeCustomerId"]) == []


def test_a_triggered_recharge_whose_card_declines_is_402_with_the_decline(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    stripe_api: stripe.StripeClient,
) -> None:
    headers = buyer["headers"]
    set_up(
        client,
        admin,
        buyer,
        stripe_api,
        start=300,
        threshold=100,
        rechargeCredits=250,
        number=DECLINES_AT_CHARGE,
    )

    declined = client.post(f"{AUTO}/trigger", headers=headers)

    assert declined.status_code == 402, declined.text
    error = declined.json()["error"]
    assert error["code"] == "card_declined"
    [failed] = recharges(services, buyer["customerId"])
    assert error["details"]["decline_code"] == "generic_decline"
    assert error["details"]["purchase_id"] == failed.id
    assert failed.status == PurchaseStatus.FAILED
    assert balance(client, headers) == 300
    assert auto_recharge(client, headers)["enabled"] is False


def test_trigger_with_auto_recharge_off_is_409_auto_recharge_disabled(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    stripe_api: stripe.StripeClient,
) -> None:
    headers = buyer["headers"]
    never_set = client.post(f"{AUTO}/trigger", headers=headers)
    assert never_set.status_code == 409, never_set.text
    assert never_set.json()["error"]["code"] == "auto_recharge_disabled"

    pm = set_up(client, admin, buyer, stripe_api, start=0, threshold=200, rechargeCredits=250)
    off = put_settings(client, headers, enabled=False, thresholdCredits=200, paymentMethodId=pm)
    assert off.status_code == 200, off.text
    turned_off = client.post(f"{AUTO}/trigger", headers=headers)
    assert turned_off.status_code == 409, turned_off.text
    assert turned_off.json()["error"]["code"] == "auto_recharge_disabled"
    assert recharges(services, buyer["customerId"]) == []
    assert intents(stripe_api, buyer["stripeCustomerId"]) == []


# -- a worker killed between Stripe's charge and our grant -----------------------------


@pytest.mark.parametrize("finished_by", ["webhook", "job_retry"])
def test_worker_killed_between_the_charge_and_the_grant_still_grants_once(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    settings: Settings,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_link: FaultyLink,
    tmp_path: Path,
    finished_by: str,
) -> None:
    headers, customer_id, stripe_id = (
        buyer["headers"],
        buyer["customerId"],
        buyer["stripeCustomerId"],
    )
    set_up(client, admin, buyer, stripe_api, start=300, threshold=200, rechargeCredits=400)
    worker.run_until_idle()  # only the recharge job will be left for the subprocess
    spend(client, headers, 150)
    [purchase] = recharges(services, customer_id)

    # Hold Stripe's answer to the job's first call (the look-up for a lost try's intent),
    # then lock the payment so that, once Stripe has charged, the worker cannot record it.
    stripe_link.hold_responses()
    process = start_worker_process(settings, stripe_link.url, STRIPE_KEY, tmp_path)
    try:
        assert stripe_link.wait_for_held_response(timeout=30), output(process)
        with services.db.engine.connect() as blocker:
            transaction = blocker.begin()  # SQLite: BEGIN IMMEDIATE takes the write lock
            blocker.execute(
                select(Payment.id).where(Payment.id == purchase.payment_id).with_for_update()
            )
            stripe_link.up()
            assert wait_until(
                lambda: [i.status for i in intents(stripe_api, stripe_id)] == ["succeeded"], 20
            ), output(process)
            if services.db.dialect == "postgresql":  # SQLite's busy wait shows no waiter
                # The worker got Stripe's answer and now waits on our lock to store the intent.
                assert wait_until(lambda: waits_on_a_lock(services.db.engine), 20)
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
            transaction.rollback()
    finally:
        if process.poll() is None:
            process.kill()

    [charged] = intents(stripe_api, stripe_id)
    assert payment(services, purchase.payment_id).stripe_payment_intent_id is None
    assert balance(client, headers) == 150  # Stripe took the money; we granted nothing yet

    if finished_by == "webhook":
        obj = json.loads(json.dumps(charged.to_dict(), default=str))
        body, signed = delivery(event("payment_intent.succeeded", obj), WEBHOOK_SECRET)
        received = client.post("/webhooks/stripe", content=body, headers=signed)
        assert received.status_code == 200, received.text
        worker.run_until_idle()
        assert balance(client, headers) == 150 + 400
        with services.db.transaction() as session:
            job = session.scalar(select(Job).where(Job.kind == RECHARGE_JOB))
            assert job is not None
            assert job.status == JobStatus.RUNNING  # the dead worker's lease still holds it

    # Once the dead worker's lease ends, the job runs again.
    drain(services, worker, timeout=settings.job_lease_seconds + 20)

    assert [i.id for i in intents(stripe_api, stripe_id)] == [charged.id]
    assert grants_for(services, customer_id, purchase.payment_id) == 1
    assert balance(client, headers) == 150 + 400
    [done] = recharges(services, customer_id)
    assert done.status == PurchaseStatus.SUCCEEDED
    # Whichever path finished it, the payment knows its intent (a refund needs it).
    recorded = payment(services, purchase.payment_id).stripe_payment_intent_id
    assert recorded == charged.id, "the payment never learnt its PaymentIntent"
    with services.db.transaction() as session:
        account = session.get(CreditAccount, customer_id)
        assert account is not None
        assert account.recharge_in_flight_id is None
