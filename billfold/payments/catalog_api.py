"""HTTP routes for the product catalog (admin-managed) and customers' orders."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from billfold.auth.deps import AdminWorkDep, WorkDep
from billfold.customers.service import acting_customer
from billfold.kit.envelope import ERROR_RESPONSES, Envelope, ok
from billfold.payments import catalog, orders
from billfold.payments.models import OrderStatus
from billfold.payments.schemas import OrderIn, OrderOut, ProductIn, ProductOut, ProductPatch

router = APIRouter(responses=ERROR_RESPONSES)
CustomerQuery = Annotated[str | None, Query(alias="customerId", max_length=40)]


@router.post("/products", status_code=201, tags=["products"])
def create_product(body: ProductIn, work: AdminWorkDep) -> Envelope[ProductOut]:
    fields = catalog.ProductFields(**body.model_dump())
    product = catalog.create_product(work.session, fields, actor=work.caller.actor)
    return ok(ProductOut.model_validate(product))


@router.get("/products", tags=["products"])
def list_products(
    work: WorkDep,
    include_inactive: Annotated[bool, Query(alias="includeInactive")] = False,
) -> Envelope[list[ProductOut]]:
    found = catalog.list_products(
        work.session, include_inactive=include_inactive and work.caller.is_privileged
    )
    return ok([ProductOut.model_validate(p) for p in found])


@router.get("/products/{product_id}", tags=["products"])
def get_product(product_id: str, work: WorkDep) -> Envelope[ProductOut]:
    product = catalog.get_product(
        work.session, product_id, include_inactive=work.caller.is_privileged
    )
    return ok(ProductOut.model_validate(product))


@router.patch("/products/{product_id}", tags=["products"])
def update_product(product_id: str, body: ProductPatch, work: AdminWorkDep) -> Envelope[ProductOut]:
    changes = body.model_dump(exclude_unset=True)
    product = catalog.update_product(work.session, product_id, changes, actor=work.caller.actor)
    return ok(ProductOut.model_validate(product))


@router.delete("/products/{product_id}", tags=["products"], summary="Deactivate a product")
def deactivate_product(product_id: str, work: AdminWorkDep) -> Envelope[ProductOut]:
    product = catalog.update_product(
        work.session, product_id, {"active": False}, actor=work.caller.actor
    )
    return ok(ProductOut.model_validate(product))


@router.post("/orders", status_code=201, tags=["orders"])
def create_order(
    body: OrderIn, work: WorkDep, customer_id: CustomerQuery = None
) -> Envelope[OrderOut]:
    customer = acting_customer(work.session, work.caller, customer_id)
    items = [(item.product_id, item.quantity) for item in body.items]
    return ok(OrderOut.model_validate(orders.create_order(work.session, customer, items)))


@router.get("/orders", tags=["orders"])
def list_orders(
    work: WorkDep,
    customer_id: CustomerQuery = None,
    status: OrderStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Envelope[list[OrderOut]]:
    if work.caller.is_privileged and customer_id is None:
        owner = None
    else:
        owner = acting_customer(work.session, work.caller, customer_id).id
    found = orders.list_orders(work.session, customer_id=owner, status=status, limit=limit)
    return ok([OrderOut.model_validate(o) for o in found])


@router.get("/orders/{order_id}", tags=["orders"])
def get_order(order_id: str, work: WorkDep) -> Envelope[OrderOut]:
    owner = None if work.caller.is_privileged else acting_customer(work.session, work.caller)
    return ok(OrderOut.model_validate(orders.get_order(work.session, owner, order_id)))


@router.post("/orders/{order_id}/cancel", tags=["orders"])
def cancel_order(order_id: str, work: WorkDep) -> Envelope[OrderOut]:
    owner = None if work.caller.is_privileged else acting_customer(work.session, work.caller)
    order = orders.get_order(work.session, owner, order_id)
    canceled = orders.cancel_order(work.session, order, actor=work.caller.actor)
    return ok(OrderOut.model_validate(canceled))
