"""The JSON shapes of plans, subscriptions and licenses."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, HttpUrl

from billfold.config import ChangeTiming, ProrationBehavior
from billfold.kit.envelope import ApiModel, InputModel, UtcDatetime
from billfold.subscriptions.change_plan import PlanChangePreview
from billfold.subscriptions.licenses import ENTITLED
from billfold.subscriptions.models import Subscription

Code = Field(min_length=1, max_length=50, pattern=r"^[a-z0-9_-]+$")


class PlanIn(InputModel):
    code: str = Code
    name: str = Field(min_length=1, max_length=200)
    stripe_price_id: str | None = Field(default=None, max_length=255, pattern=r"^[A-Za-z0-9_]+$")
    interval: str = Field(default="month", pattern=r"^(day|week|month|year)$")
    trial_days: int = Field(default=0, strict=True, ge=0, le=365)
    features: dict[str, Any] = Field(default_factory=dict)
    active: bool = True


class PlanPatch(InputModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    stripe_price_id: str | None = Field(default=None, max_length=255, pattern=r"^[A-Za-z0-9_]+$")
    trial_days: int | None = Field(default=None, strict=True, ge=0, le=365)
    features: dict[str, Any] | None = None
    active: bool | None = None


class PlanOut(ApiModel):
    id: str
    code: str
    name: str
    stripe_price_id: str | None
    interval: str
    trial_days: int
    features: dict[str, Any]
    active: bool


class DiscountOut(ApiModel):
    coupon: str | None
    name: str | None = None
    percent_off: float | None = None
    amount_off: int | None = None  # minor units of `currency`
    currency: str | None = None
    duration: str | None = None  # once, repeating, forever
    duration_in_months: int | None = None
    promotion_code: str | None = None


class PendingChangeOut(ApiModel):
    """A plan change set for the period end: the plan, and when it starts."""

    plan: str
    effective_at: datetime


class SubscriptionOut(ApiModel):
    id: str
    customer_id: str
    plan: str
    status: str
    trial_ends_at: datetime | None
    current_period_ends_at: datetime | None = Field(serialization_alias="current_period_ends_at")
    cancel_at_period_end: bool = Field(serialization_alias="cancel_at_period_end")
    canceled_at: datetime | None
    pause_behavior: str | None = None
    pause_resumes_at: datetime | None = None
    discount: DiscountOut | None = None
    pending_change: PendingChangeOut | None = None
    features: dict[str, Any]

    @classmethod
    def of(cls, subscription: Subscription) -> SubscriptionOut:
        return cls(
            id=subscription.id,
            customer_id=subscription.customer_id,
            plan=subscription.plan.code,
            status=str(subscription.status),
            trial_ends_at=subscription.trial_ends_at,
            current_period_ends_at=subscription.current_period_ends_at,
            cancel_at_period_end=subscription.cancel_at_period_end,
            canceled_at=subscription.canceled_at,
            pause_behavior=subscription.pause_behavior,
            pause_resumes_at=subscription.pause_resumes_at,
            discount=DiscountOut(**subscription.discount) if subscription.discount else None,
            pending_change=PendingChangeOut(
                plan=subscription.pending_change.to_plan.code,
                effective_at=subscription.pending_change.effective_at,
            )
            if subscription.pending_change
            else None,
            # What the plan allows only while the subscription entitles to it.
            features=subscription.plan.features if subscription.status in ENTITLED else {},
        )


class CheckoutIn(InputModel):
    plan: str = Code
    success_url: HttpUrl
    cancel_url: HttpUrl
    customer_id: str | None = Field(default=None, max_length=40)


class CheckoutOut(ApiModel):
    checkout_url: str = Field(serialization_alias="checkout_url")


class CancelIn(InputModel):
    at_period_end: bool = True
    customer_id: str | None = Field(default=None, max_length=40)


class ResumeIn(InputModel):
    customer_id: str | None = Field(default=None, max_length=40)


class PauseIn(InputModel):
    behavior: Literal["void", "keep_as_draft", "mark_uncollectible"] = "void"
    resumes_at: UtcDatetime | None = None
    customer_id: str | None = Field(default=None, max_length=40)


class ChangePlanIn(InputModel):
    plan: str = Code
    # Default: the SUBSCRIPTION_PRORATION_BEHAVIOR setting.
    proration_behavior: ProrationBehavior | None = None
    # From a preview, so the change charges what it said.
    proration_date: UtcDatetime | None = None
    # `now`, or `period_end` (downgrades only); default: now for upgrades, the
    # SUBSCRIPTION_DOWNGRADE_TIMING setting for downgrades.
    when: ChangeTiming | None = None
    customer_id: str | None = Field(default=None, max_length=40)


class PendingChangeCancelIn(InputModel):
    customer_id: str | None = Field(default=None, max_length=40)


class PreviewLineOut(ApiModel):
    description: str | None
    amount: int
    proration: bool


class PlanChangePreviewOut(ApiModel):
    plan: str
    proration_behavior: str
    proration_date: datetime
    currency: str
    due_now: int
    next_amount: int
    next_at: datetime | None
    lines: list[PreviewLineOut]
    # `now`, or `period_end`: a downgrade waiting for the period end (nothing due now).
    when: str

    @classmethod
    def of(cls, found: PlanChangePreview) -> PlanChangePreviewOut:
        return cls(
            plan=found.plan,
            proration_behavior=found.proration_behavior,
            proration_date=found.proration_date,
            currency=found.currency,
            due_now=found.due_now,
            next_amount=found.next_amount,
            next_at=found.next_at,
            lines=[PreviewLineOut(**vars(line)) for line in found.lines],
            when=str(found.when),
        )


class PortalIn(InputModel):
    return_url: HttpUrl
    customer_id: str | None = Field(default=None, max_length=40)


class PortalOut(ApiModel):
    url: str


class LicenseOut(ApiModel):
    id: str
    token: str
    plan: str
    status: str
    key_id: str
    issued_at: datetime
    expires_at: datetime


class PublicKeyOut(ApiModel):
    key_id: str
    algorithm: str = "EdDSA"
    public_key_pem: str
    jwks_url: str = "/.well-known/jwks.json"


class VerifyIn(InputModel):
    token: str = Field(min_length=10, max_length=10_000)


class VerifyOut(ApiModel):
    valid: bool
    claims: dict[str, Any]
    # A newer license replaced this one (checked online; offline it verifies until `exp`).
    superseded: bool = False


class RevocationsOut(ApiModel):
    revoked: list[str]
    issued_at: datetime
    expires_at: datetime
    # The same list as a JWT signed with the license key (`typ` license-revocations).
    token: str


class InvoiceOut(ApiModel):
    id: str
    customer_id: str
    subscription_id: str | None
    stripe_invoice_id: str
    number: str | None
    status: str
    currency: str
    total: int
    amount_due: int
    amount_paid: int
    discount_amount: int
    billing_reason: str | None
    period_start: datetime | None
    period_end: datetime | None
    hosted_invoice_url: str | None
    invoice_pdf: str | None
    created_at: datetime | None = Field(validation_alias="stripe_created_at")
