"""Make the database and Stripe agree with a catalog: first the list of changes (what
`--dry-run` prints), then each change run in its own short transaction.

Stripe prices never change amount: a new amount is a new price, and the old one is retired
(made inactive), which leaves the subscriptions on it as they are. Nothing is ever deleted; a
plan, package or product the file no longer declares is deactivated. Every Stripe call is
idempotent with a key built from our row IDs (a product update from the plan's count of
them), and a price's row is written before Stripe makes
the price, so a run that dies half-way is finished by the next one without duplicates.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from billfold.catalog.spec import (
    Catalog,
    CatalogInvalid,
    CreditPackageSpec,
    Features,
    PlanSpec,
    ProductSpec,
)
from billfold.credits.models import CreditPackage
from billfold.kit import audit
from billfold.kit.db import Base, new_id, utcnow
from billfold.kit.errors import NotFound
from billfold.kit.money import format_money
from billfold.payments.models import Product
from billfold.services import Services
from billfold.stripe_gateway import StripeNotFound, StripePrice
from billfold.subscriptions.models import Plan, PlanPrice
from billfold.subscriptions.plans import TRIAL

ACTOR = "catalog"
_Row = TypeVar("_Row", bound=Base)


@dataclass(frozen=True)
class Change:
    """One difference between the file and what is, and how to remove it."""

    subject: str  # "plan", "stripe product", "stripe price", "credit package", "product"
    name: str
    action: str  # "create", "update", "retire", "adopt"
    detail: str
    run: Callable[[Services], None]


def changes(services: Services, catalog: Catalog) -> list[Change]:
    """What `apply` would do, in the order it does it; empty when all agree.

    Our rows are read in one short transaction and Stripe is asked after it closes: a
    transaction held open across Stripe calls would hold SQLite's one write lock meanwhile."""
    with services.db.transaction() as session:
        plans = {p.code: p for p in session.scalars(select(Plan))}
        declared = {spec.code for spec in catalog.plans}
        if TRIAL not in declared and TRIAL in plans and plans[TRIAL].active:
            raise CatalogInvalid(
                f"The catalog must declare the {TRIAL!r} plan: every new customer starts on it"
            )
        rows = {plan.id: _price_rows(session, plan) for plan in plans.values()}
        retired: list[Change] = []
        for plan in plans.values():
            if plan.code not in declared and plan.active:
                retired += _retired_plan_changes(plan, rows[plan.id])
        local = _package_changes(session, catalog.credit_packages)
        local += _product_changes(session, catalog.products)
        session.expunge_all()
    found: list[Change] = []
    for spec in catalog.plans:
        current = plans.get(spec.code)
        found += _plan_changes(services, spec, current, rows[current.id] if current else {})
    return found + retired + local


def apply(services: Services, catalog: Catalog) -> list[Change]:
    """Run every change (each commits on its own) and answer what was done."""
    done = changes(services, catalog)
    for change in done:
        change.run(services)
    return done


# Plans ----------------------------------------------------------------------------------


def _plan_fields(spec: PlanSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "interval": spec.interval,
        "trial_days": spec.trial_days,
        "features": spec.features.model_dump(),
        "active": spec.active,
    }


def _plan_changes(
    services: Services, spec: PlanSpec, plan: Plan | None, rows: dict[str, list[PlanPrice]]
) -> list[Change]:
    fields = _plan_fields(spec)
    found: list[Change] = []
    if plan is None:
        found.append(
            Change("plan", spec.code, "create", spec.name, _create_plan(spec.code, fields))
        )
    else:
        differing = {k: v for k, v in fields.items() if getattr(plan, k) != v}
        if differing:
            detail = ", ".join(f"{k}: {getattr(plan, k)!r} → {v!r}" for k, v in differing.items())
            found.append(
                Change("plan", spec.code, "update", detail, _update_plan(spec.code, differing))
            )
    if spec.prices or (plan is not None and plan.stripe_product_id):
        found += _product_change(services, spec, plan)
    rows = {currency: list(kept) for currency, kept in rows.items()}
    adopted = _adopted_row(services, plan, [r for kept in rows.values() for r in kept])
    if adopted is not None:
        found.append(_adopt(spec.code, adopted))
        rows.setdefault(adopted.currency, []).append(adopted)
    for currency, amount in spec.prices.items():
        found += _currency_changes(services, spec, currency, amount, rows.get(currency, []))
    for currency, kept in rows.items():
        if currency not in spec.prices:
            found += [_retire_price(spec.code, row) for row in kept if row.active]
    checkout = _checkout_currency(services, spec)
    if plan is not None and not spec.prices and plan.stripe_price_id is not None:
        found.append(
            Change(
                "plan",
                spec.code,
                "update",
                "no price: not sold through Checkout",
                _link_checkout_price(spec.code, None),
            )
        )
    elif checkout is not None and not any(c.subject == "stripe price" for c in found):
        current = [r for r in rows.get(checkout, []) if r.active and r.stripe_price_id]
        if plan is not None and current and plan.stripe_price_id != current[-1].stripe_price_id:
            found.append(
                Change(
                    "plan",
                    spec.code,
                    "update",
                    f"Checkout sells {current[-1].stripe_price_id}",
                    _link_checkout_price(spec.code, checkout),
                )
            )
    return found


