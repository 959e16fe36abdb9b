"""A customer's phone and metadata: kept, answered, exported, and mirrored to the Stripe
customer on creation and on every edit, without ever touching Billfold's own keys there."""

from __future__ import annotations

from typing import Any

import pytest
import stripe
from factories import auth, register
from fastapi.testclient import TestClient
from sqlalchemy import select

from billfold.customers.contact import MAX_KEYS
from billfold.customers.models import Customer
from billfold.customers.stripe_sync import ensure_stripe_customer
from billfold.jobs.models import Job
from billfold.jobs.worker import Worker
from billfold.services import Services
from billfold.webhooks.outbound.models import WebhookEvent

LAZY = pytest.mark.parametrize(
    "settings_overrides", [{"stripe_customer_creation": "on_first_payment"}]
)
OUR_KEYS = {"customer_id", "user_id", "source"}


def _stripe_customer(stripe_api: stripe.StripeClient, stripe_id: str) -> dict[str, Any]:
    remote: dict[str, Any] = stripe_api.v1.customers.retrieve(stripe_id).to_dict()
    return remote


def _user_keys(remote: dict[str, Any]) -> dict[str, str]:
    return {k: v for k, v in remote["metadata"].items() if k not in OUR_KEYS}


def _snapshot(services: Services) -> list[tuple[Any, ...]]:
    with services.db.transaction() as session:
        rows = session.execute(select(Customer.__table__)).all()
        jobs = session.execute(select(Job.__table__)).all()
        return sorted(tuple(map(str, r)) for r in [*rows, *jobs])


def test_phone_and_metadata_given_at_sign_up_are_on_the_stripe_customer(
    client: TestClient, stripe_api: stripe.StripeClient
) -> None:
    data = register(client, phone="+1 415 555 0100", metadata={"plan": "team", "seats": "12"})
    user = data["user"]
    assert user["phone"] == "+1 415 555 0100"
    assert user["metadata"] == {"plan": "team", "seats": "12"}
    assert user["stripeCustomerId"]

    remote = _stripe_customer(stripe_api, user["stripeCustomerId"])
    assert remote["phone"] == "+1 415 555 0100"
    assert _user_keys(remote) == {"plan": "team", "seats": "12"}
    assert remote["metadata"]["customer_id"] == user["customerId"]
    assert remote["metadata"]["user_id"] == user["id"]


