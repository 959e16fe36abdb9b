"""One customer's page, as the operator console reads it: everything in one place."""

from __future__ import annotations

from typing import Any

import pytest
import stripe
from factories import signed_up
from fastapi.testclient import TestClient
from support.credits import grant
from support.payments import make_product, saved_card

from billfold.kit.errors import NotFound
from billfold.operations.customer_view import customer_overview
from billfold.services import Services


def test_overview_gathers_cards_payments_refunds_credits_mails_and_audit(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    stripe_api: stripe.StripeClient,
) -> None:
    product = make_product(client, admin, unit_amount=1500)
    pm = saved_card(client, stripe_api, buyer["headers"])
    paid = client.post(
        "/payments/create-intent",
        json={"productId": product["id"], "quantity": 1, "paymentMethodId": pm},
        headers=buyer["headers"],
    ).json()["data"]
    refund = client.post(
        f"/payments/{paid['paymentId']}/refund",
        json={"amount": 400, "reason": "requested_by_customer", "notes": "dent"},
        headers=admin,
    ).json()["data"]
    assert grant(client, admin, buyer["customerId"], 70).status_code == 201
    other = signed_up(client)
    assert grant(client, admin, other["customerId"], 5).status_code == 201

    with services.db.transaction() as session:
        seen = customer_overview(session, buyer["customerId"])
        assert seen.customer.user.email == buyer["email"]
        assert [c.stripe_payment_method_id for c in seen.cards] == [pm]
        [payment] = seen.payments
        assert (payment.id, payment.amount_refunded) == (paid["paymentId"], 400)
        assert [r.id for r in payment.refunds] == [refund["id"]]
        assert [o.id for o in seen.orders] == [paid["orderId"]]
        assert seen.credit_balance == 70
        assert [(e.kind, e.amount) for e in seen.ledger] == [("grant", 70)]
        assert any(m.kind == "receipt" for m in seen.mails)
        actions = {(a.action, a.subject_id) for a in seen.audit}
        assert ("credits.grant", buyer["customerId"]) in actions
        assert ("refund.request", refund["id"]) in actions
        assert not any(a.subject_id == other["customerId"] for a in seen.audit)


def test_overview_of_an_unknown_customer_is_not_found(services: Services) -> None:
    with services.db.transaction() as session, pytest.raises(NotFound):
        customer_overview(session, "cust_" + "0" * 32)
