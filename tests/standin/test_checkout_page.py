"""The stand-in's Checkout Sessions and its hosted Checkout page, driven with plain HTTP form
posts as a browser would (browser tests of Billfold's own pages live elsewhere)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import stripe
from support.stripe_events import EventRelay
from support.waiting import wait_until

from billfold.standin import LocalStripe, free_port

URLS = {
    "success_url": "https://app.example/ok?session={CHECKOUT_SESSION_ID}",
    "cancel_url": "https://app.example/no",
}
CARD = {"exp": "12/34", "cvc": "123"}


def _plain(obj: stripe.StripeObject) -> dict[str, Any]:
    plain: dict[str, Any] = json.loads(json.dumps(obj.to_dict(for_json=True)))
    return plain


@pytest.fixture
def price(stripe_api: stripe.StripeClient) -> str:
    made = stripe_api.v1.prices.create(
        params={
            "unit_amount": 1500,
            "currency": "usd",
            "recurring": {"interval": "month"},
            "product_data": {"name": "Team"},
        }
    )
    return made.id


@pytest.fixture
def customer(stripe_api: stripe.StripeClient) -> str:
    return stripe_api.v1.customers.create(params={"email": "page@example.com"}).id


def _session(stripe_api: stripe.StripeClient, **params: Any) -> dict[str, Any]:
    session_params: Any = {**URLS, **params}
    return _plain(stripe_api.v1.checkout.sessions.create(params=session_params))


def _pay(url: str, number: str, **form: str) -> httpx.Response:
    return httpx.post(url, data={"number": number, **CARD, **form})


def _alert(page: httpx.Response) -> str:
    found = re.search(r"<p role='alert'>([^<]*)</p>", page.text)
    return found.group(1) if found else ""


def test_a_session_is_refused_with_the_parameter_named_when_its_input_is_wrong(
    stripe_api: stripe.StripeClient, price: str, customer: str
) -> None:
    line = [{"price": price, "quantity": 1}]
    cases: list[tuple[dict[str, Any], str]] = [
        ({"mode": "setup", "line_items": line}, "mode"),
        ({"mode": "subscription", "line_items": line, "success_url": "ok"}, "success_url"),
        ({"mode": "subscription"}, "line_items"),
        ({"mode": "subscription", "line_items": [{"price": price, "quantity": 0}]}, "quantity"),
        ({"mode": "payment", "line_items": line}, "line_items"),
        ({"mode": "subscription", "line_items": line, "bogus": "1"}, "bogus"),
    ]
    for params, param in cases:
        with pytest.raises(stripe.InvalidRequestError) as refused:
            _session(stripe_api, **params)
        assert param in str(refused.value.param), params
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        _session(stripe_api, mode="subscription", line_items=[{"price": "price_nope"}])
    assert unknown.value.http_status == 404
    assert stripe_api.v1.checkout.sessions.list(params={"customer": customer}).data == []


def test_paying_a_subscription_session_with_a_visa_subscribes_and_redirects_with_its_id(
    stripe_api: stripe.StripeClient, stripe_events: EventRelay, price: str, customer: str
) -> None:
    session = _session(
        stripe_api,
        mode="subscription",
        customer=customer,
        line_items=[{"price": price, "quantity": 2}],
        client_reference_id="cust_ours",
        metadata={"customer_id": "cust_ours"},
        subscription_data={"metadata": {"customer_id": "cust_ours"}},
        allow_promotion_codes=True,
    )
    assert (session["status"], session["payment_status"], session["amount_total"]) == (
        "open",
        "unpaid",
        3000,
    )
    page = httpx.get(session["url"])
    assert page.status_code == 200
    assert "Team" in page.text
    assert "30.00 USD per month" in page.text
    assert "Card number" in page.text
    assert "Email" not in page.text

    paid = _pay(session["url"], "4242 4242 4242 4242")
    assert paid.status_code == 303
    assert paid.headers["location"] == f"https://app.example/ok?session={session['id']}"
    done = _plain(stripe_api.v1.checkout.sessions.retrieve(session["id"]))
    assert (done["status"], done["payment_status"], done["url"]) == ("complete", "paid", None)
    sub = _plain(stripe_api.v1.subscriptions.retrieve(done["subscription"]))
    assert (sub["status"], sub["customer"], sub["metadata"]) == (
        "active",
        customer,
        {"customer_id": "cust_ours"},
    )
    assert sub["items"]["data"][0]["price"]["id"] == price
    invoice = stripe_api.v1.invoices.retrieve(sub["latest_invoice"])
    assert (invoice.status, invoice.amount_paid) == ("paid", 3000)
    method = _plain(stripe_api.v1.payment_methods.retrieve(sub["default_payment_method"]))
    assert (method["customer"], method["card"]["brand"]) == (customer, "visa")
    kinds = [e["type"] for e in stripe_events.pending()]
    for kind in (
        "payment_method.attached",
        "customer.subscription.created",
        "invoice.paid",
        "checkout.session.completed",
    ):
        assert kind in kinds
    # Paid once: the page says so, and paying again is refused.
    assert "complete" in httpx.get(session["url"]).text
    assert _pay(session["url"], "4242424242424242").status_code == 200
    assert len(stripe_api.v1.subscriptions.list(params={"customer": customer}).data) == 1


def test_a_trial_session_starts_trialing_and_charges_nothing(
    stripe_api: stripe.StripeClient, price: str, customer: str
) -> None:
    session = _session(
        stripe_api,
        mode="subscription",
        customer=customer,
        line_items=[{"price": price}],
        subscription_data={"trial_period_days": 7},
    )
    assert "Start trial" in httpx.get(session["url"]).text
    assert _pay(session["url"], "4242424242424242").status_code == 303
    done = _plain(stripe_api.v1.checkout.sessions.retrieve(session["id"]))
    sub = _plain(stripe_api.v1.subscriptions.retrieve(done["subscription"]))
    assert (done["payment_status"], sub["status"]) == ("no_payment_required", "trialing")
    assert sub["trial_end"] - sub["trial_start"] == 7 * 86400
    assert sub["current_period_end"] == sub["trial_end"]


@pytest.mark.parametrize(
    ("number", "message"),
    [
        ("4000000000000002", "Your card was declined."),
        ("4000000000009995", "Your card has insufficient funds."),
        ("4000000000000069", "Your card has expired."),
        ("4000000000000341", "Your card was declined."),
        ("1234", "Your card number is invalid."),
    ],
)
def test_a_declined_card_is_shown_and_the_page_stays_open(
    number: str, message: str, stripe_api: stripe.StripeClient, price: str, customer: str
) -> None:
    session = _session(
        stripe_api, mode="subscription", customer=customer, line_items=[{"price": price}]
    )
    page = _pay(session["url"], number)
    assert (page.status_code, _alert(page)) == (402, message)
    assert "Card number" in page.text
    assert stripe_api.v1.checkout.sessions.retrieve(session["id"]).status == "open"
    assert stripe_api.v1.subscriptions.list(params={"customer": customer}).data == []


@pytest.mark.parametrize("number", ["4000002500003155", "4000002760003184"])
def test_a_3d_secure_card_asks_for_authentication_before_paying(
    number: str, stripe_api: stripe.StripeClient, price: str, customer: str
) -> None:
    session = _session(
        stripe_api, mode="subscription", customer=customer, line_items=[{"price": price}]
    )
    asked = _pay(session["url"], number)
    assert asked.status_code == 200
    assert "Complete authentication" in asked.text
    assert "Fail authentication" in asked.text
    method = re.search(r"name='payment_method' value='([^']+)'", asked.text)
    assert method is not None
    refused = httpx.post(
        f"{session['url']}/authenticate",
        data={"payment_method": method.group(1), "outcome": "fail"},
    )
    assert refused.status_code == 402
    assert _alert(refused).startswith("We are unable to authenticate your payment method.")
    assert stripe_api.v1.checkout.sessions.retrieve(session["id"]).status == "open"
    approved = httpx.post(
        f"{session['url']}/authenticate",
        data={"payment_method": method.group(1), "outcome": "complete"},
    )
    assert approved.status_code == 303
    done = stripe_api.v1.checkout.sessions.retrieve(session["id"])
    assert done.status == "complete"
    assert stripe_api.v1.subscriptions.retrieve(str(done.subscription)).status == "active"


def test_a_payment_session_for_a_new_customer_with_setup_future_usage_saves_the_card(
    stripe_api: stripe.StripeClient,
) -> None:
    session = _session(
        stripe_api,
        mode="payment",
        customer_email="buyer@example.com",
        line_items=[
            {
                "price_data": {
                    "currency": "eur",
                    "unit_amount": 1250,
                    "product_data": {"name": "Sticker pack"},
                },
                "quantity": 2,
            }
        ],
        payment_intent_data={"setup_future_usage": "off_session"},
    )
    page = httpx.get(session["url"])
    assert "25.00 EUR" in page.text
    assert "Email" in page.text
    paid = _pay(session["url"], "5555555555554444", email="buyer@example.com")
    assert paid.status_code == 303
    done = _plain(stripe_api.v1.checkout.sessions.retrieve(session["id"]))
    assert (done["status"], done["payment_status"]) == ("complete", "paid")
    intent = stripe_api.v1.payment_intents.retrieve(done["payment_intent"])
    assert (intent.status, intent.amount, intent.currency) == ("succeeded", 2500, "eur")
    customer = stripe_api.v1.customers.retrieve(done["customer"])
    assert customer.email == "buyer@example.com"
    [saved] = stripe_api.v1.payment_methods.list(
        params={"customer": customer.id, "type": "card"}
    ).data
    assert (saved.id, _plain(saved)["card"]["brand"]) == (intent.payment_method, "mastercard")


def test_an_expired_session_cannot_be_paid_and_says_so(
    stripe_api: stripe.StripeClient, stripe_events: EventRelay, price: str, customer: str
) -> None:
    session = _session(
        stripe_api, mode="subscription", customer=customer, line_items=[{"price": price}]
    )
    assert f"href='{URLS['cancel_url']}'" in httpx.get(session["url"]).text
    expired = stripe_api.v1.checkout.sessions.expire(session["id"])
    assert (expired.status, expired.url) == ("expired", None)
    assert "checkout.session.expired" in [e["type"] for e in stripe_events.pending()]
    assert _pay(session["url"], "4242424242424242").status_code == 410
    with pytest.raises(stripe.InvalidRequestError):
        stripe_api.v1.checkout.sessions.expire(session["id"])


@pytest.fixture
def webhook_sink() -> Iterator[tuple[str, list[tuple[bytes, str]]]]:
    received: list[tuple[bytes, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((body, self.headers["Stripe-Signature"]))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    finally:
        server.shutdown()
        server.server_close()


def test_checkout_session_completed_is_delivered_signed_like_the_other_events(
    localstripe: LocalStripe,
    stripe_api: stripe.StripeClient,
    webhook_sink: tuple[str, list[tuple[bytes, str]]],
    price: str,
    customer: str,
) -> None:
    url, received = webhook_sink
    localstripe.register_webhook(
        "checkout-page-test", url, "whsec_checkout_page", ["checkout.session.completed"]
    )
    session = _session(
        stripe_api, mode="subscription", customer=customer, line_items=[{"price": price}]
    )
    assert _pay(session["url"], "4242424242424242").status_code == 303

    def delivered() -> bool:
        return any(session["id"].encode() in body for body, _ in received)

    assert wait_until(delivered, timeout=10), "no checkout.session.completed delivered"
    [(body, signature)] = [(b, s) for b, s in received if session["id"].encode() in b]
    evt = stripe.Webhook.construct_event(body.decode(), signature, "whsec_checkout_page")
    assert evt["type"] == "checkout.session.completed"
    assert evt["data"]["object"]["id"] == session["id"]
    assert evt["data"]["object"]["status"] == "complete"