def _checkout_currency(services: Services, spec: PlanSpec) -> str | None:
    """Checkout sells the plan in STRIPE_CURRENCY, or its first currency if it has no price
    in that one."""
    if not spec.prices:
        return None
    default = services.settings.stripe_currency.lower()
    return default if default in spec.prices else next(iter(spec.prices))


def _create_plan(code: str, fields: dict[str, Any]) -> Callable[[Services], None]:
    def run(services: Services) -> None:
        with services.db.transaction() as session:
            if session.scalar(select(Plan.id).where(Plan.code == code)) is None:
                plan = Plan(code=code, **fields)
                session.add(plan)
                session.flush()
                audit.record(session, ACTOR, "plan.create", plan.id, code=code)

    return run


def _update_plan(code: str, fields: dict[str, Any]) -> Callable[[Services], None]:
    def run(services: Services) -> None:
        with services.db.transaction() as session:
            plan = _plan(session, code)
            for name, value in fields.items():
                setattr(plan, name, value)
            audit.record(
                session, ACTOR, "plan.update", plan.id, **{k: str(v) for k, v in fields.items()}
            )

    return run


def _plan(session: Session, code: str) -> Plan:
    plan = session.scalar(select(Plan).where(Plan.code == code))
    if plan is None:  # made by an earlier change of the same run, unless someone removed it
        raise NotFound(f"No plan {code!r}", code="plan_not_found")
    return plan


def _row(session: Session, model: type[_Row], row_id: str) -> _Row:
    found = session.get(model, row_id)
    if found is None:
        raise NotFound(f"No {model.__tablename__} row {row_id!r}")
    return found


def _product_change(services: Services, spec: PlanSpec, plan: Plan | None) -> list[Change]:
    wanted_active = spec.active and bool(spec.prices)
    if plan is None or plan.stripe_product_id is None:
        if not spec.prices:
            return []
        return [Change("stripe product", spec.code, "create", spec.name, _ensure_product(spec))]
    try:
        product = services.stripe.retrieve_product(plan.stripe_product_id)
    except StripeNotFound:
        return [
            Change(
                "stripe product",
                spec.code,
                "create",
                f"{plan.stripe_product_id} is gone from Stripe",
                _ensure_product(spec),
            )
        ]
    if product.name == spec.name and product.active == wanted_active:
        return []
    detail = f"{product.id}: name {spec.name!r}, active {wanted_active}"
    return [Change("stripe product", spec.code, "update", detail, _ensure_product(spec))]


def _ensure_product(spec: PlanSpec) -> Callable[[Services], None]:
    def run(services: Services) -> None:
        with services.db.transaction() as session:
            plan = _plan(session, spec.code)
            plan_id, product_id = plan.id, plan.stripe_product_id
        active = spec.active and bool(spec.prices)
        if product_id is not None:
            try:
                product = services.stripe.retrieve_product(product_id)
            except StripeNotFound:
                product_id = None
            else:
                if (product.name, product.active) != (spec.name, active):
                    with services.db.transaction() as session:
                        # Each update is its own Stripe call (A → B → A sets A again).
                        plan = _plan(session, spec.code)
                        plan.stripe_product_version += 1
                        version = plan.stripe_product_version
                    services.stripe.update_product(
                        product_id, plan_id=plan_id, version=version, name=spec.name, active=active
                    )
                return
        made = services.stripe.create_product(plan_id=plan_id, plan_code=spec.code, name=spec.name)
        with services.db.transaction() as session:
            _plan(session, spec.code).stripe_product_id = made.id

    return run


