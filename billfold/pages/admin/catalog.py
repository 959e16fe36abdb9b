"""The console's catalog: products, credit packages and plans — create, edit, (de)activate.

Each form is checked by the API's own input model and saved by the same catalog service as
the API, so the rules (and the audit entries) are the API's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from starlette.datastructures import FormData
from starlette.responses import Response

from billfold.auth.deps import ServicesDep
from billfold.credits import packages
from billfold.credits.schemas import PackageIn, PackagePatch
from billfold.kit.errors import BillfoldError
from billfold.pages.admin.forms import json_object, minor_units, whole
from billfold.pages.deps import (
    AdminPageWorkDep,
    FormDep,
    PageAdminDep,
    PagesDep,
    field,
    validated,
)
from billfold.pages.rendering import Pages
from billfold.payments import catalog
from billfold.payments.schemas import ProductIn, ProductPatch
from billfold.subscriptions import plans
from billfold.subscriptions.schemas import PlanIn, PlanPatch

router = APIRouter(include_in_schema=False)
BACK = "/admin/catalog"


@router.get("/admin/catalog")
def show_catalog(
    request: Request, work: AdminPageWorkDep, pages: PagesDep, services: ServicesDep
) -> Response:
    return pages.render(
        request,
        "admin/catalog.html",
        title="Catalog",
        section=BACK,
        products=catalog.list_products(work.session, include_inactive=True),
        packages=packages.list_packages(work.session, include_inactive=True),
        plans=plans.list_plans(work.session, include_inactive=True),
        currency=services.settings.stripe_currency,
    )


@router.post("/admin/catalog/products")
def create_product(
    form: FormDep, work: AdminPageWorkDep, pages: PagesDep, services: ServicesDep
) -> Response:
    def save() -> str:
        currency = field(form, "currency") or services.settings.stripe_currency
        body = validated(ProductIn, {**_product_fields(form, currency), "currency": currency})
        with work.session.begin_nested():
            made = catalog.create_product(
                work.session, catalog.ProductFields(**body.model_dump()), actor=work.caller.actor
            )
            return f"Product {made.name} created."

    return _saved(pages, save)


@router.post("/admin/catalog/products/{product_id}")
def update_product(
    product_id: str, form: FormDep, work: AdminPageWorkDep, pages: PagesDep, services: ServicesDep
) -> Response:
    def save() -> str:
        with work.session.begin_nested():
            product = catalog.get_product(work.session, product_id, include_inactive=True)
            changes = _active_or(form, lambda: _product_fields(form, product.currency))
            body = validated(ProductPatch, changes)
            catalog.update_product(
                work.session,
                product_id,
                body.model_dump(exclude_unset=True),
                actor=work.caller.actor,
            )
            return f"Product {product.name} saved."

    return _saved(pages, save)


@router.post("/admin/catalog/packages")
def create_package(
    form: FormDep, work: AdminPageWorkDep, pages: PagesDep, services: ServicesDep
) -> Response:
    def save() -> str:
        currency = field(form, "currency") or services.settings.stripe_currency
        body = validated(PackageIn, {**_package_fields(form, currency), "currency": currency})
        with work.session.begin_nested():
            made = packages.create_package(
                work.session, **body.model_dump(), actor=work.caller.actor
            )
            return f"Package {made.name} created."

    return _saved(pages, save)


@router.post("/admin/catalog/packages/{package_id}")
def update_package(
    package_id: str, form: FormDep, work: AdminPageWorkDep, pages: PagesDep, services: ServicesDep
) -> Response:
    def save() -> str:
        with work.session.begin_nested():
            package = packages.get_package(work.session, package_id, include_inactive=True)
            changes = _active_or(form, lambda: _package_fields(form, package.currency))
            body = validated(PackagePatch, changes)
            packages.update_package(
                work.session,
                package_id,
                body.model_dump(exclude_unset=True),
                actor=work.caller.actor,
            )
            return f"Package {package.name} saved."

    return _saved(pages, save)


@router.post("/admin/catalog/plans")
def create_plan(
    form: FormDep, caller: PageAdminDep, pages: PagesDep, services: ServicesDep
) -> Response:
    # No page transaction: the price is checked with Stripe, so the service owns its own.
    def save() -> str:
        body = validated(
            PlanIn,
            {
                **_plan_fields(form),
                "code": field(form, "code"),
                "interval": field(form, "interval") or "month",
            },
        )
        made = plans.create_plan(services, body.model_dump(), actor=caller.actor)
        return f"Plan {made.code} created."

    return _saved(pages, save)


@router.post("/admin/catalog/plans/{code}")
def update_plan(
    code: str, form: FormDep, caller: PageAdminDep, pages: PagesDep, services: ServicesDep
) -> Response:
    # No page transaction: a new price is checked with Stripe; the service owns its own.
    def save() -> str:
        body = validated(PlanPatch, _active_or(form, lambda: _plan_fields(form)))
        plans.update_plan(services, code, body.model_dump(exclude_unset=True), actor=caller.actor)
        return f"Plan {code} saved."

    return _saved(pages, save)


def _saved(pages: Pages, save: Callable[[], str]) -> Response:
    """Run the save; back to the catalog with what happened (or what was wrong)."""
    try:
        notice = save()
    except BillfoldError as exc:
        return pages.redirect(BACK, error=exc.message)
    return pages.redirect(BACK, notice=notice)


def _active_or(form: FormData, fields: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A (de)activate button posts only `active`; the edit form posts every field."""
    if "active" in form and "name" not in form:
        return {"active": field(form, "active") == "true"}
    return fields()


def _product_fields(form: FormData, currency: str) -> dict[str, Any]:
    return {
        "name": field(form, "name"),
        "description": field(form, "description") or None,
        "unit_amount": minor_units(field(form, "price"), currency, label="Price"),
        "stock": whole(field(form, "stock"), label="Stock"),
    }


def _package_fields(form: FormData, currency: str) -> dict[str, Any]:
    return {
        "name": field(form, "name"),
        "credits": whole(field(form, "credits"), label="Credits"),
        "price": minor_units(field(form, "price"), currency, label="Price"),
    }


def _plan_fields(form: FormData) -> dict[str, Any]:
    return {
        "name": field(form, "name"),
        "stripe_price_id": field(form, "stripe_price_id") or None,
        "trial_days": whole(field(form, "trial_days") or "0", label="Trial days"),
        "features": json_object(field(form, "features"), label="Features"),
    }