def test_edits_reach_stripe_and_a_removed_key_is_removed_there(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
) -> None:
    data = register(client, phone="555 0100", metadata={"a": "1", "b": "2"})
    user, headers = data["user"], auth(data["access_token"])
    stripe_id = user["stripeCustomerId"]

    edit = {"phone": "+44 20 7946 0958", "metadata": {"b": "3", "c": "new"}}
    response = client.patch(f"/users/{user['id']}", json=edit, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["data"]["metadata"] == {"b": "3", "c": "new"}
    worker.run_until_idle()

    remote = _stripe_customer(stripe_api, stripe_id)
    assert remote["phone"] == "+44 20 7946 0958"
    assert _user_keys(remote) == {"b": "3", "c": "new"}  # "a" is gone at Stripe too
    assert remote["metadata"]["customer_id"] == user["customerId"]
    with services.db.transaction() as session:
        told = session.scalars(
            select(WebhookEvent.data)
            .where(
                WebhookEvent.customer_id == user["customerId"],
                WebhookEvent.type == "customer.updated",
            )
            .order_by(WebhookEvent.seq)
        ).all()
    assert [(d["phone"], d["metadata"]) for d in told] == [
        ("+44 20 7946 0958", {"b": "3", "c": "new"})
    ]  # the host app hears of it too

    # An edit of the name alone leaves phone and metadata as they are.
    client.patch(f"/users/{user['id']}", json={"name": "Renamed"}, headers=headers)
    worker.run_until_idle()
    remote = _stripe_customer(stripe_api, stripe_id)
    assert remote["name"] == "Renamed"
    assert _user_keys(remote) == {"b": "3", "c": "new"}

    # null clears both; our own keys stay.
    cleared = client.patch(
        f"/users/{user['id']}", json={"phone": None, "metadata": None}, headers=headers
    )
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["data"]["phone"] is None
    assert cleared.json()["data"]["metadata"] == {}
    worker.run_until_idle()
    remote = _stripe_customer(stripe_api, stripe_id)
    assert not remote["phone"]
    assert _user_keys(remote) == {}
    assert set(remote["metadata"]) >= OUR_KEYS
    with services.db.transaction() as session:
        customer = session.get(Customer, user["customerId"])
        assert customer is not None
        assert customer.stripe_metadata_keys == []
        assert customer.stripe_synced_version == customer.profile_version

    # Reading the customer back answers the fields too.
    me = client.get("/users/me", headers=headers).json()["data"]
    assert (me["phone"], me["metadata"]) == (None, {})


@LAZY
def test_the_link_created_later_carries_the_metadata_and_later_edits_follow(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    settings_overrides: Any,
) -> None:
    data = register(client, phone="030 1234567", metadata={"tier": "gold", "old": "x"})
    user, headers = data["user"], auth(data["access_token"])
    assert user["stripeCustomerId"] is None

    stripe_id = ensure_stripe_customer(services, user["customerId"])
    remote = _stripe_customer(stripe_api, stripe_id)
    assert remote["phone"] == "030 1234567"
    assert _user_keys(remote) == {"tier": "gold", "old": "x"}

    client.patch(f"/users/{user['id']}", json={"metadata": {"tier": "platinum"}}, headers=headers)
    worker.run_until_idle()
    remote = _stripe_customer(stripe_api, stripe_id)
    assert _user_keys(remote) == {"tier": "platinum"}
    assert remote["metadata"]["customer_id"] == user["customerId"]


def test_export_holds_phone_and_metadata(client: TestClient) -> None:
    data = register(client, phone="+1 212 555 0199", metadata={"ref": "crm-42"})
    user, headers = data["user"], auth(data["access_token"])
    export = client.get(f"/users/{user['id']}/export", headers=headers)
    assert export.status_code == 200
    customer = export.json()["data"]["customer"]
    assert customer["phone"] == "+1 212 555 0199"
    assert customer["metadata"] == {"ref": "crm-42"}


UGLY: list[tuple[dict[str, Any], str]] = [
    ({"metadata": {"customer_id": "cust_someone_else"}}, "reserved_metadata_key"),
    ({"metadata": {"User_ID": "u"}}, "reserved_metadata_key"),
    ({"metadata": {"archived": ""}}, "reserved_metadata_key"),
    ({"metadata": {f"k{i}": "v" for i in range(MAX_KEYS + 1)}}, "invalid_metadata"),
    ({"metadata": {f"k{i}": "v" for i in range(5_000)}}, "validation_error"),
    ({"metadata": {"k" * 41: "v"}}, "invalid_metadata"),
    ({"metadata": {"k": "v" * 501}}, "invalid_metadata"),
    ({"metadata": {"k": "v" * 1_000_000}}, "invalid_metadata"),
    ({"metadata": {"k": ""}}, "invalid_metadata"),
    ({"metadata": {"a[b]": "v"}}, "invalid_metadata"),
    ({"metadata": {"k": "v\x00"}}, "validation_error"),
    ({"metadata": {"k\x00": "v"}}, "validation_error"),
    ({"metadata": {"k": 5}}, "validation_error"),
    ({"metadata": {"k": {"nested": "v"}}}, "validation_error"),
    ({"metadata": ["k", "v"]}, "validation_error"),
    ({"phone": "call me maybe"}, "invalid_phone"),
    ({"phone": "+1 415 555 0100 0101 0102"}, "invalid_phone"),
    ({"phone": "1" * 10_000}, "validation_error"),
    ({"phone": "+1\x00415"}, "validation_error"),
]


def test_ugly_phone_and_metadata_are_4xx_and_change_nothing(
    client: TestClient, services: Services
) -> None:
    data = register(client, metadata={"keep": "me"})
    user, headers = data["user"], auth(data["access_token"])
    before = _snapshot(services)
    for body, code in UGLY:
        response = client.patch(f"/users/{user['id']}", json=body, headers=headers)
        assert response.status_code == 422, (body, response.text)
        error = response.json()["error"]
        assert error["code"] == code, (body, error)
        assert len(response.text) < 5_000
        assert _snapshot(services) == before, body

        signup = {"name": "X", "email": "ugly@example.com", "password": "correct horse 1", **body}
        refused = client.post("/users", json=signup)
        assert refused.status_code == 422, (body, refused.text)
        assert refused.json()["error"]["code"] == code
        assert _snapshot(services) == before, body
    assert client.get("/users/me", headers=headers).json()["data"]["metadata"] == {"keep": "me"}


def test_reserved_key_refusal_names_the_keys(client: TestClient) -> None:
    data = register(client)
    response = client.patch(
        f"/users/{data['user']['id']}",
        json={"metadata": {"source": "mine", "ok": "1"}},
        headers=auth(data["access_token"]),
    )
    error = response.json()["error"]
    assert response.status_code == 422
    assert error["code"] == "reserved_metadata_key"
    assert "source" in error["message"]
    assert error["details"]["keys"] == ["source"]
