"""The JSON shapes of products, orders, cards, payments and refunds (money in minor units)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import Field, model_validator

from billfold.kit.envelope import ApiModel, InputModel
from billfold.kit.money import Currency
from billfold.payments.methods import CardView
from billfold.payments.models import OrderStatus, PaymentStatus, Refund, RefundStatus
from billfold.payments.orders import MAX_AMOUNT

# Strict: "12" or 12.0 is a client bug, not a price.
MinorUnits = Annotated[int, Field(strict=True, ge=1, le=MAX_AMOUNT)]
Quantity = Annotated[int, Field(strict=True, ge=1, le=1000)]
StripeId = Annotated[str, Field(min_length=3, max_length=255, pattern=r"^[A-Za-z0-9_]+$")]
OurId = Annotated[str, Field(min_length=3, max_length=40, pattern=r"^[a-z]+_[0-9a-f]{32}$")]


class ProductIn(InputModel):
    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=5000)
    unit_amount: MinorUnits
    currency: Currency = "usd"
    stock: int = Field(strict=True, ge=0, le=1_000_000_000)
    active: bool = True


class ProductPatch(InputModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=5000)
    unit_amount: MinorUnits | None = None
    stock: int | None = Field(default=None, strict=True, ge=0, le=1_000_000_000)
    active: bool | None = None

    @model_validator(mode="after")
    def _required_fields_stay_set(self) -> Self:
        cleared = [
            f
            for f in ("name", "unit_amount", "stock", "active")
            if f in self.model_fields_set and getattr(self, f) is None
        ]
        if cleared:
            raise ValueError(f"{', '.join(cleared)} cannot be null")
        return self


class ProductOut(ApiModel):
    id: str
    name: str
    description: str | None
    unit_amount: int
    currency: str
    stock: int
    active: bool
    created_at: datetime


class OrderItemIn(InputModel):
    product_id: OurId
    quantity: Quantity


class OrderIn(InputModel):
    items: list[OrderItemIn] = Field(min_length=1, max_length=50)


class OrderLineOut(ApiModel):
    product_id: str
    product_name: str
    quantity: int
    unit_amount: int
    amount: int


class OrderOut(ApiModel):
    id: str
    customer_id: str
    status: OrderStatus
    currency: str
    amount_total: int
    payment_id: str | None
    oversold: bool
    lines: list[OrderLineOut]
    created_at: datetime
    paid_at: datetime | None


class CardOut(ApiModel):
    id: str
    type: str
    brand: str | None
    last4: str | None
    exp_month: int | None
    exp_year: int | None
    is_default: bool

    @classmethod
    def of(cls, view: CardView) -> CardOut:
        card = view.card
        return cls(
            id=card.id,
            type=card.type,
            brand=card.brand,
            last4=card.last4,
            exp_month=card.exp_month,
            exp_year=card.exp_year,
            is_default=view.is_default,
        )


class PaymentMethodIn(InputModel):
    payment_method_id: StripeId


class SetupIntentOut(ApiModel):
    setup_intent_id: str
    client_secret: str = Field(serialization_alias="client_secret")


class ConfigOut(ApiModel):
    publishable_key: str | None = Field(serialization_alias="publishable_key")
    currency: str


class IntentIn(InputModel):
    product_id: OurId | None = None
    quantity: Quantity | None = None
    order_id: OurId | None = None
    payment_method_id: StripeId | None = None
    customer_id: OurId | None = None

    @model_validator(mode="after")
    def _one_target(self) -> Self:
        by_product = self.product_id is not None
        if by_product == (self.order_id is not None):
            raise ValueError("give either productId and quantity, or orderId")
        if by_product and self.quantity is None:
            raise ValueError("quantity is required with productId")
        if not by_product and self.quantity is not None:
            raise ValueError("quantity goes with productId, not orderId")
        return self


class IntentOut(ApiModel):
    """Named as the payment guides name them, so Stripe.js code reads naturally."""

    payment_id: str
    order_id: str | None
    status: PaymentStatus
    client_secret: str | None = Field(serialization_alias="client_secret")
    payment_intent_id: str = Field(serialization_alias="payment_intent_id")
    publishable_key: str | None = Field(serialization_alias="publishable_key")
    amount: int
    currency: str
    next_action: dict[str, Any] | None = None
    decline_code: str | None = None


class ConfirmIn(InputModel):
    payment_intent_id: StripeId = Field(alias="payment_intent_id")


class RefundIn(InputModel):
    amount: MinorUnits | None = None
    reason: Literal["duplicate", "fraudulent", "requested_by_customer", "other"] = (
        "requested_by_customer"
    )
    notes: str | None = Field(default=None, max_length=2000)


class RefundOut(ApiModel):
    id: str
    payment_id: str
    stripe_refund_id: str | None
    amount: int
    reason: str | None
    notes: str | None
    status: RefundStatus
    failure: str | None
    created_by: str | None
    created_at: datetime


class RefundListedOut(RefundOut):
    """A refund in the operator's list: with whose payment it was, and its currency."""

    customer_id: str
    currency: str

    @classmethod
    def of(cls, refund: Refund) -> RefundListedOut:
        return cls.model_validate(
            {
                **RefundOut.model_validate(refund).model_dump(),
                "customer_id": refund.payment.customer_id,
                "currency": refund.payment.currency,
            }
        )


class PaymentOut(ApiModel):
    id: str
    customer_id: str
    order_id: str | None
    stripe_payment_intent_id: str | None
    amount: int
    currency: str
    status: PaymentStatus
    decline_code: str | None
    failure_message: str | None
    amount_refunded: int
    required_action: bool
    created_at: datetime
    succeeded_at: datetime | None
    refunds: list[RefundOut]
