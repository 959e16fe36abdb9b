"""The JSON shapes of the credits wallet (credits are whole numbers; money is minor units)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, Self

from pydantic import Field, field_validator, model_validator

from billfold.credits.models import EntryKind, PurchaseKind, PurchaseStatus
from billfold.kit.envelope import ApiModel, InputModel
from billfold.kit.money import Currency
from billfold.payments.orders import MAX_AMOUNT
from billfold.payments.schemas import OurId, StripeId

# Strict: "10" or 10.0 credits is a client bug.
Credits = Annotated[int, Field(strict=True, ge=1, le=10**12)]
Key = Annotated[str, Field(min_length=1, max_length=200)]


class PackageIn(InputModel):
    name: str = Field(min_length=1, max_length=200)
    credits: Credits
    price: int = Field(strict=True, ge=1, le=MAX_AMOUNT)
    currency: Currency = "usd"
    active: bool = True


class PackagePatch(InputModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    credits: Credits | None = None
    price: int | None = Field(default=None, strict=True, ge=1, le=MAX_AMOUNT)
    active: bool | None = None

    @model_validator(mode="after")
    def _no_nulls(self) -> Self:
        if any(getattr(self, f) is None for f in self.model_fields_set):
            raise ValueError("fields cannot be null")
        return self


class PackageOut(ApiModel):
    id: str
    name: str
    credits: int
    price: int
    currency: str
    active: bool


class PurchaseIn(InputModel):
    package_id: OurId | None = None
    # A custom number of credits, priced at CREDITS_UNIT_PRICE each.
    custom_amount: Credits | None = None
    payment_method_id: StripeId | None = None
    save_payment_method: bool = False
    customer_id: OurId | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        if (self.package_id is None) == (self.custom_amount is None):
            raise ValueError("give either packageId or customAmount")
        return self


class PurchaseOut(ApiModel):
    purchase_id: str
    payment_id: str
    kind: PurchaseKind
    status: PurchaseStatus
    credits: int
    amount: int
    currency: str
    balance: int
    client_secret: str | None = Field(serialization_alias="client_secret")
    payment_intent_id: str = Field(serialization_alias="payment_intent_id")
    publishable_key: str | None = Field(serialization_alias="publishable_key")
    next_action: dict[str, object] | None = None


class BalanceOut(ApiModel):
    customer_id: str
    balance: int


class ConsumeIn(InputModel):
    amount: Credits
    idempotency_key: Key
    reason: str | None = Field(default=None, max_length=500)
    customer_id: OurId | None = None


class ConsumeOut(ApiModel):
    transaction_id: str
    amount: int
    balance: int
    idempotency_key: str
    replayed: bool


class GrantIn(InputModel):
    customer_id: OurId
    amount: int = Field(strict=True, ge=-(10**12), le=10**12)
    kind: Literal["grant", "adjustment"] = "grant"
    reason: str = Field(min_length=1, max_length=500)
    idempotency_key: Key

    @field_validator("amount")
    @classmethod
    def _not_zero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("amount cannot be zero")
        return value


class TransactionOut(ApiModel):
    id: str
    entry_no: int
    amount: int
    balance_after: int
    kind: EntryKind
    reason: str | None
    reference_id: str | None
    created_at: datetime


class TransactionsPage(ApiModel):
    transactions: list[TransactionOut]
    next_cursor: int | None


class AutoRechargeIn(InputModel):
    enabled: bool
    threshold_credits: int | None = Field(default=None, strict=True, ge=0, le=10**12)
    recharge_package_id: OurId | None = None
    recharge_credits: Credits | None = None
    payment_method_id: StripeId | None = None


class AutoRechargeOut(ApiModel):
    enabled: bool
    threshold_credits: int | None
    recharge_package_id: str | None
    recharge_credits: int | None
    payment_method_id: str | None
    recharge_in_flight_id: str | None
    disabled_reason: str | None
    disabled_at: datetime | None
    paused_until: datetime | None
