"""`billfold catalog apply`: Billfold and the Stripe stand-in made to agree with a file, once;
a new amount makes a new price and retires the old one, its subscribers untouched."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import stripe
from conftest import STRIPE_KEY, WEBHOOK_SECRET
from sqlalchemy import select
from support.netfault import FaultyLink
from support.payments import card
from support.transactions import transaction_open
from typer.testing import CliRunner

from billfold.catalog import sync
from billfold.catalog.cli import apply_file
from billfold.catalog.spec import Catalog, parse_catalog, to_toml
from billfold.cli import app as cli_app
from billfold.config import Settings
from billfold.credits.models import CreditPackage
from billfold.payments.models import Product
from billfold.services import Services
from billfold.stripe_gateway import StripeUnavailable
from billfold.subscriptions.models import Plan, PlanPrice
from billfold.subscriptions.plans import plan_for_price

EXAMPLE = Path(__file__).resolve().parents[2] / "catalog.example.toml"


def example(**plan_prices: dict[str, int]) -> Catalog:
    """The example catalog, with other prices for the plans named."""
    catalog = parse_catalog(EXAMPLE.read_text())
    plans = [
        p.model_copy(update={"prices": plan_prices[p.code]}) if p.code in plan_prices else p
        for p in catalog.plans
    ]
    return catalog.model_copy(update={"plans": plans})


def plans(services: Services) -> dict[str, Plan]:
    with services.db.transaction() as session:
        found = {p.code: p for p in session.scalars(select(Plan))}
        session.expunge_all()
        return found


def price_rows(services: Services, code: str) -> list[PlanPrice]:
    with services.db.transaction() as session:
        rows = list(
            session.scalars(
                select(PlanPrice)
                .join(Plan, Plan.id == PlanPrice.plan_id)
                .where(Plan.code == code)
                .order_by(PlanPrice.created_at)
            )
        )
        session.expunge_all()
        return rows


def stripe_side(stripe_api: stripe.StripeClient, services: Services) -> dict[str, Any]:
    """Every Stripe product and price of our plans, as Stripe holds them."""
    seen: dict[str, Any] = {}
    for plan in plans(services).values():
        if plan.stripe_product_id is None:
            continue
        product = stripe_api.v1.products.retrieve(plan.stripe_product_id)
        seen[product.id] = (product.name, product.active)
        for price in stripe_api.v1.prices.list(params={"product": product.id}).data:
            seen[price.id] = (price.currency, price.unit_amount, price.active)
    return seen


def test_apply_makes_plans_products_prices_packages_and_products(
    services: Services, stripe_api: stripe.StripeClient
) -> None:
    done = sync.apply(services, example())

    made = plans(services)
    assert set(made) == {"trial", "starter", "professional"}
    assert (made["trial"].stripe_price_id, made["trial"].stripe_product_id) == (None, None)
    starter = {r.currency: r for r in price_rows(services, "starter")}
    assert {c: (r.unit_amount, r.active) for c, r in starter.items()} == {
        "usd": (900, True),
        "eur": (900, True),
    }
    assert made["starter"].stripe_price_id == starter["usd"].stripe_price_id  # Checkout's
    for currency, row in starter.items():
        assert row.stripe_price_id is not None
        price = stripe_api.v1.prices.retrieve(row.stripe_price_id)
        assert (price.currency, price.unit_amount, price.active) == (currency, 900, True)
        assert price.recurring is not None
        assert price.recurring.interval == "month"
        assert price.product == made["starter"].stripe_product_id
    assert stripe_api.v1.products.retrieve(str(made["starter"].stripe_product_id)).name == "Starter"
    with services.db.transaction() as session:
        assert [p.credits for p in session.scalars(select(CreditPackage))] == [1000, 5000, 20000]
        assert {p.name: p.stock for p in session.scalars(select(Product))} == {
            "Sticker pack": 100,
            "Billfold T-shirt": 20,
        }
    assert {(c.subject, c.action) for c in done} >= {("stripe price", "create")}


def test_apply_twice_changes_nothing_the_second_time(
    services: Services, stripe_api: stripe.StripeClient
) -> None:
    sync.apply(services, example())
    before = stripe_side(stripe_api, services)
    rows_before = [(r.id, r.stripe_price_id) for r in price_rows(services, "professional")]

    assert sync.apply(services, example()) == []

    assert stripe_side(stripe_api, services) == before
    assert [(r.id, r.stripe_price_id) for r in price_rows(services, "professional")] == rows_before


def renamed(catalog: Catalog, code: str, name: str) -> Catalog:
    plans = [p.model_copy(update={"name": name}) if p.code == code else p for p in catalog.plans]
    return catalog.model_copy(update={"plans": plans})


def test_renaming_a_plan_back_and_forth_within_a_day_reaches_stripe_each_time(
    services: Services, stripe_api: stripe.StripeClient
) -> None:
    """Each product update is its own Stripe call: a key from the content (plan, name,
    active) would replay the answer of the earlier rename to the same name, and Stripe
    would keep the name in between."""
    sync.apply(services, example())
    product_id = str(plans(services)["starter"].stripe_product_id)
    for name in ("Starter Plus", "Starter", "Starter Plus", "Starter"):
        done = sync.apply(services, renamed(example(), "starter", name))
        assert ("stripe product", "update") in {(c.subject, c.action) for c in done}
        assert stripe_api.v1.products.retrieve(product_id).name == name
    assert plans(services)["starter"].stripe_product_version == 4
    assert sync.apply(services, example()) == []


def test_a_changed_amount_makes_a_new_price_and_retires_the_old_one_subscribers_untouched(
    services: Services, stripe_api: stripe.StripeClient
) -> None:
    sync.apply(services, example())
    old = {r.currency: r for r in price_rows(services, "starter")}
    pm = card(stripe_api)
    customer = stripe_api.v1.customers.create(params={"payment_method": pm})
    subscription = stripe_api.v1.subscriptions.create(
        params={
            "customer": customer.id,
            "items": [{"price": str(old["usd"].stripe_price_id)}],
            "default_payment_method": pm,
        }
    )

    done = sync.apply(services, example(starter={"usd": 1200, "eur": 900}))

    assert [(c.subject, c.name, c.action) for c in done] == [
        ("stripe price", "starter usd", "create"),
        ("stripe price", "starter usd", "retire"),
    ]
    rows = price_rows(services, "starter")
    new = next(r for r in rows if r.currency == "usd" and r.active)
    assert (new.unit_amount, new.active) == (1200, True)
    assert new.stripe_price_id not in (None, old["usd"].stripe_price_id)
    assert stripe_api.v1.prices.retrieve(str(new.stripe_price_id)).unit_amount == 1200
    retired = stripe_api.v1.prices.retrieve(str(old["usd"].stripe_price_id))
    assert (retired.active, retired.unit_amount) == (False, 900)
    assert stripe_api.v1.prices.retrieve(str(old["eur"].stripe_price_id)).active is True
    assert plans(services)["starter"].stripe_price_id == new.stripe_price_id
    # The subscriber stays on the price they bought, and Billfold still knows its plan.
    kept = stripe_api.v1.subscriptions.retrieve(subscription.id)
    assert kept.status == "active"
    assert kept["items"].data[0].price.id == old["usd"].stripe_price_id
    with services.db.transaction() as session:
        found = plan_for_price(session, old["usd"].stripe_price_id)
        assert found is not None
        assert found.code == "starter"
    assert sync.apply(services, example(starter={"usd": 1200, "eur": 900})) == []


def test_a_currency_or_plan_left_out_is_retired_never_deleted(
    services: Services, stripe_api: stripe.StripeClient
) -> None:
    sync.apply(services, example())
    eur = next(r for r in price_rows(services, "starter") if r.currency == "eur")
    catalog = example(starter={"usd": 900})
    catalog = catalog.model_copy(
        update={"plans": [p for p in catalog.plans if p.code != "professional"]}
    )

    sync.apply(services, catalog)

    assert stripe_api.v1.prices.retrieve(str(eur.stripe_price_id)).active is False
    professional = plans(services)["professional"]
    assert professional.active is False
    assert all(not r.active for r in price_rows(services, "professional"))
    assert stripe_api.v1.products.retrieve(str(professional.stripe_product_id)).id
    assert sync.apply(services, catalog) == []


def test_dry_run_changes_nothing_and_lists_what_apply_would_do(
    services: Services, stripe_api: stripe.StripeClient, tmp_path: Path
) -> None:
    sync.apply(services, example())
    before = stripe_side(stripe_api, services)
    changed = tmp_path / "catalog.toml"
    changed.write_text(to_toml(example(professional={"usd": 3900, "eur": 2700})))

    listed = apply_file(services, changed, dry_run=True)

    assert [(c.subject, c.name, c.action) for c in listed] == [
        ("stripe price", "professional usd", "create"),
        ("stripe price", "professional usd", "retire"),
    ]
    assert "39.00 USD" in listed[0].detail
    assert stripe_side(stripe_api, services) == before
    assert [r.unit_amount for r in price_rows(services, "professional") if r.active] == [
        2900,
        2700,
    ]


def test_export_writes_back_what_was_applied(services: Services) -> None:
    applied = example(starter={"usd": 1000, "eur": 900})
    sync.apply(services, example())
    sync.apply(services, applied)

    assert parse_catalog(to_toml(sync.export(services))) == applied


def test_a_plan_made_through_the_api_with_a_matching_price_is_adopted_not_remade(
    services: Services, stripe_api: stripe.StripeClient
) -> None:
    product = stripe_api.v1.products.create(params={"name": "Starter"})
    price = stripe_api.v1.prices.create(
        params={
            "product": product.id,
            "currency": "usd",
            "unit_amount": 900,
            "recurring": {"interval": "month"},
        }
    )
    with services.db.transaction() as session:
        session.add(Plan(code="starter", name="Starter", stripe_price_id=price.id))

    done = sync.apply(services, example(starter={"usd": 900}))

    assert ("stripe price", "starter usd", "adopt") in [(c.subject, c.name, c.action) for c in done]
    assert ("stripe price", "starter usd", "create") not in [
        (c.subject, c.name, c.action) for c in done
    ]
    rows = price_rows(services, "starter")
    assert [(r.stripe_price_id, r.active) for r in rows] == [(price.id, True)]
    assert plans(services)["starter"].stripe_price_id == price.id


def test_comparing_and_exporting_ask_stripe_with_no_transaction_open(
    services: Services, stripe_api: stripe.StripeClient, stripe_link: FaultyLink
) -> None:
    """`catalog apply --dry-run` and `catalog export` read our rows in a short transaction
    and ask Stripe after it closed (one held open would hold SQLite's one write lock)."""
    sync.apply(services, example())
    price = stripe_api.v1.prices.create(
        params={
            "product": str(plans(services)["starter"].stripe_product_id),
            "currency": "usd",
            "unit_amount": 700,
            "recurring": {"interval": "month"},
        }
    )
    with services.db.transaction() as session:  # a price an admin set through the API
        session.scalars(
            select(Plan).where(Plan.code == "professional")
        ).one().stripe_price_id = price.id
    steps: list[tuple[bytes, Callable[[], object]]] = [
        (b"GET /v1/products/", lambda: sync.changes(services, example())),
        (b"GET /v1/prices/", lambda: sync.export(services)),
    ]
    for request_line, step in steps:
        stripe_link.hold_responses(only=request_line)
        with ThreadPoolExecutor(max_workers=1) as pool:
            done = pool.submit(step)
            try:
                assert stripe_link.wait_for_held_response(timeout=20)
                assert not transaction_open(services)
            finally:
                stripe_link.up()
            assert done.result(timeout=30)


def test_a_run_cut_off_after_stripe_made_a_price_is_finished_without_a_second_one(
    services: Services, stripe_api: stripe.StripeClient, stripe_link: FaultyLink
) -> None:
    sync.apply(services, example())
    product = plans(services)["starter"].stripe_product_id
    prices_before = len(stripe_api.v1.prices.list(params={"product": str(product)}).data)
    changed = example(starter={"usd": 1500, "eur": 900})

    # Stripe makes the price; Billfold never hears back (it gives up, as if it had died)
    stripe_link.hold_responses(only=b"POST /v1/prices HTTP")
    with pytest.raises(StripeUnavailable):
        sync.apply(services, changed)
    stripe_link.up()
    pending = [r for r in price_rows(services, "starter") if r.stripe_price_id is None]
    assert [(r.currency, r.unit_amount) for r in pending] == [("usd", 1500)]

    sync.apply(services, changed)

    made = stripe_api.v1.prices.list(params={"product": str(product)}).data
    assert len(made) == prices_before + 1  # the same idempotency key: one new price, not two
    active = {r.currency: r.unit_amount for r in price_rows(services, "starter") if r.active}
    assert active == {"usd": 1500, "eur": 900}
    assert sync.apply(services, changed) == []


def test_the_command_prints_the_changes_and_refuses_a_bad_file_clearly(
    settings: Settings, tmp_path: Path
) -> None:
    env = {
        "DATABASE_URL": settings.database_url,
        "STRIPE_API_BASE": settings.stripe_api_base,
        "STRIPE_SECRET_KEY": STRIPE_KEY,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "JWT_SECRET": "catalog-cli-secret-" + "y" * 32,
    }
    runner = CliRunner()
    dry = runner.invoke(cli_app, ["catalog", "apply", str(EXAMPLE), "--dry-run"], env=env)
    assert dry.exit_code == 0, dry.output
    assert "would change" in dry.output
    assert "starter usd" in dry.output

    bad = tmp_path / "bad.toml"
    bad.write_text('[[plans]]\ncode = "x"\nname = "X"\nprices = { usd = -1 }\n')
    refused = runner.invoke(cli_app, ["catalog", "apply", str(bad)], env=env)
    assert refused.exit_code == 1
    assert "plans[0].prices.usd" in refused.output
    assert "catalog_invalid" in refused.output

    applied = runner.invoke(cli_app, ["catalog", "apply", str(EXAMPLE)], env=env)
    assert applied.exit_code == 0, applied.output
    again = runner.invoke(cli_app, ["catalog", "apply", str(EXAMPLE)], env=env)
    assert "already agree" in again.output
    exported = runner.invoke(cli_app, ["catalog", "export"], env=env)
    assert exported.exit_code == 0, exported.output
    assert parse_catalog(exported.stdout) == parse_catalog(EXAMPLE.read_text())
