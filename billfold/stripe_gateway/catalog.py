"""Stripe calls about the catalog: the products and prices that plans sell."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from billfold.stripe_gateway.base import GatewayBase
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
    def create_product(self, *, key: str, name: str, metadata: dict[str, str]) -> StripeProduct:
        return self._call(
            "product.create",
            lambda: parse_product(
                self._client.v1.products.create(
                    params={"name": name, "metadata": metadata},
                    options={"idempotency_key": key},
                )
            ),
        )

    def retrieve_product(self, product_id: str) -> StripeProduct:
        return self._call(
            "product.retrieve",
            lambda: parse_product(self._client.v1.products.retrieve(product_id)),
            product_id=product_id,
        )

    def update_product(
        self, product_id: str, *, key: str, name: str, active: bool
    ) -> StripeProduct:
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
        key: str,
        product_id: str,
        currency: str,
        unit_amount: int,
        interval: str,
        metadata: dict[str, str],
    ) -> StripePrice:
        params: dict[str, Any] = {
            "product": product_id,
            "currency": currency,
            "unit_amount": unit_amount,
            "recurring": {"interval": interval},
            "metadata": metadata,
        }
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

    def set_price_active(self, price_id: str, *, key: str, active: bool) -> StripePrice:
        """Retire a price (or offer it again): Stripe never deletes or changes a price that
        subscriptions may use, and subscriptions on it carry on."""
        return self._call(
            "price.update",
            lambda: parse_price(
                self._client.v1.prices.update(
                    price_id, params={"active": active}, options={"idempotency_key": key}
                )
            ),
            price_id=price_id,
        )
