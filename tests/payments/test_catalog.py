"""The product catalog (admin-managed) and customers' orders: prices come from the catalog,
bad input is a clear 4xx that changes nothing, and every caller sees only its own orders."""

from __future__ import annotations

from typing import Any

import httpx
from factories import auth, register
from fastapi.testclient import TestClient
from sqlalchemy import select
from support.payments import make_product

from billfold.payments.models import Order, OrderLine, Product
from billfold.services import Services

# -- helpers ---------------------------------------------------------------------------


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["success"] is False
    error: dict[str, Any] = body["error"]
    assert error["code"]
    assert error["message"]
    return error


def _data(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["success"] is True
    return body["data"]


def _rows(services: Services) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the catalog and order tables, to prove a refused call changed nothing."""
    tables = {"products": Product, "orders": Order, "order_lines": OrderLine}
    with services.db.transaction() as session:
        return {
            name: sorted(
                tuple(map(str, row)) for row in session.execute(select(model.__table__)).all()
            )
            for name, model in tables.items()
        }


def _order(client: TestClient, headers: dict[str, str], *items: tuple[str, int]) -> httpx.Response:
    body = {"items": [{"productId": pid, "quantity": qty} for pid, qty in items]}
    response: httpx.Response = client.post("/orders", json=body, headers=headers)
    return response


def _new_api_key(client: TestClient, admin: dict[str, str]) -> str:
    created = _data(client.post("/api-keys", json={"name": "host backend"}, headers=admin), 201)
    key: str = created["key"]
    return key


# -- products --------------------------------------------------------------------------


def test_admin_creates_reads_updates_and_deactivates_a_product(
    client: TestClient, admin: dict[str, str], buyer: dict[str, Any], services: Services
) -> None:
    created = _data(
        client.post(
            "/products",
            json={
                "name": "Widget",
                "description": "A fine widget",
                "unitAmount": 1999,
                "currency": "EUR",
                "stock": 7,
            },
            headers=admin,
        ),
        201,
    )
    assert created["id"].startswith("prd_")
    assert created["unitAmount"] == 1999
    assert created["currency"] == "eur"  # stored lower-case, as Stripe wants it
    assert created["stock"] == 7
    assert created["active"] is True
    with services.db.transaction() as session:
        stored = session.get(Product, created["id"])
        assert stored is not None
        assert (stored.name, stored.unit_amount, stored.currency, stored.stock) == (
            "Widget",
            1999,
            "eur",
            7,
        )

    listed = _data(client.get("/products", headers=buyer["headers"]))
    assert [p["id"] for p in listed] == [created["id"]]
    one = _data(client.get(f"/products/{created['id']}", headers=buyer["headers"]))
    assert one["name"] == "Widget"

    patched = _data(
        client.patch(
            f"/products/{created['id']}",
            json={"unitAmount": 2500, "stock": 3, "name": "Widget II"},
            headers=admin,
        )
    )
    assert (patched["unitAmount"], patched["stock"], patched["name"]) == (2500, 3, "Widget II")
    assert patched["currency"] == "eur"

    deleted = _data(client.delete(f"/products/{created['id']}", headers=admin))
    assert deleted["active"] is False
    with services.db.transaction() as session:
        kept = session.get(Product, created["id"])
        assert kept is not None, "DELETE deactivates; it must not remove the row"
        assert kept.active is False


def test_inactive_products_are_hidden_from_users_but_not_from_admins(
    client: TestClient, admin: dict[str, str], buyer: dict[str, Any]
) -> None:
    shown = make_product(client, admin, name="Shown")
    hidden = make_product(client, admin, name="Hidden")
    assert client.delete(f"/products/{hidden['id']}", headers=admin).status_code == 200

    for params in ({}, {"includeInactive": "true"}):
        users_list = _data(client.get("/products", params=params, headers=buyer["headers"]))
        assert [p["id"] for p in users_list] == [shown["id"]], params
    assert _error(client.get(f"/products/{hidden['id']}", headers=buyer["headers"]), 404)

    admins_default = _data(client.get("/products", headers=admin))
    assert [p["id"] for p in admins_default] == [shown["id"]]
    admins_all = _data(client.get("/products", params={"includeInactive": "true"}, headers=admin))
    assert {p["id"] for p in admins_all} == {shown["id"], hidden["id"]}
    assert _data(client.get(f"/products/{hidden['id']}", headers=admin))["active"] is False

    # Reactivating brings it back for everyone.
    client.patch(f"/products/{hidden['id']}", json={"active": True}, headers=admin)
    users_list = _data(client.get("/products", headers=buyer["headers"]))
    assert {p["id"] for p in users_list} == {shown["id"], hidden["id"]}


def test_user_cannot_create_update_or_deactivate_products(
    client: TestClient, admin: dict[str, str], buyer: dict[str, Any], services: Services
) -> None:
    product = make_product(client, admin, unit_amount=1000, stock=5)
    before = _rows(services)
    headers = buyer["headers"]
    body = {"name": "Mine", "unitAmount": 1, "currency": "usd", "stock": 1}

    attempts = [
        client.post("/products", json=body, headers=headers),
        client.patch(f"/products/{product['id']}", json={"unitAmount": 1}, headers=headers),
        client.delete(f"/products/{product['id']}", headers=headers),
    ]

    for response in attempts:
        assert _error(response, 403)["code"] == "admin_only"
    assert _rows(services) == before
    assert client.post("/products", json=body).status_code == 401


def test_invalid_product_input_is_422_and_stores_nothing(
    client: TestClient, admin: dict[str, str], services: Services
) -> None:
    product = make_product(client, admin, unit_amount=1000, stock=5)
    valid = {"name": "Widget", "unitAmount": 1200, "currency": "usd", "stock": 4}
    bad_bodies: list[dict[str, Any]] = [
        {**valid, "unitAmount": 0},
        {**valid, "unitAmount": -5},
        {**valid, "unitAmount": 10**12},
        {**valid, "unitAmount": 10**40},
        {**valid, "unitAmount": "12"},
        {**valid, "unitAmount": 12.5},
        {**valid, "unitAmount": 12.0},
        {**valid, "unitAmount": True},
        {**valid, "unitAmount": None},
        {**valid, "currency": "dollars"},
        {**valid, "currency": "us"},
        {**valid, "currency": "12$"},
        {**valid, "stock": -1},
        {**valid, "stock": "3"},
        {**valid, "stock": 10**12},
        {**valid, "name": ""},
        {**valid, "name": "x" * 201},
        {**valid, "isFree": True},
        {k: v for k, v in valid.items() if k != "unitAmount"},
        {k: v for k, v in valid.items() if k != "name"},
    ]
    bad_patches: list[dict[str, Any]] = [
        {"unitAmount": 0},
        {"unitAmount": -1},
        {"unitAmount": 10**12},
        {"unitAmount": "12"},
        {"unitAmount": 12.5},
        {"stock": -1},
        {"stock": 2.5},
        {"name": ""},
        {"currency": "eur"},  # the currency of a product is fixed once it exists
        {"id": "prd_" + "0" * 32},
    ]
    before = _rows(services)

    for bad in bad_bodies:
        error = _error(client.post("/products", json=bad, headers=admin), 422)
        assert error["code"] == "validation_error", bad
    for bad in bad_patches:
        error = _error(client.patch(f"/products/{product['id']}", json=bad, headers=admin), 422)
        assert error["code"] == "validation_error", bad
    not_json = client.post(
        "/products", content=b"{not json", headers={**admin, "Content-Type": "application/json"}
    )
    assert _error(not_json, 422)["code"] == "validation_error"

    assert _rows(services) == before


def test_patching_a_required_product_field_to_null_is_422_not_500(
    client: TestClient, admin: dict[str, str], services: Services
) -> None:
    product = make_product(client, admin, unit_amount=1000, stock=5)
    before = _rows(services)

    for field in ("name", "unitAmount", "stock", "active"):
        response = client.patch(f"/products/{product['id']}", json={field: None}, headers=admin)
        assert _error(response, 422)["code"] == "validation_error", field

    assert _rows(services) == before


def test_unknown_product_is_404_for_admin_reads_and_changes(
    client: TestClient, admin: dict[str, str]
) -> None:
    missing = "prd_" + "0" * 32
    assert _error(client.get(f"/products/{missing}", headers=admin), 404)["code"] == "not_found"
    patch = client.patch(f"/products/{missing}", json={"stock": 1}, headers=admin)
    assert _error(patch, 404)["code"] == "not_found"
    assert _error(client.delete(f"/products/{missing}", headers=admin), 404)["code"] == "not_found"


# -- orders ----------------------------------------------------------------------------


def test_order_is_priced_from_the_catalog_and_records_its_lines(
    client: TestClient, admin: dict[str, str], buyer: dict[str, Any], services: Services
) -> None:
    widget = make_product(client, admin, name="Widget", unit_amount=1250, stock=10)
    gadget = make_product(client, admin, name="Gadget", unit_amount=799, stock=3)

    order = _data(_order(client, buyer["headers"], (widget["id"], 2), (gadget["id"], 3)), 201)

    assert order["id"].startswith("ord_")
    assert order["customerId"] == buyer["customerId"]
    assert order["status"] == "pending"
    assert order["currency"] == "usd"
    assert order["amountTotal"] == 2 * 1250 + 3 * 799
    assert [
        (line["productId"], line["productName"], line["quantity"], line["unitAmount"])
        for line in order["lines"]
    ] == [(widget["id"], "Widget", 2, 1250), (gadget["id"], "Gadget", 3, 799)]
    assert [line["amount"] for line in order["lines"]] == [2500, 2397]
    with services.db.transaction() as session:
        stored = session.get(Order, order["id"])
        assert stored is not None
        assert stored.customer_id == buyer["customerId"]
        assert stored.amount_total == 4897
        assert [(ln.product_id, ln.quantity, ln.amount) for ln in stored.lines] == [
            (widget["id"], 2, 2500),
            (gadget["id"], 3, 2397),
        ]
        # Ordering reserves nothing: stock is taken only when the order is paid.
        assert session.get(Product, widget["id"]).stock == 10  # type: ignore[union-attr]
    # A later price change does not touch an existing order.
    client.patch(f"/products/{widget['id']}", json={"unitAmount": 1}, headers=admin)
    again = _data(client.get(f"/orders/{order['id']}", headers=buyer["headers"]))
    assert again["amountTotal"] == 4897


def test_the_same_product_twice_in_one_order_is_one_line_with_the_summed_quantity(
    client: TestClient, admin: dict[str, str], buyer: dict[str, Any]
) -> None:
    widget = make_product(client, admin, unit_amount=100, stock=5)

    order = _data(_order(client, buyer["headers"], (widget["id"], 2), (widget["id"], 3)), 201)
    assert [(ln["quantity"], ln["amount"]) for ln in order["lines"]] == [(5, 500)]
    assert order["amountTotal"] == 500

    over = _order(client, buyer["headers"], (widget["id"], 3), (widget["id"], 3))
    assert _error(over, 409)["code"] == "out_of_stock"


def test_invalid_order_input_is_422_and_creates_no_order(
    client: TestClient, admin: dict[str, str], buyer: dict[str, Any], services: Services
) -> None:
    widget = make_product(client, admin, unit_amount=100, stock=5000)
    pid = widget["id"]
    bad_bodies: list[Any] = [
        {"items": [{"productId": pid, "quantity": 0}]},
        {"items": [{"productId": pid, "quantity": -1}]},
        {"items": [{"productId": pid, "quantity": 1001}]},
        {"items": [{"productId": pid, "quantity": 10**30}]},
        {"items": [{"productId": pid, "quantity": "2"}]},
        {"items": [{"productId": pid, "quantity": 2.5}]},
        {"items": [{"productId": pid, "quantity": 2.0}]},
        {"items": [{"productId": pid, "quantity": None}]},
        {"items": [{"productId": pid}]},
        {"items": [{"productId": pid, "quantity": 1, "unitAmount": 1}]},
        {"items": [{"productId": 12345, "quantity": 1}]},
        {"items": [{"productId": "'; DROP TABLE orders; --", "quantity": 1}]},
        {"items": [{"productId": pid, "quantity": 1}], "amountTotal": 1},
        {"items": []},
        {"items": [{"productId": pid, "quantity": 1}] * 51},
        {"items": "everything"},
        {},
        [{"productId": pid, "quantity": 1}],
    ]
    before = _rows(services)

    for bad in bad_bodies:
        response = client.post("/orders", json=bad, headers=buyer["headers"])
        assert _error(response, 422)["code"] == "validation_error", bad

    assert _rows(services) == before


def test_ordering_more_than_in_stock_is_409_out_of_stock(
    client: TestClient, admin: dict[str, str], buyer: dict[str, Any], services: Services
) -> None:
    widget = make_product(client, admin, unit_amount=100, stock=2)
    sold_out = make_product(client, admin, unit_amount=100, stock=0)
    before = _rows(services)

    error = _error(_order(client, buyer["headers"], (widget["id"], 3)), 409)
    assert error["code"] == "out_of_stock"
    assert error["details"]["product_id"] == widget["id"]
    assert error["details"]["available"] == 2
    assert _error(_order(client, buyer["headers"], (sold_out["id"], 1)), 409)["code"] == (
        "out_of_stock"
    )
    assert _rows(services) == before

    # Exactly what is left is fine.
    assert _order(client, buyer["headers"], (widget["id"], 2)).status_code == 201


def test_unknown_or_inactive_product_in_an_order_is_404(
    client: TestClient, admin: dict[str, str], buyer: dict[str, Any], services: Services
) -> None:
    widget = make_product(client, admin, unit_amount=100, stock=5)
    retired = make_product(client, admin, unit_amount=100, stock=5)
    client.delete(f"/products/{retired['id']}", headers=admin)
    before = _rows(services)

    for items in (
        [("prd_" + "0" * 32, 1)],
        [(retired["id"], 1)],
        [(widget["id"], 1), (retired["id"], 1)],
    ):
        assert _error(_order(client, buyer["headers"], *items), 404)["code"] == "not_found"

    assert _rows(services) == before


def test_an_order_mixing_currencies_is_422_mixed_currency(
    client: TestClient, admin: dict[str, str], buyer: dict[str, Any], services: Services
) -> None:
    dollars = make_product(client, admin, unit_amount=100, stock=5)
    euros = make_product(client, admin, unit_amount=100, stock=5, currency="eur")
    before = _rows(services)

    response = _order(client, buyer["headers"], (dollars["id"], 1), (euros["id"], 1))

    assert _error(response, 422)["code"] == "mixed_currency"
    assert _rows(services) == before


def test_an_order_above_stripes_charge_limit_is_422_amount_too_large(
    client: TestClient, admin: dict[str, str], buyer: dict[str, Any], services: Services
) -> None:
    pricey = make_product(client, admin, unit_amount=50_000_000, stock=1000)
    priciest = make_product(client, admin, unit_amount=99_999_999, stock=1000)
    before = _rows(services)

    for items in (
        [(pricey["id"], 2)],  # 100,000,000
        [(priciest["id"], 1000)],
        [(priciest["id"], 1), (pricey["id"], 1)],
    ):
        error = _error(_order(client, buyer["headers"], *items), 422)
        assert error["code"] == "amount_too_large", items
    assert _rows(services) == before

    at_limit = _data(_order(client, buyer["headers"], (priciest["id"], 1)), 201)
    assert at_limit["amountTotal"] == 99_999_999


def test_another_users_order_is_404_on_read_and_cancel_and_stays_pending(
    client: TestClient, admin: dict[str, str], buyer: dict[str, Any], services: Services
) -> None:
    widget = make_product(client, admin, unit_amount=100, stock=5)
    order = _data(_order(client, buyer["headers"], (widget["id"], 1)), 201)
    intruder = auth(register(client)["access_token"])

    assert _error(client.get(f"/orders/{order['id']}", headers=intruder), 404)["code"] == (
        "not_found"
    )
    cancel = client.post(f"/orders/{order['id']}/cancel", headers=intruder)
    assert _error(cancel, 404)["code"] == "not_found"
    assert order["id"] not in client.get("/orders", headers=intruder).text
    listing_as_owner = client.get(
        "/orders", params={"customerId": buyer["customerId"]}, headers=intruder
    )
    assert _error(listing_as_owner, 404)
    unknown = client.get("/orders/ord_" + "0" * 32, headers=buyer["headers"])
    assert _error(unknown, 404)["code"] == "not_found"

    with services.db.transaction() as session:
        assert session.get(Order, order["id"]).status == "pending"  # type: ignore[union-attr]


def test_cancelling_a_pending_order_works_once_then_is_409_order_not_pending(
    client: TestClient, admin: dict[str, str], buyer: dict[str, Any], services: Services
) -> None:
    widget = make_product(client, admin, unit_amount=100, stock=5)
    order = _data(_order(client, buyer["headers"], (widget["id"], 1)), 201)

    canceled = _data(client.post(f"/orders/{order['id']}/cancel", headers=buyer["headers"]))
    assert canceled["status"] == "canceled"
    with services.db.transaction() as session:
        stored = session.get(Order, order["id"])
        assert stored is not None
        assert stored.status == "canceled"
        assert stored.canceled_at is not None
        first_canceled_at = stored.canceled_at

    again = client.post(f"/orders/{order['id']}/cancel", headers=buyer["headers"])
    assert _error(again, 409)["code"] == "order_not_pending"
    with services.db.transaction() as session:
        assert session.get(Order, order["id"]).canceled_at == first_canceled_at  # type: ignore[union-attr]

    # An admin may cancel anyone's pending order.
    other = _data(_order(client, buyer["headers"], (widget["id"], 1)), 201)
    by_admin = _data(client.post(f"/orders/{other['id']}/cancel", headers=admin))
    assert by_admin["status"] == "canceled"


def test_admin_lists_every_order_while_a_user_lists_only_their_own(
    client: TestClient, admin: dict[str, str], buyer: dict[str, Any]
) -> None:
    widget = make_product(client, admin, unit_amount=100, stock=50)
    other = register(client)
    other_headers = auth(other["access_token"])
    mine = _data(_order(client, buyer["headers"], (widget["id"], 1)), 201)
    theirs = _data(_order(client, other_headers, (widget["id"], 2)), 201)

    everyone = _data(client.get("/orders", headers=admin))
    assert {o["id"] for o in everyone} == {mine["id"], theirs["id"]}
    only_theirs = _data(
        client.get("/orders", params={"customerId": other["user"]["customerId"]}, headers=admin)
    )
    assert [o["id"] for o in only_theirs] == [theirs["id"]]
    assert [o["id"] for o in _data(client.get("/orders", headers=buyer["headers"]))] == [mine["id"]]
    assert [o["id"] for o in _data(client.get("/orders", headers=other_headers))] == [theirs["id"]]
    assert _data(client.get(f"/orders/{theirs['id']}", headers=admin))["amountTotal"] == 200

    client.post(f"/orders/{mine['id']}/cancel", headers=buyer["headers"])
    pending = _data(client.get("/orders", params={"status": "pending"}, headers=admin))
    assert [o["id"] for o in pending] == [theirs["id"]]
    bad_filter = client.get("/orders", params={"status": "shipped"}, headers=admin)
    assert _error(bad_filter, 422)["code"] == "validation_error"
    for limit in ("0", "201", "ten"):
        too_many = client.get("/orders", params={"limit": limit}, headers=admin)
        assert _error(too_many, 422)["code"] == "validation_error", limit


def test_service_key_orders_for_the_customer_it_names_and_must_name_one(
    client: TestClient, admin: dict[str, str], buyer: dict[str, Any], services: Services
) -> None:
    widget = make_product(client, admin, unit_amount=300, stock=5)
    key = auth(_new_api_key(client, admin))
    body = {"items": [{"productId": widget["id"], "quantity": 2}]}

    without = client.post("/orders", json=body, headers=key)
    assert _error(without, 422)["code"] == "customer_required"
    unknown = client.post(
        "/orders", json=body, params={"customerId": "cust_" + "0" * 32}, headers=key
    )
    assert _error(unknown, 404)["code"] == "not_found"
    with services.db.transaction() as session:
        assert session.scalars(select(Order)).all() == []

    made = _data(
        client.post("/orders", json=body, params={"customerId": buyer["customerId"]}, headers=key),
        201,
    )
    assert made["customerId"] == buyer["customerId"]
    assert made["amountTotal"] == 600
    # The customer sees it as their own.
    assert [o["id"] for o in _data(client.get("/orders", headers=buyer["headers"]))] == [made["id"]]


def test_user_cannot_order_for_another_customer(
    client: TestClient, admin: dict[str, str], buyer: dict[str, Any], services: Services
) -> None:
    widget = make_product(client, admin, unit_amount=300, stock=5)
    intruder = auth(register(client)["access_token"])
    body = {"items": [{"productId": widget["id"], "quantity": 1}]}

    response = client.post(
        "/orders", json=body, params={"customerId": buyer["customerId"]}, headers=intruder
    )

    assert _error(response, 404)["code"] == "not_found"
    with services.db.transaction() as session:
        assert session.scalars(select(Order)).all() == []


def test_a_currency_iso_4217_does_not_know_is_422_for_products_and_packages(
    client: TestClient, admin: dict[str, str], services: Services
) -> None:
    before = _rows(services)
    for currency in ("zzz", "ZZZ", "xau", "xxx", "xts", "abc"):
        product = {"name": "Widget", "unitAmount": 1200, "currency": currency, "stock": 4}
        package = {"name": "pack", "credits": 100, "price": 100, "currency": currency}
        for path, body in (("/products", product), ("/credits/packages", package)):
            error = _error(client.post(path, json=body, headers=admin), 422)
            assert error["code"] == "validation_error", (path, currency)
            assert error["details"]["problems"][0]["field"] == "body.currency", path
    assert _rows(services) == before
    packages = client.get("/credits/packages", headers=admin).json()["data"]
    assert packages == []


def test_a_known_currency_is_accepted_in_any_case_and_kept_lower_case(
    client: TestClient, admin: dict[str, str]
) -> None:
    made = client.post(
        "/products",
        json={"name": "Widget", "unitAmount": 1200, "currency": "CHF", "stock": 4},
        headers=admin,
    )
    assert made.status_code == 201, made.text
    assert made.json()["data"]["currency"] == "chf"


def test_a_name_is_stripped_before_its_length_is_checked(
    client: TestClient, admin: dict[str, str], services: Services
) -> None:
    base = {"unitAmount": 1200, "currency": "usd", "stock": 4}
    too_long = client.post("/products", json={**base, "name": " " * 5 + "x" * 201}, headers=admin)
    fits = client.post("/products", json={**base, "name": " " * 5 + "x" * 200 + " "}, headers=admin)
    blank = client.post("/products", json={**base, "name": "   "}, headers=admin)

    assert _error(too_long, 422)["code"] == "validation_error"
    assert _error(blank, 422)["code"] == "validation_error"
    assert fits.status_code == 201, fits.text
    assert fits.json()["data"]["name"] == "x" * 200
