"""Refunds: full or partial, never more than what is left, recorded, audited, made once."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import stripe
from conftest import WEBHOOK_SECRET
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from support.netfault import FaultyLink
from support.payments import browser_pays, make_product, saved_card
from support.stripe_events import delivery, event
from support.waiting import wait_until

from billfold.jobs.models import Job, JobStatus
from billfold.jobs.worker import Worker
from billfold.kit.audit import AuditEntry
from billfold.mail.models import OutboxMail
from billfold.payments.models import Refund, RefundStatus
from billfold.payments.refunds import REFUND_JOB
from billfold.services import Services
from billfold.standin import LocalStripe

# The refund job is due twice the inline timeout after the request: keep that short here.
QUICK_RETRY = pytest.mark.parametrize(
    "settings_overrides", [{"stripe_inline_timeout_seconds": 1.0}]
)

# -- helpers ---------------------------------------------------------------------------


def paid_payment(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    stripe_api: stripe.StripeClient,
    amount: int = 1000,
) -> dict[str, Any]:
    """A succeeded payment of `amount` (paid with a saved card): the create-intent answer."""
    product = make_product(client, admin, unit_amount=amount, stock=5)
    pm = saved_card(client, stripe_api, buyer["headers"])
    response = client.post(
        "/payments/create-intent",
        json={"productId": product["id"], "quantity": 1, "paymentMethodId": pm},
        headers=buyer["headers"],
    )
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["status"] == "succeeded"
    return {
        "payment_id": data["paymentId"],
        "order_id": data["orderId"],
        "payment_intent_id": data["payment_intent_id"],
    }


def refund(
    client: TestClient, headers: dict[str, str], payment_id: str, **body: Any
) -> httpx.Response:
    response: httpx.Response = client.post(
        f"/payments/{payment_id}/refund", json=body, headers=headers
    )
    return response


def payment(client: TestClient, admin: dict[str, str], payment_id: str) -> dict[str, Any]:
    response = client.get(f"/payments/{payment_id}", headers=admin)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def order_status(client: TestClient, admin: dict[str, str], order_id: str) -> str:
    response = client.get(f"/orders/{order_id}", headers=admin)
    assert response.status_code == 200, response.text
    status: str = response.json()["data"]["status"]
    return status


def stripe_refunds(stripe_api: stripe.StripeClient, intent_id: str) -> list[Any]:
    """The refunds Stripe itself holds for the PaymentIntent."""
    return list(stripe_api.v1.refunds.list(params={"payment_intent": intent_id}).data)


def refund_rows(services: Services, payment_id: str) -> list[Refund]:
    with services.db.transaction() as session:
        rows = session.scalars(
            select(Refund).where(Refund.payment_id == payment_id).order_by(Refund.created_at)
        )
        return list(rows)


def error_code(response: httpx.Response) -> str:
    code: str = response.json()["error"]["code"]
    return code


def snapshot(
    client: TestClient,
    admin: dict[str, str],
    services: Services,
    stripe_api: stripe.StripeClient,
    paid: dict[str, Any],
) -> tuple[Any, ...]:
    """Everything a refund could change: ours, the order, the audit log, jobs and Stripe."""
    with services.db.transaction() as session:
        audits = session.scalar(select(func.count()).select_from(AuditEntry))
        jobs = session.scalar(select(func.count()).select_from(Job))
    current = payment(client, admin, paid["payment_id"])
    return (
        current["amountRefunded"],
        [(r["id"], r["status"], r["amount"]) for r in current["refunds"]],
        len(refund_rows(services, paid["payment_id"])),
        order_status(client, admin, paid["order_id"]),
        audits,
        jobs,
        sorted(r.id for r in stripe_refunds(stripe_api, paid["payment_intent_id"])),
    )


def charge_of(stripe_api: stripe.StripeClient, intent_id: str) -> dict[str, Any]:
    """The PaymentIntent's charge as Stripe has it now, as a charge.refunded event carries it."""
    latest = stripe_api.v1.payment_intents.retrieve(intent_id).latest_charge
    assert latest is not None, "the PaymentIntent has no charge"
    charge_id = latest if isinstance(latest, str) else latest.id  # localstripe expands it
    obj: dict[str, Any] = stripe_api.v1.charges.retrieve(charge_id).to_dict()
    return obj


