"""Credit packages: admin-managed bundles of credits at a price."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from billfold.credits.models import CreditPackage
from billfold.credits.rules import PackageOption
from billfold.kit import audit
from billfold.kit.errors import NotFound


def create_package(
    session: Session,
    *,
    name: str,
    credits: int,
    price: int,
    currency: str,
    active: bool,
    actor: str,
) -> CreditPackage:
    package = CreditPackage(
        name=name, credits=credits, price=price, currency=currency, active=active
    )
    session.add(package)
    session.flush()
    audit.record(session, actor, "credit_package.create", package.id, credits=credits, price=price)
    return package


def update_package(
    session: Session, package_id: str, changes: dict[str, Any], *, actor: str
) -> CreditPackage:
    package = get_package(session, package_id, include_inactive=True)
    for field, value in changes.items():
        setattr(package, field, value)
    session.flush()
    audit.record(session, actor, "credit_package.update", package.id, **changes)
    return package


def get_package(
    session: Session, package_id: str, *, include_inactive: bool = False
) -> CreditPackage:
    package = session.get(CreditPackage, package_id)
    if package is None or (not package.active and not include_inactive):
        raise NotFound("No such credit package")
    return package


def list_packages(session: Session, *, include_inactive: bool = False) -> list[CreditPackage]:
    query = select(CreditPackage).order_by(CreditPackage.credits)
    if not include_inactive:
        query = query.where(CreditPackage.active.is_(True))
    return list(session.scalars(query))


def options(session: Session, currency: str) -> list[PackageOption]:
    return [
        PackageOption(p.id, p.credits, p.price)
        for p in list_packages(session)
        if p.currency == currency
    ]
