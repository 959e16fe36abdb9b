"""The small, typed views of Stripe objects that the gateway answers, and their builders."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StripeCustomer:
    id: str
    name: str | None
    email: str | None
    metadata: dict[str, str]
    deleted: bool = False


def parse_customer(resource: Any) -> StripeCustomer:
    obj = as_dict(resource)
    deleted = bool(obj.get("deleted", False))
    metadata = obj.get("metadata") or {}
    return StripeCustomer(
        id=obj["id"],
        name=obj.get("name"),
        email=obj.get("email"),
        metadata={str(k): str(v) for k, v in dict(metadata).items()},
        deleted=deleted,
    )


@dataclass(frozen=True)
class StripeCard:
    id: str
    customer: str | None
    brand: str | None
    last4: str | None
    exp_month: int | None
    exp_year: int | None
    type: str = "card"


def parse_card(resource: Any) -> StripeCard:
    obj = as_dict(resource)
    card = obj.get("card") or {}
    customer = obj.get("customer")
    return StripeCard(
        id=obj["id"],
        customer=customer if isinstance(customer, str) or customer is None else customer.get("id"),
        brand=card.get("brand"),
        last4=card.get("last4"),
        exp_month=card.get("exp_month"),
        exp_year=card.get("exp_year"),
        type=obj.get("type", "card"),
    )


@dataclass(frozen=True)
class StripePaymentIntent:
    id: str
    status: str
    amount: int
    currency: str
    customer: str | None
    client_secret: str | None
    metadata: dict[str, str]
    next_action: dict[str, Any] | None
    latest_charge: str | None
    payment_method: str | None
    decline_code: str | None
    failure_message: str | None


def parse_payment_intent(resource: Any) -> StripePaymentIntent:
    obj = as_dict(resource)
    error = obj.get("last_payment_error") or {}
    charge = obj.get("latest_charge")
    method = obj.get("payment_method")
    return StripePaymentIntent(
        id=obj["id"],
        status=obj["status"],
        amount=int(obj["amount"]),
        currency=obj["currency"],
        customer=id_of(obj.get("customer")),
        client_secret=obj.get("client_secret"),
        metadata={str(k): str(v) for k, v in (obj.get("metadata") or {}).items()},
        next_action=obj.get("next_action"),
        latest_charge=id_of(charge),
        payment_method=id_of(method),
        decline_code=error.get("decline_code") or error.get("code"),
        failure_message=error.get("message"),
    )


@dataclass(frozen=True)
class StripeRefund:
    id: str
    amount: int
    status: str
    reason: str | None
    metadata: dict[str, str]


def parse_refund(resource: Any) -> StripeRefund:
    obj = as_dict(resource)
    return StripeRefund(
        id=obj["id"],
        amount=int(obj["amount"]),
        status=obj.get("status") or "succeeded",
        reason=obj.get("reason"),
        metadata={str(k): str(v) for k, v in (obj.get("metadata") or {}).items()},
    )


def as_dict(resource: Any) -> dict[str, Any]:
    return resource.to_dict() if hasattr(resource, "to_dict") else dict(resource)


def id_of(value: Any) -> str | None:
    """Stripe answers an ID, or the object itself when expanded (localstripe always expands)."""
    if value is None or isinstance(value, str):
        return value
    return str(value["id"])


@dataclass(frozen=True)
class StripeSubscription:
    id: str
    customer: str | None
    status: str
    price_id: str | None
    item_id: str | None
    current_period_end: int | None
    cancel_at_period_end: bool
    trial_end: int | None
    canceled_at: int | None
    metadata: dict[str, str]
    ended_at: int | None = None
    # `pause_collection`: how invoices are treated while paused, and when it resumes.
    pause_behavior: str | None = None
    pause_resumes_at: int | None = None
    # The discount in force (a coupon, maybe from a promotion code), as we show it.
    discount: dict[str, Any] | None = None
    # The subscription schedule it is under (a change set for the period end), if any.
    schedule: str | None = None


def _discount(obj: dict[str, Any]) -> dict[str, Any] | None:
    found = obj.get("discount") or next(
        (d for d in obj.get("discounts") or [] if isinstance(d, dict)), None
    )
    if not found or not isinstance(found.get("coupon"), dict):
        return None
    coupon = found["coupon"]
    return {
        "coupon": coupon.get("id"),
        "name": coupon.get("name"),
        "percent_off": coupon.get("percent_off"),
        "amount_off": coupon.get("amount_off"),
        "currency": coupon.get("currency"),
        "duration": coupon.get("duration"),
        "duration_in_months": coupon.get("duration_in_months"),
        "promotion_code": id_of(found.get("promotion_code")),
    }


def parse_subscription(resource: Any) -> StripeSubscription:
    obj = as_dict(resource)
    items = (obj.get("items") or {}).get("data") or [{}]
    item = items[0]
    price = item.get("price") or item.get("plan") or obj.get("plan") or {}
    # Newer API versions keep the period on the item rather than the subscription.
    period_end = obj.get("current_period_end") or item.get("current_period_end")
    pause = obj.get("pause_collection") or {}
    return StripeSubscription(
        id=obj["id"],
        customer=id_of(obj.get("customer")),
        status=obj["status"],
        price_id=price.get("id") if isinstance(price, dict) else price,
        item_id=item.get("id"),
        current_period_end=period_end,
        cancel_at_period_end=bool(obj.get("cancel_at_period_end")),
        trial_end=obj.get("trial_end"),
        canceled_at=obj.get("canceled_at"),
        metadata={str(k): str(v) for k, v in (obj.get("metadata") or {}).items()},
        ended_at=obj.get("ended_at"),
        pause_behavior=pause.get("behavior"),
        pause_resumes_at=pause.get("resumes_at"),
        discount=_discount(obj),
        schedule=id_of(obj.get("schedule")),
    )


@dataclass(frozen=True)
class StripeInvoice:
    id: str
    status: str
    amount_due: int
    currency: str
    attempt_count: int
    hosted_invoice_url: str | None
    subscription: str | None
    customer: str | None = None
    number: str | None = None
    amount_paid: int = 0
    total: int = 0
    discount_amount: int = 0
    billing_reason: str | None = None
    period_start: int | None = None
    period_end: int | None = None
    invoice_pdf: str | None = None
    created: int | None = None
    payment_intent: str | None = None


def parse_invoice(resource: Any) -> StripeInvoice:
    obj = as_dict(resource)
    subscription = obj.get("subscription") or (
        ((obj.get("parent") or {}).get("subscription_details") or {}).get("subscription")
    )
    return StripeInvoice(
        id=obj["id"],
        status=obj["status"],
        amount_due=int(obj.get("amount_due") or 0),
        currency=str(obj.get("currency") or ""),
        attempt_count=int(obj.get("attempt_count") or 0),
        hosted_invoice_url=obj.get("hosted_invoice_url"),
        subscription=id_of(subscription),
        customer=id_of(obj.get("customer")),
        number=obj.get("number"),
        amount_paid=int(obj.get("amount_paid") or 0),
        total=int(obj.get("total") or 0),
        discount_amount=sum(
            int(d.get("amount") or 0) for d in obj.get("total_discount_amounts") or []
        ),
        billing_reason=obj.get("billing_reason"),
        period_start=_service_period(obj)[0],
        period_end=_service_period(obj)[1],
        invoice_pdf=obj.get("invoice_pdf"),
        created=obj.get("created"),
        payment_intent=id_of(obj.get("payment_intent")),
    )


def _service_period(invoice: dict[str, Any]) -> tuple[int | None, int | None]:
    """The period the invoice bills: its subscription line's (Stripe's own `period_start`
    and `period_end` are when items were collected, the period before for a renewal)."""
    for line in (invoice.get("lines") or {}).get("data") or []:
        period = line.get("period") or {}
        if not line.get("proration") and period.get("start"):
            return period.get("start"), period.get("end")
    return invoice.get("period_start"), invoice.get("period_end")


@dataclass(frozen=True)
class StripeInvoiceLine:
    description: str | None
    amount: int
    proration: bool
    period_start: int | None
    period_end: int | None


@dataclass(frozen=True)
class StripeInvoicePreview:
    """An invoice Stripe would make (`create_preview`): what it would charge, and when."""

    total: int
    amount_due: int
    currency: str
    due_at: int | None
    lines: tuple[StripeInvoiceLine, ...]


def parse_invoice_preview(resource: Any) -> StripeInvoicePreview:
    obj = as_dict(resource)
    lines = tuple(
        StripeInvoiceLine(
            description=line.get("description"),
            amount=int(line.get("amount") or 0),
            proration=bool(
                line.get("proration")
                or ((line.get("parent") or {}).get("subscription_item_details") or {}).get(
                    "proration"
                )
            ),
            period_start=(line.get("period") or {}).get("start"),
            period_end=(line.get("period") or {}).get("end"),
        )
        for line in (obj.get("lines") or {}).get("data") or []
    )
    return StripeInvoicePreview(
        total=int(obj.get("total") or 0),
        amount_due=int(obj.get("amount_due") or 0),
        currency=str(obj.get("currency") or ""),
        due_at=obj.get("next_payment_attempt") or obj.get("created"),
        lines=lines,
    )
