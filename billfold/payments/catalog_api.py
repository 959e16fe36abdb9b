"""HTTP routes for the product catalog (admin-managed) and customers' orders."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from billfold.auth.deps import AdminDep, CallerDep, ServicesDep
from billfold.customers.service import acting_customer
from billfold.kit.envelope import ERROR_RESPONSES, Envelope, ok
from billfold.payments import catalog, orders
from billfold.payments.models import OrderStatus
from billfold.payments.schemas import OrderIn, OrderOut, ProductIn, ProductOut, ProductPatch

router = APIRouter(responses=ERROR_RESPONSES)
CustomerQuery = Annotated[str | None, Query(alias="customerId", max_length=40)]


@router.post("/products", status_code=201, tags=["products"])
def create_product(
    body: ProductIn, caller: AdminDep, services: ServicesDep
) -> Envelope[ProductOut]:
    fields = catalog.ProductFields(**body.model_dump())
    with services.db.transaction() as session:
        product = catalog.create_product(session, fields, actor=caller.actor)
        return ok(ProductOut.model_validate(product))


@router.get("/products", tags=["products"])
def list_products(
    caller: CallerDep,
    services: ServicesDep,
    include_inactive: Annotated[bool, Query(alias="includeInactive")] = False,
) -> Envelope[list[ProductOut]]:
    with services.db.transaction() as session:
        found = catalog.list_products(
            session, include_inactive=include_inactive and caller.is_privileged
        )
        return ok([ProductOut.model_validate(p) for p in found])


@router.get("/products/{product_id}", tags=["products"])
def get_product(product_id: str, caller: CallerDep, services: ServicesDep) -> Envelope[ProductOut]:
    with services.db.transaction() as session:
        product = catalog.get_product(session, product_id, include_inactive=caller.is_privileged)
        return ok(ProductOut.model_validate(product))


@router.patch("/products/{product_id}", tags=["products"])
def update_product(
    product_id: str, body: ProductPatch, caller: AdminDep, services: ServicesDep
) -> Envelope[ProductOut]:
    changes = body.model_dump(exclude_unset=True)
    with services.db.transaction() as session:
        product = catalog.update_product(session, product_id, changes, actor=caller.actor)
        return ok(ProductOut.model_validate(product))


@router.delete("/products/{product_id}", tags=["products"], summary="Deactivate a product")
def deactivate_product(
    product_id: str, caller: AdminDep, services: ServicesDep
) -> Envelope[ProductOut]:
    with services.db.transaction() as session:
        product = catalog.update_product(session, product_id, {"active": False}, actor=caller.actor)
        return ok(ProductOut.model_validate(product))


@router.post("/orders", status_code=201, tags=["orders"])
def create_order(
    body: OrderIn, caller: CallerDep, services: ServicesDep, customer_id: CustomerQuery = None
) -> Envelope[OrderOut]:
    with services.db.transaction() as session:
        customer = acting_customer(session, caller, customer_id)
        items = [(item.product_id, item.quantity) for item in body.items]
        return ok(OrderOut.model_validate(orders.create_order(session, customer, items)))


@router.get("/orders", tags=["orders"])
def list_orders(
    caller: CallerDep,
    services: ServicesDep,
    customer_id: CustomerQuery = None,
    status: OrderStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Envelope[list[OrderOut]]:
    with services.db.transaction() as session:
        if caller.is_privileged and customer_id is None:
            owner = None
        else:
            owner = acting_customer(session, caller, customer_id).id
        found = orders.list_orders(session, customer_id=owner, status=status, limit=limit)
        return ok([OrderOut.model_validate(o) for o in found])


@router.get("/orders/{order_id}", tags=["orders"])
def get_order(order_id: str, caller: CallerDep, services: ServicesDep) -> Envelope[OrderOut]:
    with services.db.transaction() as session:
        owner = None if caller.is_privileged else acting_customer(session, caller)
        return ok(OrderOut.model_validate(orders.get_order(session, owner, order_id)))


@router.post("/orders/{order_id}/cancel", tags=["orders"])
def cancel_order(order_id: str, caller: CallerDep, services: ServicesDep) -> Envelope[OrderOut]:
    with services.db.transaction() as session:
        owner = None if caller.is_privileged else acting_customer(session, caller)
        order = orders.get_order(session, owner, order_id)
        return ok(OrderOut.model_validate(orders.cancel_order(session, order, actor=caller.actor)))
