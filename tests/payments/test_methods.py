"""Saved cards against a real localstripe: only their owner may attach, detach or choose the
default; the list shows display fields; Stripe's payment_method webhooks land in the same
records; Stripe trouble is a clear 4xx/503, never a 500 and never a partial change."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import stripe
from conftest import WEBHOOK_SECRET
from factories import auth, register, unique_email
from fastapi.testclient import TestClient
from sqlalchemy import select
from support.netfault import FaultyLink
from support.payments import GENERIC_DECLINE, INSUFFICIENT_FUNDS, VISA, card, saved_card
from support.stripe_events import delivery, event

from billfold.customers.models import Customer
from billfold.jobs.worker import Worker
from billfold.payments.models import SavedCard
from billfold.services import Services
from billfold.webhooks.models import StripeEvent

METHODS = "/payments/customer/payment-methods"
DEFAULT = "/payments/customer/default-payment-method"

# -- helpers ---------------------------------------------------------------------------


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["success"] is False
    error: dict[str, Any] = body["error"]
    assert error["message"]
    return error


def _data(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["success"] is True
    return body["data"]


def _cards(client: TestClient, headers: dict[str, str]) -> list[dict[str, Any]]:
    cards: list[dict[str, Any]] = _data(client.get(METHODS, headers=headers))
    return cards


def _attach(client: TestClient, headers: dict[str, str], pm: str) -> httpx.Response:
    response: httpx.Response = client.post(METHODS, json={"paymentMethodId": pm}, headers=headers)
    return response


def _make_default(client: TestClient, headers: dict[str, str], pm: str) -> httpx.Response:
    response: httpx.Response = client.patch(DEFAULT, json={"paymentMethodId": pm}, headers=headers)
    return response


def _owner_in_stripe(stripe_api: stripe.StripeClient, pm: str) -> str | None:
    customer = stripe_api.v1.payment_methods.retrieve(pm).customer
    return customer if isinstance(customer, str) or customer is None else customer.id


def _default_in_stripe(stripe_api: stripe.StripeClient, stripe_customer_id: str) -> str | None:
    customer = stripe_api.v1.customers.retrieve(stripe_customer_id).to_dict()
    found = (customer.get("invoice_settings") or {}).get("default_payment_method")
    return found if isinstance(found, str) or found is None else found["id"]


def _saved(services: Services, pm: str) -> SavedCard | None:
    with services.db.transaction() as session:
        return session.scalar(select(SavedCard).where(SavedCard.stripe_payment_method_id == pm))


def _saved_rows(services: Services) -> list[tuple[str, ...]]:
    with services.db.transaction() as session:
        rows = session.execute(select(SavedCard.__table__)).all()
        return sorted(tuple(map(str, row)) for row in rows)


def _deliver(client: TestClient, evt: dict[str, Any]) -> None:
    body, headers = delivery(evt, WEBHOOK_SECRET)
    response = client.post("/webhooks/stripe", content=body, headers=headers)
    assert response.status_code == 200, response.text


def _card_event(stripe_api: stripe.StripeClient, kind: str, pm: str) -> dict[str, Any]:
    """The event Stripe sends, carrying the PaymentMethod as Stripe has it now."""
    obj: dict[str, Any] = stripe_api.v1.payment_methods.retrieve(pm).to_dict()
    return event(kind, obj)


def _stored_event(services: Services, stripe_event_id: str) -> StripeEvent:
    with services.db.transaction() as session:
        row = session.scalar(
            select(StripeEvent).where(StripeEvent.stripe_event_id == stripe_event_id)
        )
        assert row is not None
        return row


# -- configuration and SetupIntents ----------------------------------------------------


def test_config_answers_the_publishable_key_without_auth(client: TestClient) -> None:
    data = _data(client.get("/payments/config"))
    assert data["publishable_key"] == "pk_test_billfold"
    assert data["currency"] == "usd"
    assert "sk_test" not in client.get("/payments/config").text


def test_setup_intent_answers_a_client_secret_for_the_callers_stripe_customer(
    client: TestClient, buyer: dict[str, Any], stripe_api: stripe.StripeClient
) -> None:
    data = _data(client.post("/payments/customer/setup-intent", headers=buyer["headers"]))

    assert data["client_secret"].startswith(data["setupIntentId"])
    assert "_secret_" in data["client_secret"]
    intent = stripe_api.v1.setup_intents.retrieve(data["setupIntentId"])
    assert intent.customer == buyer["stripeCustomerId"]
    assert intent.client_secret == data["client_secret"]
    assert intent.metadata is not None
    assert intent.metadata.to_dict() == {"customer_id": buyer["customerId"]}
    assert client.post("/payments/customer/setup-intent").status_code == 401


def test_each_setup_intent_request_is_a_new_setup_intent(
    client: TestClient, buyer: dict[str, Any]
) -> None:
    # One SetupIntent saves one card: a second card form must not get the first one back.
    first = _data(client.post("/payments/customer/setup-intent", headers=buyer["headers"]))
    second = _data(client.post("/payments/customer/setup-intent", headers=buyer["headers"]))

    assert first["setupIntentId"] != second["setupIntentId"]


# -- attach, list, default, detach -----------------------------------------------------


def test_attached_card_is_listed_with_its_display_fields_and_not_default(
    client: TestClient,
    buyer: dict[str, Any],
    services: Services,
    stripe_api: stripe.StripeClient,
) -> None:
    assert _cards(client, buyer["headers"]) == []
    pm = card(stripe_api)

    attached = _data(_attach(client, buyer["headers"], pm))

    assert attached["id"] == pm
    assert attached["isDefault"] is False
    assert _owner_in_stripe(stripe_api, pm) == buyer["stripeCustomerId"]
    [listed] = _cards(client, buyer["headers"])
    assert listed == {
        "id": pm,
        "type": "card",
        "brand": "visa",
        "last4": "4242",
        "expMonth": 12,
        "expYear": 2034,
        "isDefault": False,
    }
    saved = _saved(services, pm)
    assert saved is not None
    assert (saved.customer_id, saved.attached, saved.last4, saved.brand) == (
        buyer["customerId"],
        True,
        "4242",
        "visa",
    )
    assert "4242424242424242" not in str(vars(saved))


def test_setting_the_default_card_shows_in_the_list_and_in_stripe(
    client: TestClient, buyer: dict[str, Any], stripe_api: stripe.StripeClient
) -> None:
    first = saved_card(client, stripe_api, buyer["headers"])
    second = saved_card(client, stripe_api, buyer["headers"], "5555555555554444")

    answered = _data(_make_default(client, buyer["headers"], second))
    assert (answered["id"], answered["isDefault"]) == (second, True)

    assert {c["id"]: c["isDefault"] for c in _cards(client, buyer["headers"])} == {
        first: False,
        second: True,
    }
    assert _default_in_stripe(stripe_api, buyer["stripeCustomerId"]) == second

    _data(_make_default(client, buyer["headers"], first))
    assert _default_in_stripe(stripe_api, buyer["stripeCustomerId"]) == first
    assert {c["id"]: c["isDefault"] for c in _cards(client, buyer["headers"])} == {
        first: True,
        second: False,
    }


def test_a_default_card_chosen_again_after_another_is_the_default_again(
    client: TestClient, buyer: dict[str, Any], stripe_api: stripe.StripeClient
) -> None:
    first = saved_card(client, stripe_api, buyer["headers"])
    second = saved_card(client, stripe_api, buyer["headers"], "5555555555554444")

    for chosen in (first, second, first):
        _data(_make_default(client, buyer["headers"], chosen))
        assert _default_in_stripe(stripe_api, buyer["stripeCustomerId"]) == chosen


def test_attaching_the_same_card_twice_is_harmless(
    client: TestClient,
    buyer: dict[str, Any],
    services: Services,
    stripe_api: stripe.StripeClient,
) -> None:
    pm = card(stripe_api)
    _data(_attach(client, buyer["headers"], pm))
    _data(_make_default(client, buyer["headers"], pm))

    again = _data(_attach(client, buyer["headers"], pm))

    assert again["id"] == pm
    assert again["isDefault"] is True
    assert [c["id"] for c in _cards(client, buyer["headers"])] == [pm]
    assert _owner_in_stripe(stripe_api, pm) == buyer["stripeCustomerId"]
    with services.db.transaction() as session:
        rows = session.scalars(
            select(SavedCard).where(SavedCard.stripe_payment_method_id == pm)
        ).all()
        assert len(rows) == 1


def test_detached_card_leaves_the_list_and_its_stripe_customer(
    client: TestClient,
    buyer: dict[str, Any],
    services: Services,
    stripe_api: stripe.StripeClient,
) -> None:
    kept = saved_card(client, stripe_api, buyer["headers"])
    removed = saved_card(client, stripe_api, buyer["headers"])

    answered = _data(client.delete(f"{METHODS}/{removed}", headers=buyer["headers"]))

    assert answered == {"id": removed, "detached": True}
    assert [c["id"] for c in _cards(client, buyer["headers"])] == [kept]
    assert _owner_in_stripe(stripe_api, removed) is None
    assert _owner_in_stripe(stripe_api, kept) == buyer["stripeCustomerId"]
    saved = _saved(services, removed)
    assert saved is not None
    assert saved.attached is False
    # Once detached it is no longer the caller's: a second detach is 404.
    again = client.delete(f"{METHODS}/{removed}", headers=buyer["headers"])
    assert _error(again, 404)["code"] == "payment_method_not_found"


def test_a_detached_card_can_be_attached_again(
    client: TestClient,
    buyer: dict[str, Any],
    services: Services,
    stripe_api: stripe.StripeClient,
) -> None:
    pm = saved_card(client, stripe_api, buyer["headers"])
    _data(client.delete(f"{METHODS}/{pm}", headers=buyer["headers"]))

    _data(_attach(client, buyer["headers"], pm))

    assert [c["id"] for c in _cards(client, buyer["headers"])] == [pm]
    assert _owner_in_stripe(stripe_api, pm) == buyer["stripeCustomerId"]
    saved = _saved(services, pm)
    assert saved is not None
    assert saved.attached is True


# -- someone else's cards, unknown cards, bad input ------------------------------------


def test_another_users_card_is_404_for_attach_detach_and_default_and_stays_theirs(
    client: TestClient,
    buyer: dict[str, Any],
    services: Services,
    stripe_api: stripe.StripeClient,
) -> None:
    theirs = saved_card(client, stripe_api, buyer["headers"])
    _data(_make_default(client, buyer["headers"], theirs))
    data = register(client)
    intruder_user, intruder = data["user"], auth(data["access_token"])
    mine = saved_card(client, stripe_api, intruder)
    before = _saved_rows(services)

    attempts = [
        _attach(client, intruder, theirs),
        client.delete(f"{METHODS}/{theirs}", headers=intruder),
        _make_default(client, intruder, theirs),
    ]

    for response in attempts:
        assert _error(response, 404)["code"] == "payment_method_not_found"
    assert _owner_in_stripe(stripe_api, theirs) == buyer["stripeCustomerId"]
    assert _default_in_stripe(stripe_api, buyer["stripeCustomerId"]) == theirs
    assert _default_in_stripe(stripe_api, intruder_user["stripeCustomerId"]) is None
    assert [c["id"] for c in _cards(client, intruder)] == [mine]
    assert [c["id"] for c in _cards(client, buyer["headers"])] == [theirs]
    assert _saved_rows(services) == before
    # Nor can a user reach another customer's cards by naming them.
    named = client.get(METHODS, params={"customerId": buyer["customerId"]}, headers=intruder)
    assert _error(named, 404)["code"] == "not_found"


def test_unknown_payment_method_is_404_for_attach_detach_and_default(
    client: TestClient, buyer: dict[str, Any], services: Services
) -> None:
    missing = "pm_doesnotexist0000000000"

    attempts = [
        _attach(client, buyer["headers"], missing),
        client.delete(f"{METHODS}/{missing}", headers=buyer["headers"]),
        _make_default(client, buyer["headers"], missing),
    ]

    for response in attempts:
        assert _error(response, 404)["code"] == "payment_method_not_found"
    assert _saved_rows(services) == []


def test_malformed_payment_method_ids_are_422(
    client: TestClient, buyer: dict[str, Any], services: Services
) -> None:
    bad_bodies: list[Any] = [
        {"paymentMethodId": ""},
        {"paymentMethodId": 12345},
        {"paymentMethodId": None},
        {"paymentMethodId": ["pm_1"]},
        {"paymentMethodId": "pm_1/../../customers"},
        {"paymentMethodId": "pm_" + "x" * 300},
        {"paymentMethodId": "pm_1", "customer": "cus_someone"},
        {},
    ]
    for bad in bad_bodies:
        attach = client.post(METHODS, json=bad, headers=buyer["headers"])
        assert _error(attach, 422)["code"] == "validation_error", bad
        default = client.patch(DEFAULT, json=bad, headers=buyer["headers"])
        assert _error(default, 422)["code"] == "validation_error", bad
    assert _saved_rows(services) == []
    assert client.get(METHODS).status_code == 401


# -- Stripe's answers ------------------------------------------------------------------


def test_a_card_declined_on_attach_is_402_card_declined_and_not_saved(
    client: TestClient,
    buyer: dict[str, Any],
    services: Services,
    stripe_api: stripe.StripeClient,
) -> None:
    for number in (GENERIC_DECLINE, INSUFFICIENT_FUNDS):
        pm = card(stripe_api, number)

        error = _error(_attach(client, buyer["headers"], pm), 402)

        assert error["code"] == "card_declined", number
        assert _owner_in_stripe(stripe_api, pm) is None
    assert _cards(client, buyer["headers"]) == []
    assert _saved_rows(services) == []


def test_stripe_down_is_503_stripe_unavailable_then_works_again(
    client: TestClient,
    buyer: dict[str, Any],
    services: Services,
    stripe_api: stripe.StripeClient,
    stripe_link: FaultyLink,
) -> None:
    pm = card(stripe_api)
    stripe_link.down()

    attempts = [
        client.get(METHODS, headers=buyer["headers"]),
        _attach(client, buyer["headers"], pm),
        _make_default(client, buyer["headers"], pm),
        client.delete(f"{METHODS}/{pm}", headers=buyer["headers"]),
        client.post("/payments/customer/setup-intent", headers=buyer["headers"]),
    ]

    for response in attempts:
        error = _error(response, 503)
        assert error["code"] == "stripe_unavailable"
        assert "sk_test" not in response.text
    assert _owner_in_stripe(stripe_api, pm) is None
    assert _saved_rows(services) == []
    # The config needs no Stripe call.
    assert _data(client.get("/payments/config"))["publishable_key"] == "pk_test_billfold"

    stripe_link.up()
    _data(_attach(client, buyer["headers"], pm))
    assert [c["id"] for c in _cards(client, buyer["headers"])] == [pm]


@pytest.mark.parametrize("settings_overrides", [{"stripe_customer_creation": "on_first_payment"}])
def test_stripe_customer_is_created_lazily_on_the_first_card_list(
    client: TestClient,
    services: Services,
    stripe_api: stripe.StripeClient,
    settings_overrides: dict[str, Any],
) -> None:
    email = unique_email("lazy")
    data = register(client, email=email)
    user, headers = data["user"], auth(data["access_token"])
    assert user["stripeCustomerId"] is None
    assert stripe_api.v1.customers.list(params={"email": email}).data == []

    assert _cards(client, headers) == []

    [created] = stripe_api.v1.customers.list(params={"email": email}).data
    assert created.metadata is not None
    assert created.metadata.to_dict()["customer_id"] == user["customerId"]
    with services.db.transaction() as session:
        customer = session.get(Customer, user["customerId"])
        assert customer is not None
        assert customer.stripe_customer_id == created.id
    # Later calls reuse it.
    assert _cards(client, headers) == []
    pm = saved_card(client, stripe_api, headers)
    assert _owner_in_stripe(stripe_api, pm) == created.id
    assert len(stripe_api.v1.customers.list(params={"email": email}).data) == 1


# -- webhooks --------------------------------------------------------------------------


def test_payment_method_webhooks_update_the_saved_card_even_one_attached_in_stripe(
    client: TestClient,
    buyer: dict[str, Any],
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
) -> None:
    # Attached straight in Stripe (the Dashboard, another integration): we never saw it.
    pm = card(stripe_api, "5555555555554444")
    stripe_api.v1.payment_methods.attach(pm, params={"customer": buyer["stripeCustomerId"]})
    assert _saved(services, pm) is None

    attached = _card_event(stripe_api, "payment_method.attached", pm)
    _deliver(client, attached)
    worker.run_until_idle()

    saved = _saved(services, pm)
    assert saved is not None
    assert (saved.customer_id, saved.attached, saved.last4, saved.exp_year) == (
        buyer["customerId"],
        True,
        "4444",
        2034,
    )
    row = _stored_event(services, attached["id"])
    assert (row.status, row.customer_id) == ("processed", buyer["customerId"])
    assert [c["id"] for c in _cards(client, buyer["headers"])] == [pm]

    stripe_api.v1.payment_methods.detach(pm)
    detached = _card_event(stripe_api, "payment_method.detached", pm)
    _deliver(client, detached)
    worker.run_until_idle()

    saved = _saved(services, pm)
    assert saved is not None
    assert saved.attached is False
    assert saved.customer_id == buyer["customerId"]
    assert _stored_event(services, detached["id"]).status == "processed"


def test_a_stale_attached_event_does_not_undo_a_detach(
    client: TestClient,
    buyer: dict[str, Any],
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
) -> None:
    pm = saved_card(client, stripe_api, buyer["headers"], VISA)
    stale = _card_event(stripe_api, "payment_method.attached", pm)  # taken while attached
    _data(client.delete(f"{METHODS}/{pm}", headers=buyer["headers"]))

    _deliver(client, stale)
    worker.run_until_idle()

    saved = _saved(services, pm)
    assert saved is not None
    assert saved.attached is False, "the handler must re-read the card from Stripe"
    assert _stored_event(services, stale["id"]).status == "processed"


def test_a_card_event_for_no_customer_of_ours_is_stored_as_ignored(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
) -> None:
    stranger = stripe_api.v1.customers.create(params={"email": unique_email("stranger")})
    foreign = card(stripe_api)
    stripe_api.v1.payment_methods.attach(foreign, params={"customer": stranger.id})
    loose = card(stripe_api)
    events = [
        _card_event(stripe_api, "payment_method.attached", foreign),
        _card_event(stripe_api, "payment_method.detached", loose),
    ]

    for evt in events:
        _deliver(client, evt)
    worker.run_until_idle()

    for evt in events:
        row = _stored_event(services, evt["id"])
        assert row.status == "ignored", evt["type"]
        assert row.customer_id is None
        assert row.error is not None
        assert "no customer of ours" in row.error
    assert _saved_rows(services) == []