def deliver(client: TestClient, evt: dict[str, Any]) -> None:
    body, headers = delivery(evt, WEBHOOK_SECRET)
    response = client.post("/webhooks/stripe", content=body, headers=headers)
    assert response.status_code == 200, response.text


def refund_jobs_open(services: Services) -> int:
    with services.db.transaction() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(Job)
                .where(
                    Job.kind == REFUND_JOB,
                    Job.status.in_([JobStatus.PENDING, JobStatus.RUNNING]),
                )
            )
            or 0
        )


def drain_refund_jobs(services: Services, worker: Worker[Services], timeout: float = 15) -> None:
    """Run the worker until every refund job (due a few seconds from now) has run."""

    def done() -> bool:
        worker.run_until_idle()
        return refund_jobs_open(services) == 0

    assert wait_until(done, timeout, interval=0.1), "refund jobs still open"


# -- full and partial refunds ----------------------------------------------------------


def test_full_refund_is_made_in_stripe_recorded_and_audited(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    stripe_api: stripe.StripeClient,
) -> None:
    paid = paid_payment(client, admin, buyer, stripe_api, amount=1000)

    response = refund(client, admin, paid["payment_id"], reason="requested_by_customer")

    assert response.status_code == 201, response.text
    made = response.json()["data"]
    assert made["status"] == "succeeded"
    assert made["amount"] == 1000
    in_stripe = stripe_refunds(stripe_api, paid["payment_intent_id"])
    assert [(r.id, r.amount, r.status) for r in in_stripe] == [
        (made["stripeRefundId"], 1000, "succeeded")
    ]
    assert in_stripe[0].metadata["refund_id"] == made["id"]
    after = payment(client, admin, paid["payment_id"])
    assert after["amountRefunded"] == 1000
    assert [(r["id"], r["status"]) for r in after["refunds"]] == [(made["id"], "succeeded")]
    assert order_status(client, admin, paid["order_id"]) == "refunded"
    admin_id = client.get("/users/me", headers=admin).json()["data"]["id"]
    with services.db.transaction() as session:
        entries = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "refund.request")
        ).all()
        assert [(e.actor, e.subject_id) for e in entries] == [(admin_id, made["id"])]
        assert entries[0].details["amount"] == 1000
        assert entries[0].details["payment_id"] == paid["payment_id"]


def test_partial_refunds_add_up_and_never_exceed_what_remains(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    stripe_api: stripe.StripeClient,
) -> None:
    paid = paid_payment(client, admin, buyer, stripe_api, amount=1000)

    first = refund(client, admin, paid["payment_id"], amount=300, reason="duplicate")
    second = refund(client, admin, paid["payment_id"], amount=200, notes="goodwill")

    assert (first.status_code, second.status_code) == (201, 201), second.text
    assert [first.json()["data"]["status"], second.json()["data"]["status"]] == ["succeeded"] * 2
    after = payment(client, admin, paid["payment_id"])
    assert after["amountRefunded"] == 500
    assert order_status(client, admin, paid["order_id"]) == "partially_refunded"
    assert sorted(r.amount for r in stripe_refunds(stripe_api, paid["payment_intent_id"])) == [
        200,
        300,
    ]
    before = snapshot(client, admin, services, stripe_api, paid)

    too_much = refund(client, admin, paid["payment_id"], amount=600)

    assert too_much.status_code == 409, too_much.text
    assert error_code(too_much) == "refund_exceeds_remaining"
    assert snapshot(client, admin, services, stripe_api, paid) == before
    assert len(stripe_refunds(stripe_api, paid["payment_intent_id"])) == 2


