"""The admin lists over HTTP: customers, payments, refunds, subscriptions and audit entries,
paged and filtered, for admins and service keys only."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import stripe
from factories import auth, register, unique_email
from fastapi.testclient import TestClient
from sqlalchemy import update
from support.payments import make_product, saved_card

from billfold.customers.models import Customer
from billfold.services import Services

LISTS = ["/customers", "/payments?customerId=x", "/refunds", "/subscriptions", "/audit-log"]


def _page(client: TestClient, path: str, headers: dict[str, str], **params: Any) -> Any:
    response = client.get(path, params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def _ids(body: dict[str, Any]) -> list[str]:
    return [row["id"] for row in body["data"]]


def _member(client: TestClient, name: str, email: str | None = None) -> dict[str, Any]:
    data = register(client, name=name, email=email or unique_email())
    return {**data["user"], "headers": auth(data["access_token"])}


def _pay(
    client: TestClient,
    admin: dict[str, str],
    stripe_api: stripe.StripeClient,
    member: dict[str, Any],
    amount: int,
) -> str:
    product = make_product(client, admin, unit_amount=amount)
    pm = saved_card(client, stripe_api, member["headers"])
    body = {"productId": product["id"], "quantity": 1, "paymentMethodId": pm}
    paid = client.post("/payments/create-intent", json=body, headers=member["headers"])
    assert paid.status_code == 200, paid.text
    assert paid.json()["data"]["status"] == "succeeded"
    payment_id: str = paid.json()["data"]["paymentId"]
    return payment_id


# -- who may list ------------------------------------------------------------------------


@pytest.mark.parametrize("path", LISTS[:1] + LISTS[2:])
def test_a_user_who_is_not_an_admin_gets_403_from_every_admin_list(
    client: TestClient, buyer: dict[str, Any], path: str
) -> None:
    response = client.get(path, headers=buyer["headers"])
    assert response.status_code == 403, response.text
    assert response.json()["error"]["code"] == "admin_only"


def test_a_service_key_lists_customers_like_an_admin(
    client: TestClient, admin: dict[str, str]
) -> None:
    ada = _member(client, f"Ada {uuid.uuid4().hex[:6]}")
    key = client.post("/api-keys", json={"name": "backend"}, headers=admin).json()["data"]["key"]
    body = _page(client, "/customers", auth(key), q=ada["email"])
    assert _ids(body) == [ada["customerId"]]


# -- customers -------------------------------------------------------------------------------


def test_customers_list_without_a_filter_pages_through_everyone_newest_first(
    client: TestClient, admin: dict[str, str]
) -> None:
    made = [_member(client, f"Pager {n}")["customerId"] for n in range(5)]

    first = _page(client, "/customers", admin, limit=2)
    total = first["page"]["total"]
    assert total == 6  # the five and the admin
    assert first["page"] == {"limit": 2, "offset": 0, "total": 6, "nextOffset": 2}
    seen = _ids(first)
    offset = first["page"]["nextOffset"]
    while offset is not None:
        body = _page(client, "/customers", admin, limit=2, offset=offset)
        seen += _ids(body)
        offset = body["page"]["nextOffset"]
    assert len(seen) == len(set(seen)) == 6
    assert seen[:5] == list(reversed(made))


def test_customer_search_finds_by_part_of_email_or_name_and_by_whole_ids(
    client: TestClient, admin: dict[str, str]
) -> None:
    tag = uuid.uuid4().hex[:8]
    ada = _member(client, "Ada Lovelace", email=f"ada.{tag}@analytical.example")
    grace = _member(client, f"Grace Hopper {tag}")
    _member(client, "Somebody Else")

    assert _ids(_page(client, "/customers", admin, q=f"ADA.{tag}")) == [ada["customerId"]]
    assert _ids(_page(client, "/customers", admin, q=f"hopper {tag}")) == [grace["customerId"]]
    assert set(_ids(_page(client, "/customers", admin, q=tag))) == {
        ada["customerId"],
        grace["customerId"],
    }
    for whole_id in (ada["customerId"], ada["id"], ada["stripeCustomerId"]):
        assert _ids(_page(client, "/customers", admin, q=whole_id)) == [ada["customerId"]]
    found = _page(client, "/customers", admin, q=ada["customerId"])["data"][0]
    assert found["email"] == ada["email"]
    assert found["stripeCustomerId"] == ada["stripeCustomerId"]
    # Part of an ID is not a match, and LIKE's wildcards are only characters.
    assert _ids(_page(client, "/customers", admin, q=ada["customerId"][:-3])) == []
    assert _ids(_page(client, "/customers", admin, q="%")) == []
    assert _ids(_page(client, "/customers", admin, q="_")) == []


def test_customers_filter_by_creation_date(
    client: TestClient, admin: dict[str, str], services: Services
) -> None:
    old = _member(client, "Old Timer")
    new = _member(client, "Newcomer")
    long_ago = datetime(2020, 1, 15, 12, tzinfo=UTC)
    with services.db.transaction() as session:
        session.execute(
            update(Customer).where(Customer.id == old["customerId"]).values(created_at=long_ago)
        )

    in_2020 = _page(
        client, "/customers", admin, createdFrom="2020-01-01", createdTo="2020-02-01T00:00:00Z"
    )
    assert _ids(in_2020) == [old["customerId"]]
    recent = _page(
        client,
        "/customers",
        admin,
        createdFrom=(datetime.now(UTC) - timedelta(hours=1)).isoformat(),
    )
    assert new["customerId"] in _ids(recent)
    assert old["customerId"] not in _ids(recent)


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"createdFrom": "yesterday"}, "validation_error"),
        ({"createdFrom": "2026-02-01", "createdTo": "2026-01-01"}, "invalid_period"),
        ({"limit": 0}, "validation_error"),
        ({"limit": 201}, "validation_error"),
        ({"offset": -1}, "validation_error"),
    ],
)
def test_bad_paging_or_dates_answer_422(
    client: TestClient, admin: dict[str, str], params: dict[str, Any], code: str
) -> None:
    response = client.get("/customers", params=params, headers=admin)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == code


# -- payments and refunds ------------------------------------------------------------------


def test_payments_and_refunds_lists_filter_by_customer_status_and_date(
    client: TestClient, admin: dict[str, str], stripe_api: stripe.StripeClient
) -> None:
    ada, bob = _member(client, "Ada"), _member(client, "Bob")
    ada_pays = [_pay(client, admin, stripe_api, ada, amount) for amount in (1000, 2000)]
    bob_pays = _pay(client, admin, stripe_api, bob, 3000)
    refund = client.post(
        f"/payments/{ada_pays[1]}/refund",
        json={"amount": 500, "reason": "requested_by_customer", "notes": "late"},
        headers=admin,
    )
    assert refund.status_code == 201, refund.text

    everyone = _page(client, "/payments", admin, limit=2)
    assert everyone["page"]["total"] == 3
    assert _ids(everyone) == [bob_pays, ada_pays[1]]
    of_ada = _page(client, "/payments", admin, customerId=ada["customerId"], status="succeeded")
    assert _ids(of_ada) == list(reversed(ada_pays))
    none_canceled = _page(client, "/payments", admin, status="canceled")
    assert none_canceled["data"] == []
    assert none_canceled["page"]["total"] == 0
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    assert _page(client, "/payments", admin, createdFrom=tomorrow)["data"] == []
    # A user pages through their own payments only, whatever customer they name.
    own = _page(client, "/payments", bob["headers"])
    assert _ids(own) == [bob_pays]
    assert (
        client.get(
            "/payments", params={"customerId": ada["customerId"]}, headers=bob["headers"]
        ).status_code
        == 404
    )

    refunds = _page(client, "/refunds", admin, customerId=ada["customerId"])
    [listed] = refunds["data"]
    assert listed["id"] == refund.json()["data"]["id"]
    assert listed["paymentId"] == ada_pays[1]
    assert (listed["amount"], listed["currency"], listed["reason"], listed["notes"]) == (
        500,
        "usd",
        "requested_by_customer",
        "late",
    )
    assert listed["customerId"] == ada["customerId"]
    assert _page(client, "/refunds", admin, customerId=bob["customerId"])["data"] == []
    assert _ids(_page(client, "/refunds", admin, paymentId=ada_pays[1])) == [listed["id"]]
    assert _ids(_page(client, "/refunds", admin, status=listed["status"])) == [listed["id"]]
    assert _page(client, "/refunds", admin, status="failed")["data"] == []


# -- subscriptions and audit -------------------------------------------------------------------


def test_subscriptions_list_filters_by_status_plan_and_customer(
    client: TestClient, admin: dict[str, str]
) -> None:
    trial = {"code": "trial", "name": "Trial", "trialDays": 14, "features": {}}
    assert client.post("/plans", json=trial, headers=admin).status_code == 201
    ada, bob = _member(client, "Ada"), _member(client, "Bob")

    trialing = _page(client, "/subscriptions", admin, status="trialing", plan="trial")
    assert {s["customerId"] for s in trialing["data"]} == {ada["customerId"], bob["customerId"]}
    assert trialing["page"]["total"] == 2
    [of_ada] = _page(client, "/subscriptions", admin, customerId=ada["customerId"])["data"]
    assert (of_ada["plan"], of_ada["status"]) == ("trial", "trialing")
    assert _page(client, "/subscriptions", admin, status="active")["data"] == []
    assert _page(client, "/subscriptions", admin, plan="starter")["data"] == []


def test_audit_log_lists_who_did_what_filtered_by_actor_action_and_subject(
    client: TestClient, admin: dict[str, str], buyer: dict[str, Any]
) -> None:
    admin_id = client.get("/users/me", headers=admin).json()["data"]["id"]
    product = make_product(client, admin)
    patched = client.patch(f"/products/{product['id']}", json={"stock": 3}, headers=admin)
    assert patched.status_code == 200, patched.text
    granted = client.post(
        "/credits/grants",
        json={
            "customerId": buyer["customerId"],
            "amount": 50,
            "reason": "goodwill",
            "idempotencyKey": "g1",
        },
        headers=admin,
    )
    assert granted.status_code == 201, granted.text

    by_admin = _page(client, "/audit-log", admin, actor=admin_id)
    actions = [e["action"] for e in by_admin["data"]]
    assert {"product.create", "product.update"} <= set(actions)
    assert all(e["actor"] == admin_id for e in by_admin["data"])
    products = _page(client, "/audit-log", admin, action="product.")
    assert [e["action"] for e in products["data"]] == ["product.update", "product.create"]
    assert all(e["subjectId"] == product["id"] for e in products["data"])
    on_product = _page(client, "/audit-log", admin, subjectId=product["id"], limit=1)
    assert on_product["page"] == {"limit": 1, "offset": 0, "total": 2, "nextOffset": 1}
    assert on_product["data"][0]["action"] == "product.update"
    assert on_product["data"][0]["details"] == {"stock": 3}