def _price_rows(session: Session, plan: Plan | None) -> dict[str, list[PlanPrice]]:
    """The plan's price rows per currency, oldest first."""
    if plan is None:
        return {}
    rows: dict[str, list[PlanPrice]] = {}
    found = list(
        session.scalars(
            select(PlanPrice).where(PlanPrice.plan_id == plan.id).order_by(PlanPrice.created_at)
        )
    )
    for row in found:
        rows.setdefault(row.currency, []).append(row)
    return rows


def _matches(price: StripePrice, spec: PlanSpec, currency: str, amount: int) -> bool:
    return (price.currency, price.unit_amount, price.interval, price.active) == (
        currency,
        amount,
        spec.interval,
        True,
    )


def _currency_changes(
    services: Services, spec: PlanSpec, currency: str, amount: int, rows: list[PlanPrice]
) -> list[Change]:
    label = f"{spec.code} {currency}"
    text = f"{format_money(amount, currency)} / {spec.interval}"
    active = [row for row in rows if row.active]
    keep: PlanPrice | None = None
    for row in reversed(active):
        if row.unit_amount != amount or row.interval != spec.interval:
            continue
        if row.stripe_price_id is None:
            keep = row  # made before a run died: finish it with the same idempotency key
            break
        try:
            if _matches(
                services.stripe.retrieve_price(row.stripe_price_id), spec, currency, amount
            ):
                keep = row
                break
        except StripeNotFound:
            continue
    found: list[Change] = []
    if keep is None or keep.stripe_price_id is None:
        replaced = [r.stripe_price_id for r in active if r is not keep and r.stripe_price_id]
        detail = text + (f", replaces {', '.join(replaced)}" if replaced else "")
        found.append(
            Change("stripe price", label, "create", detail, _create_price(spec, currency, amount))
        )
    for row in active:
        if row is not keep:
            found.append(_retire_price(spec.code, row))
    return found


def _adopted_row(services: Services, plan: Plan | None, rows: list[PlanPrice]) -> PlanPrice | None:
    """The Stripe price an admin gave the plan through the API, as a row not yet saved: the
    catalog takes it over (keeps it if it is what the file says, retires it otherwise), and
    subscriptions on it keep finding their plan."""
    if plan is None or plan.stripe_price_id is None:
        return None
    if any(row.stripe_price_id == plan.stripe_price_id for row in rows):
        return None
    try:
        price = services.stripe.retrieve_price(plan.stripe_price_id)
    except StripeNotFound:
        return None
    if price.unit_amount is None or price.interval is None:
        return None
    return PlanPrice(
        id=new_id("ppr"),
        plan_id=plan.id,
        currency=price.currency,
        unit_amount=price.unit_amount,
        interval=price.interval,
        stripe_price_id=price.id,
        active=price.active,
        created_at=utcnow(),
    )


def _adopt(code: str, row: PlanPrice) -> Change:
    fields = {
        "id": row.id,
        "currency": row.currency,
        "unit_amount": row.unit_amount,
        "interval": row.interval,
        "stripe_price_id": row.stripe_price_id,
        "active": row.active,
    }

    def run(services: Services) -> None:
        with services.db.transaction() as session:
            plan = _plan(session, code)
            held = select(PlanPrice.id).where(
                PlanPrice.stripe_price_id == fields["stripe_price_id"]
            )
            if session.scalar(held) is None:
                session.add(PlanPrice(plan_id=plan.id, **fields))

    text = f"{format_money(row.unit_amount, row.currency)} / {row.interval}"
    return Change(
        "stripe price",
        f"{code} {row.currency}",
        "adopt",
        f"{row.stripe_price_id} ({text}), set through the API",
        run,
    )