def test_rest_of_a_partly_refunded_payment_can_be_refunded_then_nothing_more(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    stripe_api: stripe.StripeClient,
) -> None:
    paid = paid_payment(client, admin, buyer, stripe_api, amount=1000)
    assert refund(client, admin, paid["payment_id"], amount=300).status_code == 201

    rest = refund(client, admin, paid["payment_id"])  # no amount: what remains

    assert rest.status_code == 201, rest.text
    assert rest.json()["data"]["amount"] == 700
    assert payment(client, admin, paid["payment_id"])["amountRefunded"] == 1000
    assert order_status(client, admin, paid["order_id"]) == "refunded"
    before = snapshot(client, admin, services, stripe_api, paid)

    again = refund(client, admin, paid["payment_id"])
    one_more_cent = refund(client, admin, paid["payment_id"], amount=1)

    assert (again.status_code, error_code(again)) == (409, "already_refunded")
    assert (one_more_cent.status_code, error_code(one_more_cent)) == (409, "already_refunded")
    assert snapshot(client, admin, services, stripe_api, paid) == before


# -- refused requests ------------------------------------------------------------------


INVALID_BODIES: dict[str, dict[str, Any]] = {
    "zero": {"amount": 0},
    "negative": {"amount": -5},
    "string": {"amount": "100"},
    "fraction": {"amount": 10.5},
    "boolean": {"amount": True},
    "huge": {"amount": 10**12},
    "unknown_reason": {"amount": 100, "reason": "because"},
    "empty_reason": {"reason": ""},
    "notes_too_long": {"amount": 100, "notes": "x" * 10_000},
    "unknown_field": {"amount": 100, "currency": "eur"},
}


def test_invalid_refund_request_is_422_and_changes_nothing(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    stripe_api: stripe.StripeClient,
) -> None:
    paid = paid_payment(client, admin, buyer, stripe_api)
    before = snapshot(client, admin, services, stripe_api, paid)
    url = f"/payments/{paid['payment_id']}/refund"

    answers = {
        name: refund(client, admin, paid["payment_id"], **body)
        for name, body in INVALID_BODIES.items()
    }
    answers["not_json"] = client.post(
        url, content=b"{amount: 1", headers={**admin, "Content-Type": "application/json"}
    )
    answers["not_an_object"] = client.post(url, json=[100], headers=admin)

    wrong = {
        name: (r.status_code, r.text)
        for name, r in answers.items()
        if (r.status_code, r.json().get("error", {}).get("code")) != (422, "validation_error")
    }
    assert wrong == {}
    assert snapshot(client, admin, services, stripe_api, paid) == before


def test_only_an_admin_may_refund(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    stripe_api: stripe.StripeClient,
) -> None:
    paid = paid_payment(client, admin, buyer, stripe_api)
    before = snapshot(client, admin, services, stripe_api, paid)

    own = refund(client, buyer["headers"], paid["payment_id"], amount=100)
    anonymous = refund(client, {}, paid["payment_id"], amount=100)

    assert (own.status_code, error_code(own)) == (403, "admin_only")
    assert anonymous.status_code == 401
    assert snapshot(client, admin, services, stripe_api, paid) == before


@pytest.mark.parametrize("payment_id", ["pay_" + "0" * 32, "x" * 300, "pay_%27%20OR%201=1"])
def test_refund_of_unknown_payment_is_404(
    payment_id: str, client: TestClient, admin: dict[str, str]
) -> None:
    response = refund(client, admin, payment_id, amount=100)

    assert response.status_code == 404, response.text
    assert error_code(response) == "not_found"


