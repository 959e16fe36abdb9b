"""The credits API, call by call: packages, buying (saved card, Elements, 3-D Secure), the
balance and its ledger, consume, admin grants, and refunds clawing back unspent credits.

Every test goes through HTTP against a real database and localstripe, and checks what a
call changed (or did not) through the API and, where the API cannot show it, the tables.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from typing import Any

import httpx
import pytest
import stripe
from conftest import WEBHOOK_SECRET
from factories import signed_up
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from support.credits import balance, grant, ledger
from support.payments import THREE_D_SECURE, browser_pays, card, saved_card
from support.stripe_events import delivery, event

from billfold.credits.models import CreditPurchase, LedgerEntry
from billfold.jobs.worker import Worker
from billfold.kit.audit import AuditEntry
from billfold.mail.models import OutboxMail
from billfold.payments.models import Payment
from billfold.services import Services
from billfold.standin import LocalStripe

# Attaches fine, declines when charged (Stripe's "attach but fail" test card).
DECLINES_AT_CHARGE = "4000000000000341"

# -- helpers ----------------------------------------------------------------------------


def make_package(
    client: TestClient, admin: dict[str, str], credits: int, price: int, **extra: Any
) -> dict[str, Any]:
    body = {"name": f"{credits} credits", "credits": credits, "price": price, **extra}
    response = client.post("/credits/packages", json=body, headers=admin)
    assert response.status_code == 201, response.text
    package: dict[str, Any] = response.json()["data"]
    return package


def package_ids(client: TestClient, headers: dict[str, str], **params: Any) -> list[str]:
    response = client.get("/credits/packages", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return [p["id"] for p in response.json()["data"]]


def purchase(client: TestClient, headers: dict[str, str], **body: Any) -> httpx.Response:
    response: httpx.Response = client.post("/credits/purchase", json=body, headers=headers)
    return response


def consume(client: TestClient, headers: dict[str, str], body: Any) -> httpx.Response:
    response: httpx.Response = client.post("/credits/consume", json=body, headers=headers)
    return response


def confirm(client: TestClient, headers: dict[str, str], intent_id: str) -> httpx.Response:
    response: httpx.Response = client.post(
        "/payments/confirm", json={"payment_intent_id": intent_id}, headers=headers
    )
    return response


def count(services: Services, model: Any, *where: Any) -> int:
    with services.db.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def deliver_intent_event(
    client: TestClient, stripe_api: stripe.StripeClient, kind: str, intent_id: str
) -> None:
    obj = stripe_api.v1.payment_intents.retrieve(intent_id).to_dict()
    evt = event(kind, json.loads(json.dumps(obj, default=str)))
    body, headers = delivery(evt, WEBHOOK_SECRET)
    response = client.post("/webhooks/stripe", content=body, headers=headers)
    assert response.status_code == 200, response.text


def charge_refunded(client: TestClient, stripe_api: stripe.StripeClient, intent_id: str) -> None:
    """What Stripe sends after a refund: charge.refunded carrying the charge."""
    latest = stripe_api.v1.payment_intents.retrieve(intent_id).latest_charge
    assert latest is not None
    charge_id = latest if isinstance(latest, str) else latest.id
    obj = stripe_api.v1.charges.retrieve(charge_id).to_dict()
    body, headers = delivery(
        event("charge.refunded", json.loads(json.dumps(obj, default=str))), WEBHOOK_SECRET
    )
    response = client.post("/webhooks/stripe", content=body, headers=headers)
    assert response.status_code == 200, response.text


def rows(services: Services, query: Any) -> list[Any]:
    with services.db.transaction() as session:
        return list(session.execute(query).all())


def receipts(services: Services, payment_id: str) -> int:
    return count(services, OutboxMail, OutboxMail.dedupe_key == f"receipt:{payment_id}")


def payments_of(client: TestClient, headers: dict[str, str]) -> list[dict[str, Any]]:
    response = client.get("/payments", headers=headers)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["data"]
    return found


def api_key(client: TestClient, admin: dict[str, str]) -> dict[str, str]:
    response = client.post("/api-keys", json={"name": "host backend"}, headers=admin)
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['data']['key']}"}


def error_code(response: httpx.Response) -> str:
    code: str = response.json()["error"]["code"]
    return code


# -- packages ---------------------------------------------------------------------------


def test_only_admins_manage_packages_and_customers_see_only_active_ones(
    client: TestClient, admin: dict[str, str], buyer: dict[str, Any], services: Services
) -> None:
    small = make_package(client, admin, credits=100, price=150, currency="EUR")
    large = make_package(client, admin, credits=1000, price=900)
    assert (small["credits"], small["price"], small["currency"], small["active"]) == (
        100,
        150,
        "eur",
        True,
    )
    assert package_ids(client, buyer["headers"]) == [small["id"], large["id"]]

    body = {"name": "free money", "credits": 10**6, "price": 1}
    refused = client.post("/credits/packages", json=body, headers=buyer["headers"])
    assert refused.status_code == 403
    assert error_code(refused) == "admin_only"
    patch = client.patch(
        f"/credits/packages/{large['id']}", json={"active": False}, headers=buyer["headers"]
    )
    assert patch.status_code == 403

    retired = client.patch(
        f"/credits/packages/{large['id']}", json={"active": False, "name": "old"}, headers=admin
    )
    assert retired.status_code == 200, retired.text
    assert (retired.json()["data"]["active"], retired.json()["data"]["name"]) == (False, "old")

    assert package_ids(client, buyer["headers"]) == [small["id"]]
    assert package_ids(client, buyer["headers"], includeInactive="true") == [small["id"]]
    assert package_ids(client, admin) == [small["id"]]
    assert package_ids(client, admin, includeInactive="true") == [small["id"], large["id"]]

    # An inactive package cannot be bought, and trying leaves no payment behind.
    bought = purchase(client, buyer["headers"], packageId=large["id"])
    assert bought.status_code == 404
    assert payments_of(client, buyer["headers"]) == []

    missing = client.patch(
        "/credits/packages/cpk_" + "0" * 32, json={"active": True}, headers=admin
    )
    assert missing.status_code == 404
    actions = [
        a
        for (a,) in rows(services, select(AuditEntry.action).where(AuditEntry.action.like("cred%")))
    ]
    assert sorted(actions) == [
        "credit_package.create",
        "credit_package.create",
        "credit_package.update",
    ]


def test_bad_package_input_is_422_and_creates_or_changes_nothing(
    client: TestClient, admin: dict[str, str]
) -> None:
    package = make_package(client, admin, credits=100, price=100)
    good = {"name": "pack", "credits": 100, "price": 100, "currency": "usd"}
    bad_bodies: list[Any] = [
        {**good, "credits": 0},
        {**good, "credits": -5},
        {**good, "credits": "100"},
        {**good, "credits": 100.5},
        {**good, "credits": 10**13},
        {**good, "price": 0},
        {**good, "price": -100},
        {**good, "price": 10**8},
        {**good, "price": 10**30},
        {**good, "currency": "dollars"},
        {**good, "currency": ""},
        {**good, "name": ""},
        {**good, "active": "maybe"},
        {**good, "surprise": 1},
        {k: v for k, v in good.items() if k != "name"},
        [good],
        "pack",
    ]
    for body in bad_bodies:
        response = client.post("/credits/packages", json=body, headers=admin)
        assert response.status_code == 422, (body, response.text)
        assert error_code(response) == "validation_error"
    bad_patches: list[dict[str, Any]] = [
        {"price": 0},
        {"price": "5"},
        {"credits": -1},
        {"active": None},
        {"name": None},
        {"name": ""},
        {"currency": "eur"},
    ]
    for patch in bad_patches:
        response = client.patch(f"/credits/packages/{package['id']}", json=patch, headers=admin)
        assert response.status_code == 422, (patch, response.text)
        assert error_code(response) == "validation_error"

    listed = client.get("/credits/packages", params={"includeInactive": "true"}, headers=admin)
    assert [(p["id"], p["credits"], p["price"], p["active"]) for p in listed.json()["data"]] == [
        (package["id"], 100, 100, True)
    ]


# -- buying -----------------------------------------------------------------------------


def test_saved_card_purchase_succeeds_at_once_and_grants_once_with_one_receipt(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
) -> None:
    package = make_package(client, admin, credits=1000, price=900)
    pm = saved_card(client, stripe_api, buyer["headers"])

    bought = purchase(client, buyer["headers"], packageId=package["id"], paymentMethodId=pm)

    assert bought.status_code == 200, bought.text
    data = bought.json()["data"]
    assert (data["status"], data["credits"], data["amount"], data["currency"]) == (
        "succeeded",
        1000,
        900,
        "usd",
    )
    assert data["balance"] == 1000
    assert data["client_secret"] is None
    intent = stripe_api.v1.payment_intents.retrieve(data["payment_intent_id"])
    assert (intent.status, intent.amount, intent.payment_method) == ("succeeded", 900, pm)
    assert intent.metadata["credit_purchase_id"] == data["purchaseId"]

    # Later arrivals of the same success (confirm, webhook) grant nothing more.
    assert confirm(client, buyer["headers"], data["payment_intent_id"]).status_code == 200
    deliver_intent_event(client, stripe_api, "payment_intent.succeeded", intent.id)
    worker.run_until_idle()

    entries = ledger(client, buyer["headers"])
    assert [(e["kind"], e["amount"], e["balanceAfter"], e["referenceId"]) for e in entries] == [
        ("purchase", 1000, 1000, data["paymentId"])
    ]
    assert balance(client, buyer["headers"]) == 1000
    assert receipts(services, data["paymentId"]) == 1


@pytest.mark.parametrize(
    "settings_overrides",
    [{"credits_unit_price": 3, "credits_custom_min": 100, "credits_custom_max": 5000}],
)
def test_custom_amount_is_priced_per_credit_within_the_configured_bounds(
    client: TestClient, buyer: dict[str, Any], stripe_api: stripe.StripeClient
) -> None:
    pm = saved_card(client, stripe_api, buyer["headers"])

    for credits, price in [(100, 300), (5000, 15000)]:
        bought = purchase(client, buyer["headers"], customAmount=credits, paymentMethodId=pm)
        assert bought.status_code == 200, bought.text
        data = bought.json()["data"]
        assert (data["status"], data["credits"], data["amount"]) == ("succeeded", credits, price)
        assert stripe_api.v1.payment_intents.retrieve(data["payment_intent_id"]).amount == price
    assert balance(client, buyer["headers"]) == 5100

    for outside in [99, 5001, 10**12]:
        refused = purchase(client, buyer["headers"], customAmount=outside, paymentMethodId=pm)
        assert refused.status_code == 422, refused.text
        assert error_code(refused) == "amount_out_of_range"
    ugly: list[dict[str, Any]] = [
        {"customAmount": 0},
        {"customAmount": -500},
        {"customAmount": "500"},
        {"customAmount": 500.5},
        {"customAmount": 10**13},
        {"customAmount": 500, "packageId": "cpk_" + "0" * 32},
        {},
        {"packageId": "not-an-id"},
        {"customAmount": 500, "paymentMethodId": "pm 1; drop"},
        {"customAmount": 500, "savePaymentMethod": "sure"},
        {"customAmount": 500, "price": 1},
    ]
    for body in ugly:
        refused = purchase(client, buyer["headers"], **body)
        assert refused.status_code == 422, (body, refused.text)
        assert error_code(refused) == "validation_error"

    assert balance(client, buyer["headers"]) == 5100
    assert len(payments_of(client, buyer["headers"])) == 2


# 1000 minor units a credit: the largest custom amount would cost 10**9, over Stripe's limit.
@pytest.mark.parametrize("settings_overrides", [{"credits_unit_price": 1000}])
def test_custom_amount_priced_above_the_largest_charge_is_refused_and_creates_nothing(
    client: TestClient, buyer: dict[str, Any], stripe_api: stripe.StripeClient
) -> None:
    pm = saved_card(client, stripe_api, buyer["headers"])

    for body in [{"paymentMethodId": pm}, {}]:
        refused = purchase(client, buyer["headers"], customAmount=1_000_000, **body)
        assert refused.status_code == 422, refused.text
        assert error_code(refused) in {"amount_too_large", "amount_out_of_range"}

    assert balance(client, buyer["headers"]) == 0
    assert payments_of(client, buyer["headers"]) == []
    intents = stripe_api.v1.payment_intents.list(params={"customer": buyer["stripeCustomerId"]})
    assert intents.data == []


def test_elements_purchase_grants_once_on_confirm_and_a_later_webhook_changes_nothing(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
) -> None:
    package = make_package(client, admin, credits=500, price=450)

    opened = purchase(client, buyer["headers"], packageId=package["id"])

    assert opened.status_code == 200, opened.text
    data = opened.json()["data"]
    assert data["status"] == "pending"
    assert data["client_secret"]
    assert data["publishable_key"] == "pk_test_billfold"
    assert data["balance"] == 0
    assert balance(client, buyer["headers"]) == 0
    assert stripe_api.v1.payment_intents.retrieve(data["payment_intent_id"]).amount == 450

    browser_pays(stripe_api, data["payment_intent_id"])
    assert balance(client, buyer["headers"]) == 0  # nothing until we hear of it
    for _ in range(2):
        confirmed = confirm(client, buyer["headers"], data["payment_intent_id"])
        assert confirmed.status_code == 200, confirmed.text
        assert confirmed.json()["data"]["status"] == "succeeded"
    assert balance(client, buyer["headers"]) == 500

    deliver_intent_event(client, stripe_api, "payment_intent.succeeded", data["payment_intent_id"])
    worker.run_until_idle()

    assert balance(client, buyer["headers"]) == 500
    assert [(e["kind"], e["referenceId"]) for e in ledger(client, buyer["headers"])] == [
        ("purchase", data["paymentId"])
    ]
    assert receipts(services, data["paymentId"]) == 1
    with services.db.transaction() as session:
        bought = session.get(CreditPurchase, data["purchaseId"])
        assert bought is not None
        assert bought.status == "succeeded"


def test_webhook_before_confirm_grants_once(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
) -> None:
    package = make_package(client, admin, credits=300, price=300)
    data = purchase(client, buyer["headers"], packageId=package["id"]).json()["data"]
    browser_pays(stripe_api, data["payment_intent_id"])

    deliver_intent_event(client, stripe_api, "payment_intent.succeeded", data["payment_intent_id"])
    deliver_intent_event(client, stripe_api, "payment_intent.succeeded", data["payment_intent_id"])
    worker.run_until_idle()
    assert balance(client, buyer["headers"]) == 300

    confirmed = confirm(client, buyer["headers"], data["payment_intent_id"])
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["data"]["status"] == "succeeded"

    assert balance(client, buyer["headers"]) == 300
    assert len(ledger(client, buyer["headers"])) == 1
    assert receipts(services, data["paymentId"]) == 1


def test_three_d_secure_purchase_grants_only_after_authentication(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    localstripe: LocalStripe,
    stripe_api: stripe.StripeClient,
) -> None:
    package = make_package(client, admin, credits=700, price=700)
    data = purchase(client, buyer["headers"], packageId=package["id"]).json()["data"]
    assert data["client_secret"]

    attempted = browser_pays(stripe_api, data["payment_intent_id"], THREE_D_SECURE)
    assert attempted.status == "requires_action"
    waiting = confirm(client, buyer["headers"], data["payment_intent_id"])
    assert waiting.status_code == 200, waiting.text
    assert waiting.json()["data"]["status"] == "requires_action"
    assert waiting.json()["data"]["client_secret"] == data["client_secret"]
    assert waiting.json()["data"]["nextAction"] is not None
    assert balance(client, buyer["headers"]) == 0

    httpx.post(
        f"{localstripe.url}/v1/payment_intents/{data['payment_intent_id']}/_authenticate",
        data={"client_secret": data["client_secret"], "success": "true", "key": "pk_test_x"},
    ).raise_for_status()
    confirmed = confirm(client, buyer["headers"], data["payment_intent_id"])

    assert confirmed.json()["data"]["status"] == "succeeded"
    assert balance(client, buyer["headers"]) == 700
    assert [e["kind"] for e in ledger(client, buyer["headers"])] == ["purchase"]


@pytest.mark.parametrize(
    ("number", "decline_code"),
    [(DECLINES_AT_CHARGE, "generic_decline"), (THREE_D_SECURE, "authentication_required")],
)
def test_saved_card_that_fails_at_charge_answers_402_and_grants_nothing(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    stripe_api: stripe.StripeClient,
    number: str,
    decline_code: str,
) -> None:
    package = make_package(client, admin, credits=1000, price=900)
    pm = saved_card(client, stripe_api, buyer["headers"], number)

    refused = purchase(client, buyer["headers"], packageId=package["id"], paymentMethodId=pm)

    assert refused.status_code == 402, refused.text
    assert error_code(refused) == "card_declined"
    details = refused.json()["error"]["details"]
    assert details["decline_code"] == decline_code
    assert balance(client, buyer["headers"]) == 0
    assert ledger(client, buyer["headers"]) == []
    assert receipts(services, details["payment_id"]) == 0
    with services.db.transaction() as session:
        failed = session.scalar(
            select(CreditPurchase).where(CreditPurchase.payment_id == details["payment_id"])
        )
        assert failed is not None
        assert (failed.status, failed.failure) == ("failed", decline_code)


def test_someone_elses_card_or_customer_is_404_and_leaves_nothing_behind(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    stripe_api: stripe.StripeClient,
) -> None:
    package = make_package(client, admin, credits=100, price=100)
    other = signed_up(client)
    theirs = saved_card(client, stripe_api, other["headers"])
    loose = card(stripe_api)  # never attached to anyone

    for body in [
        {"packageId": package["id"], "paymentMethodId": theirs},
        {"packageId": package["id"], "paymentMethodId": loose},
        {"packageId": package["id"], "paymentMethodId": "pm_doesnotexist"},
        {"packageId": package["id"], "customerId": other["customerId"]},
        {"packageId": "cpk_" + "0" * 32},
    ]:
        refused = purchase(client, buyer["headers"], **body)
        assert refused.status_code == 404, (body, refused.text)

    assert payments_of(client, buyer["headers"]) == []
    assert payments_of(client, other["headers"]) == []
    assert count(services, Payment) == 0
    assert count(services, CreditPurchase) == 0
    assert balance(client, buyer["headers"]) == 0
    assert balance(client, other["headers"]) == 0


# -- consume ----------------------------------------------------------------------------


def test_consume_debits_and_an_insufficient_balance_changes_nothing(
    client: TestClient, admin: dict[str, str], buyer: dict[str, Any]
) -> None:
    assert grant(client, admin, buyer["customerId"], 100).status_code == 201

    spent = consume(client, buyer["headers"], {"amount": 30, "idempotencyKey": "a", "reason": "x"})
    assert spent.status_code == 200, spent.text
    assert {k: spent.json()["data"][k] for k in ("amount", "balance", "replayed")} == {
        "amount": 30,
        "balance": 70,
        "replayed": False,
    }
    before = ledger(client, buyer["headers"])

    short = consume(client, buyer["headers"], {"amount": 71, "idempotencyKey": "b"})

    assert short.status_code == 402, short.text
    assert error_code(short) == "insufficient_credits"
    assert short.json()["error"]["details"] == {"balance": 70, "required": 71}
    assert balance(client, buyer["headers"]) == 70
    assert ledger(client, buyer["headers"]) == before
    # The refused key was not used up: it works once there is enough.
    assert (
        consume(client, buyer["headers"], {"amount": 70, "idempotencyKey": "b"}).json()["data"][
            "balance"
        ]
        == 0
    )


def test_the_same_idempotency_key_debits_once_and_answers_the_same(
    client: TestClient, admin: dict[str, str], buyer: dict[str, Any]
) -> None:
    grant(client, admin, buyer["customerId"], 100)
    body = {"amount": 40, "idempotencyKey": "render-42", "reason": "render"}
    first = consume(client, buyer["headers"], body).json()["data"]
    consume(client, buyer["headers"], {"amount": 10, "idempotencyKey": "other"})

    again = consume(client, buyer["headers"], body)

    assert again.status_code == 200, again.text
    assert again.json()["data"] == {**first, "replayed": True}
    assert first["replayed"] is False
    assert balance(client, buyer["headers"]) == 50
    consumed = [e for e in ledger(client, buyer["headers"]) if e["kind"] == "consume"]
    assert [e["amount"] for e in consumed] == [-10, -40]

    reused = consume(client, buyer["headers"], {**body, "amount": 41})
    assert reused.status_code == 409, reused.text
    assert error_code(reused) == "idempotency_key_reused"
    assert reused.json()["error"]["details"] == {"original_amount": 40}  # as it was sent
    assert balance(client, buyer["headers"]) == 50
    assert len(ledger(client, buyer["headers"])) == 3


def test_concurrent_debits_never_overdraw_and_one_key_racing_debits_once(
    client: TestClient, admin: dict[str, str], buyer: dict[str, Any]
) -> None:
    grant(client, admin, buyer["customerId"], 100)

    def spend(key: str, amount: int) -> httpx.Response:
        return consume(client, buyer["headers"], {"amount": amount, "idempotencyKey": key})

    with ThreadPoolExecutor(max_workers=8) as pool:
        racing = list(pool.map(lambda i: spend(f"race-{i}", 30), range(8)))
        same = list(pool.map(lambda _: spend("once", 1), range(8)))

    assert sorted(r.status_code for r in racing) == [200] * 3 + [402] * 5
    assert {error_code(r) for r in racing if r.status_code == 402} == {"insufficient_credits"}
    assert [r.status_code for r in same] == [200] * 8
    assert len({r.json()["data"]["transactionId"] for r in same}) == 1
    assert [r.json()["data"]["replayed"] for r in same].count(False) == 1
    assert balance(client, buyer["headers"]) == 100 - 90 - 1
    entries = ledger(client, buyer["headers"])
    assert [e["amount"] for e in entries] == [-1, -30, -30, -30, 100]
    assert min(e["balanceAfter"] for e in entries) >= 0


def test_service_key_consumes_for_the_customer_it_names(
    client: TestClient, admin: dict[str, str], buyer: dict[str, Any]
) -> None:
    grant(client, admin, buyer["customerId"], 100)
    service = api_key(client, admin)
    body = {"amount": 25, "idempotencyKey": "svc-1", "customerId": buyer["customerId"]}

    spent = consume(client, service, body)

    assert spent.status_code == 200, spent.text
    assert spent.json()["data"]["balance"] == 75
    assert balance(client, service, customerId=buyer["customerId"]) == 75
    assert balance(client, buyer["headers"]) == 75

    unnamed = consume(client, service, {"amount": 25, "idempotencyKey": "svc-2"})
    assert unnamed.status_code == 422, unnamed.text
    assert error_code(unnamed) == "customer_required"
    nobody = consume(
        client, service, {**body, "idempotencyKey": "svc-3", "customerId": "cust_" + "0" * 32}
    )
    assert nobody.status_code == 404, nobody.text
    assert balance(client, buyer["headers"]) == 75
    assert len(ledger(client, buyer["headers"])) == 2


def test_a_user_naming_another_customer_gets_404_and_moves_nothing(
    client: TestClient, admin: dict[str, str], buyer: dict[str, Any]
) -> None:
    other = signed_up(client)
    grant(client, admin, other["customerId"], 100)
    grant(client, admin, buyer["customerId"], 100)
    theirs = {"customerId": other["customerId"]}

    debit = consume(client, buyer["headers"], {"amount": 10, "idempotencyKey": "k", **theirs})
    assert debit.status_code == 404, debit.text
    assert error_code(debit) == "not_found"
    for path in ("/credits/balance", "/credits/transactions", "/credits/auto-recharge"):
        response = client.get(path, params=theirs, headers=buyer["headers"])
        assert response.status_code == 404, (path, response.text)

    assert balance(client, other["headers"]) == 100
    assert balance(client, buyer["headers"]) == 100
    assert len(ledger(client, other["headers"])) == 1


def test_ugly_consume_input_is_422_and_changes_nothing(
    client: TestClient, admin: dict[str, str], buyer: dict[str, Any]
) -> None:
    grant(client, admin, buyer["customerId"], 100)
    before = ledger(client, buyer["headers"])
    ugly: list[Any] = [
        {"amount": 0, "idempotencyKey": "u1"},
        {"amount": -5, "idempotencyKey": "u2"},
        {"amount": "5", "idempotencyKey": "u3"},
        {"amount": 5.5, "idempotencyKey": "u4"},
        {"amount": 5.0, "idempotencyKey": "u5"},
        {"amount": 10**13, "idempotencyKey": "u6"},
        {"amount": 10**40, "idempotencyKey": "u7"},
        {"amount": None, "idempotencyKey": "u8"},
        {"amount": True, "idempotencyKey": "u9"},
        {"amount": 5},
        {"amount": 5, "idempotencyKey": ""},
        {"amount": 5, "idempotencyKey": "k" * 201},
        {"amount": 5, "idempotencyKey": 12345},
        {"amount": 5, "idempotencyKey": "u10", "reason": "r" * 501},
        {"amount": 5, "idempotencyKey": "u11", "customerId": "not-ours"},
        {"amount": 5, "idempotencyKey": "u12", "surprise": True},
        {"idempotencyKey": "u13"},
        [{"amount": 5, "idempotencyKey": "u14"}],
        "amount=5",
    ]
    for body in ugly:
        response = consume(client, buyer["headers"], body)
        assert response.status_code == 422, (body, response.text)
        assert error_code(response) == "validation_error"
    raw = client.post(
        "/credits/consume",
        content=b'{"amount": 5, "idempotencyKey": ',
        headers={**buyer["headers"], "Content-Type": "application/json"},
    )
    assert raw.status_code == 422, raw.text

    assert balance(client, buyer["headers"]) == 100
    assert ledger(client, buyer["headers"]) == before
    # A 200-character key is fine.
    fine = consume(client, buyer["headers"], {"amount": 5, "idempotencyKey": "k" * 200})
    assert fine.status_code == 200, fine.text


# -- the ledger -------------------------------------------------------------------------


def test_transactions_are_newest_first_and_page_by_cursor(
    client: TestClient, admin: dict[str, str], buyer: dict[str, Any]
) -> None:
    grant(client, admin, buyer["customerId"], 1000)
    for i, amount in enumerate([100, 50, 25, 10, 5, 1]):
        body = {"amount": amount, "idempotencyKey": f"p{i}", "reason": f"job {i}"}
        assert consume(client, buyer["headers"], body).status_code == 200
    grant(client, admin, buyer["customerId"], 7, kind="adjustment", idempotencyKey="adj")

    pages: list[list[dict[str, Any]]] = []
    cursor: int | None = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        response = client.get("/credits/transactions", params=params, headers=buyer["headers"])
        assert response.status_code == 200, response.text
        page = response.json()["data"]
        pages.append(page["transactions"])
        cursor = page["nextCursor"]
        if cursor is None:
            break
        assert len(pages) < 10, "pagination does not end"

    entries = [e for page in pages for e in page]
    assert [len(p) for p in pages] == [2, 2, 2, 2]
    assert entries == ledger(client, buyer["headers"])
    assert [e["entryNo"] for e in entries] == list(range(8, 0, -1))
    assert [e["kind"] for e in entries] == ["adjustment"] + ["consume"] * 6 + ["grant"]
    assert [e["amount"] for e in entries] == [7, -1, -5, -10, -25, -50, -100, 1000]
    assert entries[-1]["balanceAfter"] == entries[-1]["amount"]
    for newer, older in pairwise(entries):
        assert newer["balanceAfter"] == older["balanceAfter"] + newer["amount"]
    assert entries[0]["balanceAfter"] == balance(client, buyer["headers"]) == 816
    assert entries[1]["reason"] == "job 5"

    for bad in [{"limit": 0}, {"limit": 201}, {"cursor": 0}, {"cursor": "x"}, {"limit": "-1"}]:
        response = client.get("/credits/transactions", params=bad, headers=buyer["headers"])
        assert response.status_code == 422, (bad, response.text)
        assert error_code(response) == "validation_error"


# -- grants -----------------------------------------------------------------------------


def test_admin_grants_and_adjustments_are_ledgered_and_audited(
    client: TestClient, admin: dict[str, str], buyer: dict[str, Any], services: Services
) -> None:
    customer = buyer["customerId"]
    given = grant(client, admin, customer, 500, idempotencyKey="welcome")
    assert given.status_code == 201, given.text
    assert {k: given.json()["data"][k] for k in ("kind", "amount", "balanceAfter", "reason")} == {
        "kind": "grant",
        "amount": 500,
        "balanceAfter": 500,
        "reason": "goodwill",
    }
    replay = grant(client, admin, customer, 500, idempotencyKey="welcome")
    assert replay.json()["data"]["id"] == given.json()["data"]["id"]

    corrected = grant(client, admin, customer, -200, kind="adjustment", idempotencyKey="fix")
    assert corrected.status_code == 201, corrected.text
    assert (corrected.json()["data"]["kind"], corrected.json()["data"]["balanceAfter"]) == (
        "adjustment",
        300,
    )

    too_much = grant(client, admin, customer, -301, kind="adjustment", idempotencyKey="fix2")
    assert too_much.status_code == 402, too_much.text
    assert error_code(too_much) == "insufficient_credits"
    bad_grants: list[tuple[dict[str, Any], int, str]] = [
        ({"amount": 0}, 422, "validation_error"),
        ({"amount": -5}, 422, "invalid_amount"),
        ({"amount": 10**13}, 422, "validation_error"),
        ({"amount": "5"}, 422, "validation_error"),
        ({"kind": "purchase"}, 422, "validation_error"),
        ({"reason": ""}, 422, "validation_error"),
        ({"customerId": "cust_" + "0" * 32}, 404, "not_found"),
    ]
    for body, status, code in bad_grants:
        sent = {"customerId": customer, "amount": 5, "reason": "r", "idempotencyKey": "bad"}
        refused = client.post("/credits/grants", json={**sent, **body}, headers=admin)
        assert refused.status_code == status, (body, refused.text)
        assert error_code(refused) == code
    by_user = grant(client, buyer["headers"], customer, 1000, idempotencyKey="self")
    assert by_user.status_code == 403, by_user.text
    by_service = grant(client, api_key(client, admin), customer, 1000, idempotencyKey="svc")
    assert by_service.status_code == 403, by_service.text

    assert balance(client, buyer["headers"]) == 300
    assert [(e["kind"], e["amount"]) for e in ledger(client, buyer["headers"])] == [
        ("adjustment", -200),
        ("grant", 500),
    ]
    audited = rows(
        services,
        select(AuditEntry.action, AuditEntry.details)
        .where(AuditEntry.subject_id == customer, AuditEntry.action.like("credits.%"))
        .order_by(AuditEntry.created_at),
    )
    assert [(a, d["amount"], d["reason"]) for a, d in audited] == [
        ("credits.grant", 500, "goodwill"),
        ("credits.adjustment", -200, "goodwill"),
    ]
    assert audited[0][1]["transaction_id"] == given.json()["data"]["id"]


# -- refunds ----------------------------------------------------------------------------


def _bought(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    stripe_api: stripe.StripeClient,
    *,
    credits: int,
    price: int,
) -> dict[str, Any]:
    package = make_package(client, admin, credits=credits, price=price)
    pm = saved_card(client, stripe_api, buyer["headers"])
    bought = purchase(client, buyer["headers"], packageId=package["id"], paymentMethodId=pm)
    assert bought.status_code == 200, bought.text
    data: dict[str, Any] = bought.json()["data"]
    return data


def test_partial_refunds_claw_back_the_refunded_share_never_below_zero(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
) -> None:
    paid = _bought(client, admin, buyer, stripe_api, credits=1000, price=1000)
    consume(client, buyer["headers"], {"amount": 300, "idempotencyKey": "spend"})

    half = client.post(f"/payments/{paid['paymentId']}/refund", json={"amount": 500}, headers=admin)
    assert half.status_code == 201, half.text
    assert balance(client, buyer["headers"]) == 200  # 500 of the 700 unspent taken back

    rest = client.post(f"/payments/{paid['paymentId']}/refund", json={}, headers=admin)
    assert rest.status_code == 201, rest.text
    assert balance(client, buyer["headers"]) == 0  # the other 500 is owed, only 200 is left

    # Stripe's charge.refunded for the same refunds takes nothing more.
    charge_refunded(client, stripe_api, paid["payment_intent_id"])
    worker.run_until_idle()
    again = client.post(f"/payments/{paid['paymentId']}/refund", json={}, headers=admin)
    assert again.status_code == 409

    entries = ledger(client, buyer["headers"])
    assert [(e["kind"], e["amount"], e["balanceAfter"]) for e in entries] == [
        ("refund", -200, 0),
        ("refund", -500, 200),
        ("consume", -300, 700),
        ("purchase", 1000, 1000),
    ]
    assert {e["referenceId"] for e in entries[:2]} == {paid["purchaseId"]}
    assert balance(client, buyer["headers"]) == 0
    assert count(services, LedgerEntry, LedgerEntry.kind == "refund") == 2


def test_full_refund_after_everything_was_spent_takes_nothing(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    stripe_api: stripe.StripeClient,
) -> None:
    paid = _bought(client, admin, buyer, stripe_api, credits=400, price=800)
    consume(client, buyer["headers"], {"amount": 400, "idempotencyKey": "all"})

    refunded = client.post(f"/payments/{paid['paymentId']}/refund", json={}, headers=admin)

    assert refunded.status_code == 201, refunded.text
    assert refunded.json()["data"]["status"] == "succeeded"
    assert balance(client, buyer["headers"]) == 0
    assert [e["kind"] for e in ledger(client, buyer["headers"])] == ["consume", "purchase"]


def test_a_refund_made_in_stripe_claws_back_when_charge_refunded_arrives(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
) -> None:
    paid = _bought(client, admin, buyer, stripe_api, credits=1000, price=2000)
    stripe_api.v1.refunds.create(
        params={"payment_intent": paid["payment_intent_id"], "amount": 500}
    )

    for _ in range(2):  # Stripe may deliver it twice
        charge_refunded(client, stripe_api, paid["payment_intent_id"])
        worker.run_until_idle()

    assert balance(client, buyer["headers"]) == 750  # a quarter of the money, of the credits
    assert [(e["kind"], e["amount"]) for e in ledger(client, buyer["headers"])] == [
        ("refund", -250),
        ("purchase", 1000),
    ]
