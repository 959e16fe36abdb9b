"""Tables of the prepaid-credits wallet: packages, accounts, the ledger, and purchases."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from billfold.kit.db import Base, UTCDateTime, new_id, utcnow


class CreditPackage(Base):
    __tablename__ = "credit_packages"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("cpk"))
    name: Mapped[str] = mapped_column(String(200))
    credits: Mapped[int] = mapped_column(BigInteger)
    price: Mapped[int] = mapped_column(BigInteger)  # minor units of `currency`
    currency: Mapped[str] = mapped_column(String(3))
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CreditAccount(Base):
    """One per customer: the balance (always the sum of the ledger) and auto-recharge."""

    __tablename__ = "credit_accounts"

    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), primary_key=True)
    balance: Mapped[int] = mapped_column(BigInteger, default=0)
    # Ledger entries so far: each entry's number, so the ledger has one order per account.
    entries: Mapped[int] = mapped_column(BigInteger, default=0)

    auto_recharge_enabled: Mapped[bool] = mapped_column(default=False)
    threshold_credits: Mapped[int | None] = mapped_column(BigInteger)
    recharge_package_id: Mapped[str | None] = mapped_column(ForeignKey("credit_packages.id"))
    recharge_credits: Mapped[int | None] = mapped_column(BigInteger)
    recharge_payment_method_id: Mapped[str | None] = mapped_column(String(255))
    # The recharge now under way: at most one, however many debits cross the threshold.
    recharge_in_flight_id: Mapped[str | None] = mapped_column(String(40))
    # Set when a daily cap is reached, so debits below the threshold stop asking until then.
    recharge_paused_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    auto_recharge_disabled_reason: Mapped[str | None] = mapped_column(Text)
    auto_recharge_disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    __table_args__ = (CheckConstraint("balance >= 0", name="balance_not_negative"),)


class EntryKind(StrEnum):
    PURCHASE = "purchase"
    GRANT = "grant"
    CONSUME = "consume"
    REFUND = "refund"
    ADJUSTMENT = "adjustment"


class LedgerEntry(Base):
    """One credit movement; append-only. The account's balance is the sum of these."""

    __tablename__ = "credit_transactions"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("ctx"))
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"))
    entry_no: Mapped[int] = mapped_column(BigInteger)
    amount: Mapped[int] = mapped_column(BigInteger)  # signed: + credits in, - credits out
    balance_after: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[EntryKind] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(500))
    reference_id: Mapped[str | None] = mapped_column(String(255))
    # Unique per account: "consume:<client key>", "purchase:<payment>", "grant:<key>"…
    idempotency_key: Mapped[str] = mapped_column(String(300))
    actor: Mapped[str | None] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)

    __table_args__ = (
        UniqueConstraint("customer_id", "entry_no", name="uq_credit_transactions_entry_no"),
        UniqueConstraint(
            "customer_id", "idempotency_key", name="uq_credit_transactions_idempotency_key"
        ),
    )


class PurchaseKind(StrEnum):
    PURCHASE = "purchase"
    RECHARGE = "recharge"


class PurchaseStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class CreditPurchase(Base):
    """Credits being bought (by the customer, or by auto-recharge) through one payment."""

    __tablename__ = "credit_purchases"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("cpu"))
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    kind: Mapped[PurchaseKind] = mapped_column(String(16))
    package_id: Mapped[str | None] = mapped_column(ForeignKey("credit_packages.id"))
    credits: Mapped[int] = mapped_column(BigInteger)
    payment_id: Mapped[str] = mapped_column(ForeignKey("payments.id"), unique=True)
    payment_method_id: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[PurchaseStatus] = mapped_column(String(16), default=PurchaseStatus.PENDING)
    failure: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    granted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