def test_unpaid_payment_cannot_be_refunded(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    stripe_api: stripe.StripeClient,
) -> None:
    product = make_product(client, admin, unit_amount=1000)
    opened = client.post(
        "/payments/create-intent",
        json={"productId": product["id"], "quantity": 1},
        headers=buyer["headers"],
    )
    assert opened.status_code == 200, opened.text
    data = opened.json()["data"]
    assert data["status"] == "requires_payment_method"
    unpaid = {"payment_id": data["paymentId"], "payment_intent_id": data["payment_intent_id"]}

    full = refund(client, admin, unpaid["payment_id"])
    partial = refund(client, admin, unpaid["payment_id"], amount=100)

    for response in (full, partial):
        assert response.status_code == 409, response.text
        assert error_code(response) == "payment_not_refundable"
    assert payment(client, admin, unpaid["payment_id"])["amountRefunded"] == 0
    assert refund_rows(services, unpaid["payment_id"]) == []


# -- concurrency and failures ----------------------------------------------------------


def test_concurrent_refunds_together_never_exceed_the_payment(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    stripe_api: stripe.StripeClient,
) -> None:
    paid = paid_payment(client, admin, buyer, stripe_api, amount=1000)
    start = threading.Barrier(5)

    def refund_300(_: int) -> httpx.Response:
        start.wait(timeout=10)
        return refund(client, admin, paid["payment_id"], amount=300)

    with ThreadPoolExecutor(max_workers=5) as pool:
        responses = list(pool.map(refund_300, range(5)))

    codes = sorted(r.status_code for r in responses)
    assert codes == [201, 201, 201, 409, 409], [r.text for r in responses]
    refused = [r for r in responses if r.status_code == 409]
    assert {error_code(r) for r in refused} == {"refund_exceeds_remaining"}
    in_stripe = stripe_refunds(stripe_api, paid["payment_intent_id"])
    assert sorted(r.amount for r in in_stripe) == [300, 300, 300]
    assert payment(client, admin, paid["payment_id"])["amountRefunded"] == 900
    rows = refund_rows(services, paid["payment_id"])
    assert sorted((r.amount, r.status) for r in rows) == [(300, RefundStatus.SUCCEEDED)] * 3
    assert {r.stripe_refund_id for r in rows} == {r.id for r in in_stripe}
    assert order_status(client, admin, paid["order_id"]) == "partially_refunded"


@QUICK_RETRY
def test_refund_while_stripe_is_down_is_reserved_then_made_once_by_the_job(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    worker: Worker[Services],
    stripe_link: FaultyLink,
    stripe_api: stripe.StripeClient,
) -> None:
    paid = paid_payment(client, admin, buyer, stripe_api, amount=1000)
    stripe_link.down()

    response = refund(client, admin, paid["payment_id"], amount=600)

    assert response.status_code == 201, response.text
    pending = response.json()["data"]
    assert (pending["status"], pending["stripeRefundId"]) == ("pending", None)
    assert payment(client, admin, paid["payment_id"])["amountRefunded"] == 600  # reserved
    assert order_status(client, admin, paid["order_id"]) == "paid"
    over = refund(client, admin, paid["payment_id"], amount=500)
    assert (over.status_code, error_code(over)) == (409, "refund_exceeds_remaining")
    worker.run_until_idle()  # not due yet, and Stripe is still away
    assert stripe_refunds(stripe_api, paid["payment_intent_id"]) == []

    stripe_link.up()
    drain_refund_jobs(services, worker)

    in_stripe = stripe_refunds(stripe_api, paid["payment_intent_id"])
    assert [(r.amount, r.metadata["refund_id"]) for r in in_stripe] == [(600, pending["id"])]
    after = payment(client, admin, paid["payment_id"])
    assert after["amountRefunded"] == 600
    assert [(r["status"], r["stripeRefundId"]) for r in after["refunds"]] == [
        ("succeeded", in_stripe[0].id)
    ]
    assert order_status(client, admin, paid["order_id"]) == "partially_refunded"


