"""The stand-in's billing portal: a session answers a URL to a page that lists the
customer's subscriptions and cards and links back to `return_url`."""

from __future__ import annotations

import httpx
import pytest
import stripe


def test_a_portal_session_page_lists_the_subscription_and_cards_and_links_back(
    stripe_api: stripe.StripeClient,
) -> None:
    customer = stripe_api.v1.customers.create(params={"email": "portal@example.com"})
    visa = stripe_api.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    stripe_api.v1.payment_methods.attach("pm_card_amex", params={"customer": customer.id})
    stripe_api.v1.customers.update(
        customer.id, params={"invoice_settings": {"default_payment_method": visa.id}}
    )
    price = stripe_api.v1.prices.create(
        params={
            "unit_amount": 2900,
            "currency": "usd",
            "recurring": {"interval": "month"},
            "product_data": {"name": "Professional"},
        }
    )
    stripe_api.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": price.id}]}
    )
    session = stripe_api.v1.billing_portal.sessions.create(
        params={"customer": customer.id, "return_url": "https://app.example/billing"}
    )
    assert (session.customer, session.return_url) == (customer.id, "https://app.example/billing")
    page = httpx.get(session.url)
    assert page.status_code == 200
    assert "portal@example.com" in page.text
    assert "<td>Professional</td><td>29.00 USD per month</td><td>active</td>" in page.text
    assert "visa ending 4242, expires 12/2034 (default)" in page.text
    assert "amex ending 0005" in page.text
    assert "href='https://app.example/billing'" in page.text


def test_a_portal_session_needs_a_known_customer_and_a_real_return_url(
    stripe_api: stripe.StripeClient,
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        stripe_api.v1.billing_portal.sessions.create(params={"customer": "cus_nobody"})
    assert unknown.value.http_status == 404
    customer = stripe_api.v1.customers.create(params={"email": "portal2@example.com"})
    with pytest.raises(stripe.InvalidRequestError) as bad:
        stripe_api.v1.billing_portal.sessions.create(
            params={"customer": customer.id, "return_url": "javascript:alert(1)"}
        )
    assert bad.value.param == "return_url"
