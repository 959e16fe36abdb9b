"""Tables for the catalog, orders, payments, refunds and saved cards (display fields only)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from billfold.kit.db import Base, UTCDateTime, new_id, utcnow


class Product(Base):
    __tablename__ = "products"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("prd"))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    unit_amount: Mapped[int] = mapped_column(BigInteger)  # minor units of `currency`
    currency: Mapped[str] = mapped_column(String(3))
    stock: Mapped[int]
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class OrderStatus(StrEnum):
    PENDING = "pending"
    PAID = "paid"
    CANCELED = "canceled"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"


class Order(Base):
    __tablename__ = "orders"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("ord"))
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    status: Mapped[OrderStatus] = mapped_column(String(24), default=OrderStatus.PENDING)
    currency: Mapped[str] = mapped_column(String(3))
    amount_total: Mapped[int] = mapped_column(BigInteger)
    # The payment now collecting this order; replaced only when that one was canceled.
    payment_id: Mapped[str | None] = mapped_column(String(40))
    # Paid after the last units sold elsewhere: needs a person (restock or refund).
    oversold: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    canceled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    lines: Mapped[list[OrderLine]] = relationship(
        back_populates="order", lazy="selectin", order_by="OrderLine.position"
    )


class OrderLine(Base):
    __tablename__ = "order_lines"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("oln"))
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), index=True)
    position: Mapped[int]
    product_id: Mapped[str] = mapped_column(ForeignKey("products.id"))
    product_name: Mapped[str] = mapped_column(String(200))
    quantity: Mapped[int]
    unit_amount: Mapped[int] = mapped_column(BigInteger)
    amount: Mapped[int] = mapped_column(BigInteger)

    order: Mapped[Order] = relationship(back_populates="lines")


class PaymentStatus(StrEnum):
    """Stripe's PaymentIntent states, plus `creating` before the intent exists and `failed`
    when it never will."""

    CREATING = "creating"
    REQUIRES_PAYMENT_METHOD = "requires_payment_method"
    REQUIRES_CONFIRMATION = "requires_confirmation"
    REQUIRES_ACTION = "requires_action"
    PROCESSING = "processing"
    REQUIRES_CAPTURE = "requires_capture"
    SUCCEEDED = "succeeded"
    CANCELED = "canceled"
    # Ours only: Stripe refused to create the intent, or none was ever made (the janitor
    # found none). A success that still turns up is recorded all the same.
    FAILED = "failed"


TERMINAL = frozenset({PaymentStatus.SUCCEEDED, PaymentStatus.CANCELED, PaymentStatus.FAILED})


class Payment(Base):
    __tablename__ = "payments"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("pay"))
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"))
    order_id: Mapped[str | None] = mapped_column(ForeignKey("orders.id"), index=True)
    # What it pays for ("order", "credits"): decides what success and refunds do.
    purpose: Mapped[str] = mapped_column(String(16), default="order", server_default="order")
    stripe_payment_intent_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[PaymentStatus] = mapped_column(String(32), default=PaymentStatus.CREATING)
    decline_code: Mapped[str | None] = mapped_column(String(100))
    failure_message: Mapped[str | None] = mapped_column(Text)
    payment_method_id: Mapped[str | None] = mapped_column(String(255))
    # Refunded or being refunded: reserved before Stripe is asked, so two refunds can never
    # together exceed the payment.
    amount_refunded: Mapped[int] = mapped_column(BigInteger, default=0)
    confirm_attempts: Mapped[int] = mapped_column(default=0)
    required_action: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    succeeded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    refunds: Mapped[list[Refund]] = relationship(
        back_populates="payment", lazy="selectin", order_by="Refund.created_at"
    )

    __table_args__ = (Index("ix_payments_customer_created", "customer_id", "created_at"),)


class RefundStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


class Refund(Base):
    __tablename__ = "refunds"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("ref"))
    payment_id: Mapped[str] = mapped_column(ForeignKey("payments.id"), index=True)
    stripe_refund_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str | None] = mapped_column(String(40))
    notes: Mapped[str | None] = mapped_column(Text)
    status: Mapped[RefundStatus] = mapped_column(String(16), default=RefundStatus.PENDING)
    failure: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str | None] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    payment: Mapped[Payment] = relationship(back_populates="refunds")


class SavedCard(Base):
    """A card saved in Stripe: its ID and what a page shows, never the card itself."""

    __tablename__ = "payment_methods"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("pmt"))
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    stripe_payment_method_id: Mapped[str] = mapped_column(String(255), unique=True)
    brand: Mapped[str | None] = mapped_column(String(40))
    last4: Mapped[str | None] = mapped_column(String(4))
    exp_month: Mapped[int | None]
    exp_year: Mapped[int | None]
    attached: Mapped[bool] = mapped_column(default=True)
    # Each attach of this card through us: keeps idempotency keys distinct when a card is
    # detached and attached again.
    attach_count: Mapped[int] = mapped_column(default=0)
    # When it was last attached through us or Stripe (the dashboard counts attachments).
    attached_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