@QUICK_RETRY
def test_refund_whose_answer_is_lost_is_made_once(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    worker: Worker[Services],
    stripe_link: FaultyLink,
    stripe_api: stripe.StripeClient,
) -> None:
    paid = paid_payment(client, admin, buyer, stripe_api, amount=1000)
    stripe_link.drop_responses()

    response = refund(client, admin, paid["payment_id"], amount=400)

    assert response.status_code == 201, response.text
    made = response.json()["data"]
    assert made["status"] == "pending"
    stripe_link.up()
    drain_refund_jobs(services, worker)

    in_stripe = stripe_refunds(stripe_api, paid["payment_intent_id"])
    assert [(r.amount, r.metadata["refund_id"]) for r in in_stripe] == [(400, made["id"])]
    after = payment(client, admin, paid["payment_id"])
    assert after["amountRefunded"] == 400
    assert [(r["status"], r["stripeRefundId"]) for r in after["refunds"]] == [
        ("succeeded", in_stripe[0].id)
    ]


@QUICK_RETRY
def test_refund_made_in_stripe_by_a_try_that_died_is_found_not_made_again(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    worker: Worker[Services],
    stripe_link: FaultyLink,
    stripe_api: stripe.StripeClient,
) -> None:
    paid = paid_payment(client, admin, buyer, stripe_api, amount=1000)
    stripe_link.down()
    pending = refund(client, admin, paid["payment_id"], amount=250).json()["data"]
    assert pending["status"] == "pending"
    stripe_link.up()
    # A try that reached Stripe, then died before recording what Stripe answered.
    lost = services.stripe.create_refund(
        refund_id=pending["id"],
        payment_id=paid["payment_id"],
        payment_intent_id=paid["payment_intent_id"],
        amount=250,
        reason="requested_by_customer",
    )

    drain_refund_jobs(services, worker)

    assert [r.id for r in stripe_refunds(stripe_api, paid["payment_intent_id"])] == [lost.id]
    after = payment(client, admin, paid["payment_id"])
    assert after["amountRefunded"] == 250
    assert [(r["status"], r["stripeRefundId"]) for r in after["refunds"]] == [
        ("succeeded", lost.id)
    ]


@QUICK_RETRY
def test_refund_stripe_no_longer_knows_fails_and_gives_the_amount_back(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    worker: Worker[Services],
    stripe_link: FaultyLink,
    stripe_api: stripe.StripeClient,
) -> None:
    paid = paid_payment(client, admin, buyer, stripe_api, amount=1000)
    stripe_link.down()  # the stand-in dies…
    response = refund(client, admin, paid["payment_id"], amount=450)
    assert response.status_code == 201, response.text
    assert response.json()["data"]["status"] == "pending"

    with LocalStripe.start() as fresh:  # …and a fresh one, that never saw the payment, answers
        stripe_link.retarget("127.0.0.1", fresh.port)
        stripe_link.up()
        drain_refund_jobs(services, worker)

    after = payment(client, admin, paid["payment_id"])
    assert after["amountRefunded"] == 0  # the 450 is free again
    assert [(r["status"], r["amount"]) for r in after["refunds"]] == [("failed", 450)]
    assert "not_found" in (refund_rows(services, paid["payment_id"])[0].failure or "")
    assert order_status(client, admin, paid["order_id"]) == "paid"


def test_refund_refused_inline_reserves_nothing_so_a_retry_reserves_once(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    worker: Worker[Services],
    stripe_link: FaultyLink,
    stripe_api: stripe.StripeClient,
    localstripe: LocalStripe,
) -> None:
    paid = paid_payment(client, admin, buyer, stripe_api, amount=1000)
    with LocalStripe.start() as fresh:  # Stripe answers, but does not know the payment
        stripe_link.down()
        stripe_link.retarget("127.0.0.1", fresh.port)
        stripe_link.up()
        refused = refund(client, admin, paid["payment_id"], amount=450)
        stripe_link.down()
        stripe_link.retarget("127.0.0.1", localstripe.port)
        stripe_link.up()

    assert refused.status_code == 404, refused.text
    assert payment(client, admin, paid["payment_id"])["amountRefunded"] == 0
    retried = refund(client, admin, paid["payment_id"], amount=450)
    assert retried.status_code == 201, retried.text
    assert retried.json()["data"]["status"] == "succeeded"
    drain_refund_jobs(services, worker)

    after = payment(client, admin, paid["payment_id"])
    assert after["amountRefunded"] == 450
    assert sorted(r["status"] for r in after["refunds"]) == ["failed", "succeeded"]
    in_stripe = stripe_refunds(stripe_api, paid["payment_intent_id"])
    assert [r.amount for r in in_stripe] == [450]