def _create_price(spec: PlanSpec, currency: str, amount: int) -> Callable[[Services], None]:
    def run(services: Services) -> None:
        with services.db.transaction() as session:
            plan = _plan(session, spec.code)
            row = session.scalar(
                select(PlanPrice).where(
                    PlanPrice.plan_id == plan.id,
                    PlanPrice.currency == currency,
                    PlanPrice.unit_amount == amount,
                    PlanPrice.interval == spec.interval,
                    PlanPrice.active.is_(True),
                    PlanPrice.stripe_price_id.is_(None),
                )
            )
            if row is None:
                row = PlanPrice(
                    plan_id=plan.id, currency=currency, unit_amount=amount, interval=spec.interval
                )
                session.add(row)
                session.flush()
            row_id, product_id = row.id, plan.stripe_product_id
        if product_id is None:  # the plan's product change runs first
            raise NotFound(f"Plan {spec.code!r} has no Stripe product yet")
        price = services.stripe.create_recurring_price(
            plan_price_id=row_id,
            plan_code=spec.code,
            product_id=product_id,
            currency=currency,
            unit_amount=amount,
            interval=spec.interval,
        )
        with services.db.transaction() as session:
            row = _row(session, PlanPrice, row_id)
            row.stripe_price_id = price.id
            audit.record(
                session,
                ACTOR,
                "plan.price_create",
                row.plan_id,
                price=price.id,
                currency=currency,
                amount=amount,
            )
            if _checkout_currency(services, spec) == currency:
                _plan(session, spec.code).stripe_price_id = price.id

    return run


def _retire_price(code: str, row: PlanPrice) -> Change:
    row_id, price_id = row.id, row.stripe_price_id
    text = f"{format_money(row.unit_amount, row.currency)} / {row.interval}"

    def run(services: Services) -> None:
        if price_id is not None:
            with suppress(StripeNotFound):  # gone from Stripe: nothing to retire there
                services.stripe.retire_price(price_id, plan_price_id=row_id)
        with services.db.transaction() as session:
            retired = _row(session, PlanPrice, row_id)
            retired.active, retired.retired_at = False, utcnow()
            plan = session.get(Plan, retired.plan_id)
            if plan is not None and price_id is not None and plan.stripe_price_id == price_id:
                plan.stripe_price_id = None
            audit.record(session, ACTOR, "plan.price_retire", retired.plan_id, price=str(price_id))

    return Change(
        "stripe price",
        f"{code} {row.currency}",
        "retire",
        f"{price_id or '(never made)'} ({text}); its subscriptions carry on",
        run,
    )


def _link_checkout_price(code: str, currency: str | None) -> Callable[[Services], None]:
    def run(services: Services) -> None:
        with services.db.transaction() as session:
            plan = _plan(session, code)
            current = None
            if currency is not None:
                current = session.scalar(
                    select(PlanPrice.stripe_price_id)
                    .where(
                        PlanPrice.plan_id == plan.id,
                        PlanPrice.currency == currency,
                        PlanPrice.active.is_(True),
                        PlanPrice.stripe_price_id.is_not(None),
                    )
                    .order_by(PlanPrice.created_at.desc())
                )
            plan.stripe_price_id = current

    return run


def _retired_plan_changes(plan: Plan, rows: dict[str, list[PlanPrice]]) -> list[Change]:
    code = plan.code
    found = [
        Change(
            "plan",
            code,
            "retire",
            "not in the catalog: no new subscriptions",
            _update_plan(code, {"active": False}),
        )
    ]
    for kept in rows.values():
        found += [_retire_price(code, row) for row in kept if row.active]
    return found


# Credit packages and products: Billfold's own rows (paid with PaymentIntents) -------------


def _package_changes(session: Session, specs: list[CreditPackageSpec]) -> list[Change]:
    by_name = {p.name: p for p in session.scalars(select(CreditPackage))}
    found: list[Change] = []
    for spec in specs:
        fields = spec.model_dump()
        package = by_name.get(spec.name)
        if package is None:
            text = f"{spec.credits} credits for {format_money(spec.price, spec.currency)}"
            found.append(
                Change(
                    "credit package",
                    spec.name,
                    "create",
                    text,
                    _save_row(CreditPackage, "credit_package", None, fields),
                )
            )
            continue
        differing = {k: v for k, v in fields.items() if getattr(package, k) != v}
        if differing:
            found.append(
                Change(
                    "credit package",
                    spec.name,
                    "update",
                    _detail(package, differing),
                    _save_row(CreditPackage, "credit_package", package.id, differing),
                )
            )
    declared = {spec.name for spec in specs}
    for package in by_name.values():
        if package.name not in declared and package.active:
            found.append(
                Change(
                    "credit package",
                    package.name,
                    "retire",
                    "not in the catalog",
                    _save_row(CreditPackage, "credit_package", package.id, {"active": False}),
                )
            )
    return found


