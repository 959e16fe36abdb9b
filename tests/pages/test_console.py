"""The operator console over HTTP (no browser): every page for an admin, none for anyone
else, and each form doing what the API does, audited."""

from __future__ import annotations

import re
from typing import Any

import pytest
import stripe
from factories import register, unique_email
from fastapi.testclient import TestClient
from sqlalchemy import select
from support.pages import sign_in
from support.payments import make_product, saved_card

from billfold.auth.models import Role
from billfold.customers import service
from billfold.kit.audit import AuditEntry
from billfold.services import Services

PAGES = [
    "/admin",
    "/admin?window=7d",
    "/admin?window=30d",
    "/admin/customers",
    "/admin/customers?q=ada",
    "/admin/payments",
    "/admin/payments?status=succeeded&from=2026-01-01&to=2030-01-01",
    "/admin/refunds",
    "/admin/webhooks?status=failed",
    "/admin/jobs",
    "/admin/jobs?status=",
    "/admin/catalog",
    "/admin/audit?action=refund.",
]
PASSWORD = "admin-password-1"


def _signed_in_admin(client: TestClient, services: Services) -> str:
    email = unique_email("operator")
    with services.db.transaction() as session:
        made = service.register(
            session, name="Operator", email=email, password=PASSWORD, role=Role.ADMIN
        )
        admin_id = made.user_id
    sign_in(client, email, PASSWORD)
    return admin_id


def _form_token(html: str, action: str) -> str:
    """The CSRF token inside the form posting to `action` (not the page's first one)."""
    form = html.split(f'action="{action}"', 1)[1].split("</form>", 1)[0]
    found = re.search(r'name="csrf_token" value="([0-9a-f]+)"', form)
    assert found, f"the form posting to {action} carries no CSRF token"
    return found.group(1)


def _post(client: TestClient, path: str, form: dict[str, str], *, page: str) -> Any:
    token = _form_token(client.get(page).text, path)
    return client.post(path, data={**form, "csrf_token": token}, follow_redirects=False)


@pytest.mark.parametrize("path", PAGES)
def test_every_console_page_renders_for_an_admin(
    client: TestClient, services: Services, path: str
) -> None:
    _signed_in_admin(client, services)
    response = client.get(path)
    assert response.status_code == 200, response.text
    assert "text/html" in response.headers["content-type"]
    assert "default-src" in response.headers["content-security-policy"]


@pytest.mark.parametrize("path", ["/admin", "/admin/customers", "/admin/jobs", "/admin/catalog"])
def test_a_customer_signed_in_is_refused_every_console_page(client: TestClient, path: str) -> None:
    user = register(client)["user"]
    sign_in(client, user["email"], "correct horse 1")
    response = client.get(path, follow_redirects=False)
    assert response.status_code == 404
    assert "Dashboard" not in response.text