# -- charge.refunded -------------------------------------------------------------------


def test_charge_refunded_after_our_refund_counts_nothing_twice(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
) -> None:
    paid = paid_payment(client, admin, buyer, stripe_api, amount=1000)
    made = refund(client, admin, paid["payment_id"], amount=300).json()["data"]
    evt = event("charge.refunded", charge_of(stripe_api, paid["payment_intent_id"]))
    before = payment(client, admin, paid["payment_id"])

    deliver(client, evt)
    deliver(client, evt)  # the same event again
    deliver(client, event("charge.refunded", evt["data"]["object"]))  # another, same content
    worker.run_until_idle()

    after = payment(client, admin, paid["payment_id"])
    assert after == before
    assert after["amountRefunded"] == 300
    assert [(r["id"], r["status"]) for r in after["refunds"]] == [(made["id"], "succeeded")]
    assert len(refund_rows(services, paid["payment_id"])) == 1
    assert order_status(client, admin, paid["order_id"]) == "partially_refunded"


@QUICK_RETRY
def test_charge_refunded_before_our_refund_recorded_settles_it_once(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    worker: Worker[Services],
    stripe_link: FaultyLink,
    stripe_api: stripe.StripeClient,
) -> None:
    paid = paid_payment(client, admin, buyer, stripe_api, amount=1000)
    stripe_link.down()
    pending = refund(client, admin, paid["payment_id"], amount=300).json()["data"]
    stripe_link.up()
    # The refund reaches Stripe, but its answer is lost: Stripe's event arrives first.
    services.stripe.create_refund(
        refund_id=pending["id"],
        payment_id=paid["payment_id"],
        payment_intent_id=paid["payment_intent_id"],
        amount=300,
        reason=None,
    )
    evt = event("charge.refunded", charge_of(stripe_api, paid["payment_intent_id"]))
    deliver(client, evt)
    worker.run_until_idle()  # the event is due now; the refund's own retry is not yet

    settled = payment(client, admin, paid["payment_id"])
    assert settled["amountRefunded"] == 300
    assert [(r["id"], r["status"]) for r in settled["refunds"]] == [(pending["id"], "succeeded")]
    assert order_status(client, admin, paid["order_id"]) == "partially_refunded"

    deliver(client, evt)
    drain_refund_jobs(services, worker)  # the refund's own retry, later

    assert len(stripe_refunds(stripe_api, paid["payment_intent_id"])) == 1
    assert payment(client, admin, paid["payment_id"]) == settled
    assert len(refund_rows(services, paid["payment_id"])) == 1


def test_refund_made_directly_in_stripe_is_recorded_once_as_external(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
) -> None:
    paid = paid_payment(client, admin, buyer, stripe_api, amount=1000)
    outside = stripe_api.v1.refunds.create(
        params={"payment_intent": paid["payment_intent_id"], "amount": 400}
    )
    evt = event("charge.refunded", charge_of(stripe_api, paid["payment_intent_id"]))

    deliver(client, evt)
    worker.run_until_idle()

    after = payment(client, admin, paid["payment_id"])
    assert after["amountRefunded"] == 400
    assert [
        (r["stripeRefundId"], r["amount"], r["status"], r["createdBy"]) for r in after["refunds"]
    ] == [(outside.id, 400, "succeeded", "stripe")]
    assert order_status(client, admin, paid["order_id"]) == "partially_refunded"
    with services.db.transaction() as session:
        external = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "refund.external")
        ).all()
        assert [(e.actor, e.details["amount"]) for e in external] == [("stripe", 400)]

    deliver(client, evt)  # the same event again
    deliver(client, event("charge.refunded", evt["data"]["object"]))  # another, same content
    worker.run_until_idle()

    assert payment(client, admin, paid["payment_id"]) == after
    assert len(refund_rows(services, paid["payment_id"])) == 1

    # What is left after the outside refund is all an admin can still refund.
    too_much = refund(client, admin, paid["payment_id"], amount=700)
    rest = refund(client, admin, paid["payment_id"])
    assert (too_much.status_code, error_code(too_much)) == (409, "refund_exceeds_remaining")
    assert (rest.status_code, rest.json()["data"]["amount"]) == (201, 600)
    assert order_status(client, admin, paid["order_id"]) == "refunded"


