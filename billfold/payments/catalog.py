"""The product catalog: admin-managed products with a price in minor units and a stock."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from billfold.kit import audit
from billfold.kit.errors import NotFound
from billfold.payments.models import Product


@dataclass(frozen=True)
class ProductFields:
    name: str
    unit_amount: int
    currency: str
    stock: int
    description: str | None = None
    active: bool = True


def create_product(session: Session, fields: ProductFields, *, actor: str) -> Product:
    product = Product(**vars(fields))
    session.add(product)
    session.flush()
    audit.record(session, actor, "product.create", product.id, **_audited(vars(fields)))
    return product


def update_product(
    session: Session, product_id: str, changes: dict[str, Any], *, actor: str
) -> Product:
    product = get_product(session, product_id, include_inactive=True)
    for field, value in changes.items():
        setattr(product, field, value)
    session.flush()
    audit.record(session, actor, "product.update", product.id, **_audited(changes))
    return product


def get_product(session: Session, product_id: str, *, include_inactive: bool = False) -> Product:
    product = session.get(Product, product_id)
    if product is None or (not product.active and not include_inactive):
        raise NotFound("No such product")
    return product


def list_products(session: Session, *, include_inactive: bool = False) -> list[Product]:
    query = select(Product).order_by(Product.created_at)
    if not include_inactive:
        query = query.where(Product.active.is_(True))
    return list(session.scalars(query))


def _audited(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if k != "description"}
