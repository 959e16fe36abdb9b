"""Stripe calls about the catalog: the products and prices that plans sell."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from billfold.stripe_gateway.base import GatewayBase, idempotency_key
from billfold.stripe_gateway.objects import as_dict, id_of


@dataclass(frozen=True)
class StripeProduct:
    id: str
    name: str
    active: bool


@dataclass(frozen=True)
class StripePrice:
    id: str
    active: bool
    currency: str
    unit_amount: int | None
    # None for a one-time price.
    interval: str | None
    product: str | None


def parse_product(resource: Any) -> StripeProduct:
    obj = as_dict(resource)
    name = str(obj.get("name") or "")
    return StripeProduct(id=obj["id"], name=name, active=obj.get("active") is True)


def parse_price(resource: Any) -> StripePrice:
    obj = as_dict(resource)
    recurring = obj.get("recurring") or {}
    amount = obj.get("unit_amount")
    return StripePrice(
        id=obj["id"],
        active=obj.get("active") is True,
        currency=str(obj.get("currency") or ""),
        unit_amount=None if amount is None else int(amount),
        interval=recurring.get("interval"),
        product=id_of(obj.get("product")),
    )


class CatalogCalls(GatewayBase):
    def create_product(self, *, plan_id: str, plan_code: str, name: str) -> StripeProduct:
        """The Stripe product of a plan of ours (one per plan)."""
        metadata = {"billfold_plan": plan_code, "billfold_plan_id": plan_id}
        return self._call(
            "product.create",
            lambda: parse_product(
                self._client.v1.products.create(
                    params={"name": name, "metadata": metadata},
                    options={"idempotency_key": idempotency_key("catalog.product.create", plan_id)},
                )
            ),
            plan_id=plan_id,
        )

    def retrieve_product(self, product_id: str) -> StripeProduct:
        return self._call(
            "product.retrieve",
            lambda: parse_product(self._client.v1.products.retrieve(product_id)),
            product_id=product_id,
        )

    def update_product(
        self, product_id: str, *, plan_id: str, version: int, name: str, active: bool
    ) -> StripeProduct:
        """Set a plan's product's name and whether it is offered. `version` is the plan's
        count of product updates, bumped before each: a key from the content alone would
        make a rename A → B → A within 24 hours replay the first answer and leave B."""
        key = idempotency_key("catalog.product.update", plan_id, f"v{version}")
        return self._call(
            "product.update",
            lambda: parse_product(
                self._client.v1.products.update(
                    product_id,
                    params={"name": name, "active": active},
                    options={"idempotency_key": key},
                )
            ),
            product_id=product_id,
        )

    def create_recurring_price(
        self,
        *,
        plan_price_id: str,
        plan_code: str,
        product_id: str,
        currency: str,
        unit_amount: int,
        interval: str,
    ) -> StripePrice:
        """The Stripe price of our `plan_prices` row (written before, so a retry of a run
        that died makes no second price)."""
        params: dict[str, Any] = {
            "product": product_id,
            "currency": currency,
            "unit_amount": unit_amount,
            "recurring": {"interval": interval},
            "metadata": {"billfold_plan": plan_code, "billfold_plan_price": plan_price_id},
        }
        key = idempotency_key("catalog.price.create", plan_price_id)
        return self._call(
            "price.create",
            lambda: parse_price(
                self._client.v1.prices.create(
                    params=params,  # type: ignore[arg-type]
                    options={"idempotency_key": key},
                )
            ),
            product_id=product_id,
        )

    def retrieve_price(self, price_id: str) -> StripePrice:
        return self._call(
            "price.retrieve",
            lambda: parse_price(self._client.v1.prices.retrieve(price_id)),
            price_id=price_id,
        )

    def retire_price(self, price_id: str, *, plan_price_id: str) -> StripePrice:
        """Retire a price: Stripe never deletes or changes a price that subscriptions may
        use, and subscriptions on it carry on. Once per row: a retired row is never offered
        again (a price back at that amount is a new row)."""
        key = idempotency_key("catalog.price.retire", plan_price_id)
        return self._call(
            "price.update",
            lambda: parse_price(
                self._client.v1.prices.update(
                    price_id, params={"active": False}, options={"idempotency_key": key}
                )
            ),
            price_id=price_id,
        )