def test_nobody_signed_in_is_sent_to_sign_in(client: TestClient) -> None:
    response = client.get("/admin/customers", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/billing/sign-in?next=/admin/customers")


def test_admin_refunds_part_of_a_payment_and_grants_credits_from_the_customer_page(
    client: TestClient,
    services: Services,
    admin: dict[str, str],
    buyer: dict[str, Any],
    stripe_api: stripe.StripeClient,
) -> None:
    product = make_product(client, admin, unit_amount=2500)
    pm = saved_card(client, stripe_api, buyer["headers"])
    paid = client.post(
        "/payments/create-intent",
        json={"productId": product["id"], "quantity": 1, "paymentMethodId": pm},
        headers=buyer["headers"],
    ).json()["data"]
    admin_id = _signed_in_admin(client, services)
    page = f"/admin/customers/{buyer['customerId']}"

    refunded = _post(
        client,
        f"{page}/refunds",
        {
            "payment_id": paid["paymentId"],
            "amount": "10.00",
            "reason": "requested_by_customer",
            "notes": "arrived late",
        },
        page=page,
    )
    assert refunded.status_code == 303
    shown = client.get(page).text
    assert "Refund ref_" in shown
    assert "10.00 USD" in shown
    assert "arrived late" in shown

    for _ in range(2):  # the same form posted twice grants once
        form_page = client.get(page).text
        key = form_page.split('name="key" value="')[1].split('"')[0]
        token = _form_token(form_page, f"{page}/credits")
        granted = client.post(
            f"{page}/credits",
            data={
                "csrf_token": token,
                "key": key,
                "kind": "grant",
                "amount": "300",
                "reason": "sorry for the delay",
            },
            follow_redirects=False,
        )
        assert granted.status_code == 303
        replay = client.post(
            f"{page}/credits",
            data={
                "csrf_token": token,
                "key": key,
                "kind": "grant",
                "amount": "300",
                "reason": "sorry for the delay",
            },
            follow_redirects=False,
        )
        assert replay.status_code == 303
    assert 'data-testid="credit-balance">600<' in client.get(page).text

    bad = _post(
        client, f"{page}/credits", {"kind": "grant", "amount": "x", "reason": "r"}, page=page
    )
    assert bad.status_code == 303
    assert "whole number" in client.get(page).text

    with services.db.transaction() as session:
        actions = set(
            session.scalars(select(AuditEntry.action).where(AuditEntry.actor == admin_id))
        )
    assert {"refund.request", "credits.grant"} <= actions

    export = client.get(f"{page}/export")
    assert export.status_code == 200
    assert export.headers["content-disposition"].startswith("attachment;")
    assert export.json()["user"]["email"] == buyer["email"]


def test_a_refund_form_for_another_customers_payment_is_refused(
    client: TestClient,
    services: Services,
    admin: dict[str, str],
    buyer: dict[str, Any],
    stripe_api: stripe.StripeClient,
) -> None:
    product = make_product(client, admin, unit_amount=2500)
    pm = saved_card(client, stripe_api, buyer["headers"])
    paid = client.post(
        "/payments/create-intent",
        json={"productId": product["id"], "quantity": 1, "paymentMethodId": pm},
        headers=buyer["headers"],
    ).json()["data"]
    other = register(client)["user"]
    _signed_in_admin(client, services)
    page = f"/admin/customers/{other['customerId']}"
    # This customer has no payment, so no refund form: a hand-made post with a valid token.
    token = _form_token(client.get(page).text, f"{page}/credits")
    answer = client.post(
        f"{page}/refunds",
        data={"payment_id": paid["paymentId"], "reason": "other", "csrf_token": token},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    assert "not this customer" in client.get(page).text
    payment = client.get(f"/payments/{paid['paymentId']}", headers=admin).json()["data"]
    assert payment["amountRefunded"] == 0


def test_catalog_forms_create_edit_and_deactivate_through_the_catalog_services(
    client: TestClient, services: Services, admin: dict[str, str]
) -> None:
    admin_id = _signed_in_admin(client, services)
    page = "/admin/catalog"
    made = _post(
        client,
        "/admin/catalog/products",
        {"name": "Gizmo", "price": "12.50", "currency": "usd", "stock": "7"},
        page=page,
    )
    assert made.status_code == 303
    [gizmo] = [
        p for p in client.get("/products", headers=admin).json()["data"] if p["name"] == "Gizmo"
    ]
    assert (gizmo["unitAmount"], gizmo["stock"]) == (1250, 7)

    _post(
        client,
        f"/admin/catalog/products/{gizmo['id']}",
        {"name": "Gizmo 2", "price": "13", "stock": "5"},
        page=page,
    )
    _post(client, f"/admin/catalog/products/{gizmo['id']}", {"active": "false"}, page=page)
    edited = client.get(f"/products/{gizmo['id']}", headers=admin).json()["data"]
    assert (edited["name"], edited["unitAmount"], edited["stock"], edited["active"]) == (
        "Gizmo 2",
        1300,
        5,
        False,
    )

    _post(
        client,
        "/admin/catalog/packages",
        {"name": "Bulk", "credits": "5000", "price": "40.00", "currency": "usd"},
        page=page,
    )
    _post(
        client,
        "/admin/catalog/plans",
        {
            "code": "team",
            "name": "Team",
            "interval": "month",
            "trial_days": "7",
            "features": '{"limits": {"seats": 10}}',
        },
        page=page,
    )
    _post(client, "/admin/catalog/plans/team", {"active": "false"}, page=page)
    bad = _post(
        client, "/admin/catalog/products", {"name": "X", "price": "1.999", "stock": "1"}, page=page
    )
    assert bad.status_code == 303
    assert "Price" in client.get(page).text

    packages = client.get("/credits/packages", headers=admin).json()["data"]
    assert [(p["credits"], p["price"]) for p in packages if p["name"] == "Bulk"] == [(5000, 4000)]
    plans = client.get("/plans", headers=admin).json()["data"]
    [team] = [p for p in plans if p["code"] == "team"]
    assert (team["trialDays"], team["features"], team["active"]) == (
        7,
        {"limits": {"seats": 10}},
        False,
    )
    with services.db.transaction() as session:
        actions = session.scalars(
            select(AuditEntry.action).where(AuditEntry.actor == admin_id)
        ).all()
    assert {"product.create", "product.update", "credit_package.create", "plan.create"} <= set(
        actions
    )


def test_customer_page_shows_phone_and_metadata(client: TestClient, services: Services) -> None:
    user = register(client, phone="+1 415 555 0100", metadata={"crm": "acct-7", "tier": "gold"})
    _signed_in_admin(client, services)
    page = client.get(f"/admin/customers/{user['user']['customerId']}").text
    assert "+1 415 555 0100" in page
    shown = page.split('data-testid="customer-metadata">', 1)[1].split("</dd>", 1)[0]
    assert re.sub(r"<[^>]+>", " ", shown).split() == ["crm", ":", "acct-7", "tier", ":", "gold"]