def _product_changes(session: Session, specs: list[ProductSpec]) -> list[Change]:
    by_name = {p.name: p for p in session.scalars(select(Product))}
    found: list[Change] = []
    for spec in specs:
        fields = spec.model_dump()
        product = by_name.get(spec.name)
        if product is None:
            text = f"{format_money(spec.unit_amount, spec.currency)}, stock {spec.stock}"
            found.append(
                Change(
                    "product",
                    spec.name,
                    "create",
                    text,
                    _save_row(Product, "product", None, fields),
                )
            )
            continue
        fields.pop("stock")  # orders move the stock; the file only starts it
        differing = {k: v for k, v in fields.items() if getattr(product, k) != v}
        if differing:
            found.append(
                Change(
                    "product",
                    spec.name,
                    "update",
                    _detail(product, differing),
                    _save_row(Product, "product", product.id, differing),
                )
            )
    declared = {spec.name for spec in specs}
    for product in by_name.values():
        if product.name not in declared and product.active:
            found.append(
                Change(
                    "product",
                    product.name,
                    "retire",
                    "not in the catalog",
                    _save_row(Product, "product", product.id, {"active": False}),
                )
            )
    return found


def _detail(row: object, differing: dict[str, Any]) -> str:
    return ", ".join(f"{k}: {getattr(row, k)!r} → {v!r}" for k, v in differing.items())


def _save_row(
    model: type[CreditPackage] | type[Product],
    kind: str,
    row_id: str | None,
    fields: dict[str, Any],
) -> Callable[[Services], None]:
    def run(services: Services) -> None:
        with services.db.transaction() as session:
            if row_id is None:
                row: CreditPackage | Product = model(**fields)
                session.add(row)
                session.flush()
                action = "create"
            else:
                row = _row(session, model, row_id)
                for name, value in fields.items():
                    setattr(row, name, value)
                action = "update"
            audit.record(
                session,
                ACTOR,
                f"{kind}.{action}",
                row.id,
                **{k: str(v) for k, v in fields.items() if k != "description"},
            )

    return run


def export(services: Services) -> Catalog:
    """The catalog as it is now: plans with their active prices (a price an admin gave a plan
    through the API is read from Stripe, after the reading transaction closed), credit
    packages and products."""
    with services.db.transaction() as session:
        plans = list(session.scalars(select(Plan).order_by(Plan.created_at)))
        rows = {
            plan.id: [r for kept in _price_rows(session, plan).values() for r in kept if r.active]
            for plan in plans
        }
        packages = [
            CreditPackageSpec(
                name=p.name, credits=p.credits, price=p.price, currency=p.currency, active=p.active
            )
            for p in session.scalars(select(CreditPackage).order_by(CreditPackage.created_at))
        ]
        products = [
            ProductSpec(
                name=p.name,
                description=p.description,
                unit_amount=p.unit_amount,
                currency=p.currency,
                stock=p.stock,
                active=p.active,
            )
            for p in session.scalars(select(Product).order_by(Product.created_at))
        ]
        session.expunge_all()
    specs = [
        PlanSpec(
            code=plan.code,
            name=plan.name,
            interval=plan.interval,
            trial_days=plan.trial_days,
            prices=_active_prices(services, plan, rows[plan.id]),
            features=Features.model_validate(plan.features or {}),
            active=plan.active,
        )
        for plan in plans
    ]
    return Catalog(plans=specs, credit_packages=packages, products=products)


def _active_prices(services: Services, plan: Plan, rows: list[PlanPrice]) -> dict[str, int]:
    prices = {row.currency: row.unit_amount for row in rows}
    if plan.stripe_price_id and all(r.stripe_price_id != plan.stripe_price_id for r in rows):
        price = services.stripe.retrieve_price(plan.stripe_price_id)
        if price.unit_amount is not None:
            prices.setdefault(price.currency, price.unit_amount)
    return prices