def test_refund_event_before_the_success_event_leaves_the_order_refunded(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
) -> None:
    product = make_product(client, admin, unit_amount=1000)
    opened = client.post(
        "/payments/create-intent",
        json={"productId": product["id"], "quantity": 1},
        headers=buyer["headers"],
    )
    assert opened.status_code == 200, opened.text
    data = opened.json()["data"]
    intent_id = data["payment_intent_id"]
    browser_pays(stripe_api, intent_id)  # paid in the browser; we have not heard yet
    stripe_api.v1.refunds.create(params={"payment_intent": intent_id})  # refunded in full

    deliver(client, event("charge.refunded", charge_of(stripe_api, intent_id)))
    worker.run_until_idle()
    succeeded = stripe_api.v1.payment_intents.retrieve(intent_id).to_dict()
    deliver(client, event("payment_intent.succeeded", succeeded))
    worker.run_until_idle()

    after = payment(client, admin, data["paymentId"])
    assert (after["status"], after["amountRefunded"]) == ("succeeded", 1000)
    assert order_status(client, admin, data["orderId"]) == "refunded"


def test_refund_retried_with_the_same_idempotency_key_is_made_once(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    stripe_api: stripe.StripeClient,
) -> None:
    paid = paid_payment(client, admin, buyer, stripe_api, amount=1000)
    headers = {**admin, "Idempotency-Key": "refund-attempt-1"}

    first = refund(client, headers, paid["payment_id"], amount=300)
    retry = refund(client, headers, paid["payment_id"], amount=300)  # the answer was lost

    assert (first.status_code, retry.status_code) == (201, 201)
    assert retry.json()["data"]["id"] == first.json()["data"]["id"]
    assert payment(client, admin, paid["payment_id"])["amountRefunded"] == 300
    assert len(stripe_refunds(stripe_api, paid["payment_intent_id"])) == 1


# -- the customer hears of it ------------------------------------------------------------


def _refund_mails(services: Services) -> list[OutboxMail]:
    with services.db.transaction() as session:
        return list(session.scalars(select(OutboxMail).where(OutboxMail.kind == "refund")))


def test_each_refund_emails_the_customer_once(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
) -> None:
    paid = paid_payment(client, admin, buyer, stripe_api, amount=1000)
    assert _refund_mails(services) == []

    first = refund(client, admin, paid["payment_id"], amount=300).json()["data"]
    second = refund(client, admin, paid["payment_id"], amount=200).json()["data"]
    # Stripe's charge.refunded for the same refunds, twice, adds no e-mail.
    evt = event("charge.refunded", charge_of(stripe_api, paid["payment_intent_id"]))
    deliver(client, evt)
    deliver(client, event("charge.refunded", evt["data"]["object"]))
    worker.run_until_idle()

    mails = _refund_mails(services)
    assert sorted(m.dedupe_key for m in mails) == sorted(
        [f"refund:{first['id']}", f"refund:{second['id']}"]
    )
    assert {m.to_address for m in mails} == {buyer["email"]}
    bodies = {m.dedupe_key: m.body_text for m in mails}
    assert "We refunded 3.00 USD of your payment of 10.00 USD" in bodies[f"refund:{first['id']}"]
    assert "We refunded 2.00 USD" in bodies[f"refund:{second['id']}"]
