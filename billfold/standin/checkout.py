"""Checkout Sessions in the stand-in: the API (create, retrieve, list, expire, line items)
and what paying on the hosted page does (`pay`), in subscription and payment modes.

Paying with a Stripe test card creates the payment method, the customer if there was
none, the subscription and its first invoice (or the payment), completes the session and
sends `checkout.session.completed`, as Stripe does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from billfold.standin import web
from billfold.standin.billing import emit, needs_authentication
from billfold.standin.discounts import redeem

EXPIRES_AFTER_SECONDS = 24 * 3600
MODES = ("subscription", "payment")


class CheckoutError(Exception):
    """What the hosted page shows when a card cannot pay (the session stays open)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.message, self.code = message, code


@dataclass(frozen=True)
class NeedsAuthentication:
    """The card needs 3-D Secure first: the page asks, then calls `pay` again."""

    payment_method: str


@dataclass(frozen=True)
class Line:
    price: str | None
    description: str
    unit_amount: int
    currency: str
    quantity: int
    recurring: dict[str, Any] | None


def apply() -> None:
    from localstripe import resources as r
    from localstripe.errors import UserError

    class CheckoutSession(r.StripeObject):  # type: ignore[misc]  # localstripe is untyped
        object = "checkout.session"
        _id_prefix = "cs_test_"

        def __init__(
            self,
            mode: Any = None,
            line_items: Any = None,
            success_url: Any = None,
            cancel_url: Any = None,
            customer: Any = None,
            customer_email: Any = None,
            client_reference_id: Any = None,
            metadata: Any = None,
            subscription_data: Any = None,
            payment_intent_data: Any = None,
            allow_promotion_codes: Any = None,
            payment_method_types: Any = None,
            expires_at: Any = None,
            customer_creation: Any = None,
            locale: Any = None,
            **unknown: Any,
        ) -> None:
            if unknown:
                raise UserError(
                    400,
                    f"Received unknown parameter: {sorted(unknown)[0]}",
                    {"param": sorted(unknown)[0]},
                )
            if mode not in MODES:
                raise UserError(
                    400, f"Invalid mode: must be one of {', '.join(MODES)}", {"param": "mode"}
                )
            if not isinstance(success_url, str) or not success_url.startswith(
                ("http://", "https://")
            ):
                raise UserError(400, "success_url must be an http(s) URL", {"param": "success_url"})
            if cancel_url is not None and not _is_url(cancel_url):
                raise UserError(400, "cancel_url must be an http(s) URL", {"param": "cancel_url"})
            if customer is not None and customer_email is not None:
                raise UserError(
                    400, "Pass customer or customer_email, not both", {"param": "customer_email"}
                )
            if customer is not None:
                r.Customer._api_retrieve(customer)
            if metadata is not None and not isinstance(metadata, dict):
                raise UserError(400, "Invalid metadata", {"param": "metadata"})
            lines = _lines(r, UserError, line_items, mode)
            subscription_data = subscription_data or {}
            trial_days = r.try_convert_to_int(subscription_data.get("trial_period_days"))
            if trial_days is not None and (not isinstance(trial_days, int) or trial_days < 1):
                raise UserError(
                    400,
                    "Invalid trial_period_days",
                    {"param": "subscription_data[trial_period_days]"},
                )
            # All checks done.
            super().__init__()
            self.mode = mode
            self.status = "open"
            self.payment_status = "unpaid"
            self.customer = customer
            self.customer_email = customer_email
            self.customer_details = None
            self.client_reference_id = client_reference_id
            self.metadata = metadata or {}
            self.success_url = success_url
            self.cancel_url = cancel_url
            self.allow_promotion_codes = r.try_convert_to_bool(allow_promotion_codes)
            self.payment_method_types = payment_method_types or ["card"]
            self.currency = lines[0].currency
            self.amount_subtotal = sum(line.unit_amount * line.quantity for line in lines)
            self.amount_total = self.amount_subtotal
            self.expires_at = (
                r.try_convert_to_int(expires_at) or self.created + EXPIRES_AFTER_SECONDS
            )
            self.subscription = None
            self.payment_intent = None
            self.invoice = None
            self.setup_intent = None
            self.locale = locale
            self.ui_mode = "hosted"
            self._lines = lines
            self._subscription_data = subscription_data
            self._trial_days = trial_days
            self._payment_intent_data = payment_intent_data or {}

        @property
        def url(self) -> str | None:
            return f"{web.public_url}/checkout/{self.id}" if self.status == "open" else None

        @classmethod
        def _api_update(cls, id: str, **data: Any) -> Any:
            raise UserError(405, "Checkout Sessions cannot be updated")

        @classmethod
        def _api_expire(cls, id: str, **_: Any) -> Any:
            session = cls._api_retrieve(id)
            if session.status != "open":
                raise UserError(
                    400, f"Only open sessions can be expired; this one is {session.status}"
                )
            session.status = "expired"
            emit("checkout.session.expired", session)
            return session

        @classmethod
        def _api_line_items(cls, id: str, **_: Any) -> Any:
            session = cls._api_retrieve(id)
            listed = r.List(f"/v1/checkout/sessions/{id}/line_items")
            listed._list = [_LineItem(line) for line in session._lines]
            return listed

        @classmethod
        def _api_list_all(
            cls, url: str, customer: Any = None, subscription: Any = None, **rest: Any
        ) -> Any:
            listed = super()._api_list_all(url, **rest)
            if customer is not None:
                listed._list = [s for s in listed._list if s.customer == customer]
            if subscription is not None:
                listed._list = [s for s in listed._list if s.subscription == subscription]
            return listed

    class _LineItem:
        def __init__(self, line: Line) -> None:
            self.line = line

        def _export(self, expand: Any = None) -> dict[str, Any]:
            line = self.line
            return {
                "object": "item",
                "description": line.description,
                "quantity": line.quantity,
                "currency": line.currency,
                "amount_subtotal": line.unit_amount * line.quantity,
                "amount_total": line.unit_amount * line.quantity,
                "price": {
                    "id": line.price,
                    "unit_amount": line.unit_amount,
                    "recurring": line.recurring,
                },
            }

    global _Session
    _Session = CheckoutSession
    base = "/v1/checkout/sessions"
    web.api("POST", base, lambda **data: CheckoutSession._api_create(**data))
    web.api("GET", base, lambda **q: CheckoutSession._api_list_all(base, **q))
    web.api("GET", base + "/{id}", lambda id, **_: CheckoutSession._api_retrieve(id))
    web.api("POST", base + "/{id}/expire", CheckoutSession._api_expire)
    web.api("GET", base + "/{id}/line_items", CheckoutSession._api_line_items)


_Session: Any = None


def session(id: str) -> Any:
    return _Session._api_retrieve(id)


def _is_url(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("http://", "https://"))


def _lines(r: Any, user_error: Any, line_items: Any, mode: str) -> list[Line]:
    if not isinstance(line_items, list) or not line_items:
        raise user_error(400, "line_items is required", {"param": "line_items"})
    lines = []
    for index, item in enumerate(line_items):
        param = f"line_items[{index}]"
        quantity = r.try_convert_to_int(item.get("quantity", 1))
        if not isinstance(quantity, int) or quantity < 1:
            raise user_error(400, "Invalid quantity", {"param": param + "[quantity]"})
        if item.get("price"):
            plan = r.Plan._api_retrieve(item["price"])
            recurring = (
                {"interval": plan.interval, "interval_count": plan.interval_count}
                if plan.interval
                else None
            )
            lines.append(
                Line(
                    plan.id,
                    plan.nickname or plan.name,
                    plan.amount,
                    plan.currency,
                    quantity,
                    recurring,
                )
            )
        elif isinstance(item.get("price_data"), dict):
            data = item["price_data"]
            amount = r.try_convert_to_int(data.get("unit_amount"))
            if not isinstance(amount, int) or amount < 0 or not data.get("currency"):
                raise user_error(400, "Invalid price_data", {"param": param + "[price_data]"})
            name = (data.get("product_data") or {}).get("name") or "Item"
            recurring = data.get("recurring")
            lines.append(Line(None, name, amount, data["currency"], quantity, recurring))
        else:
            raise user_error(400, "Each line item needs a price or price_data", {"param": param})
    recurring_lines = [line for line in lines if line.recurring]
    if mode == "subscription" and not recurring_lines:
        raise user_error(
            400, "A subscription checkout needs a recurring price", {"param": "line_items"}
        )
    if mode == "subscription" and any(line.price is None for line in lines):
        raise user_error(
            400, "The stand-in's subscription checkout needs price IDs", {"param": "line_items"}
        )
    if mode == "payment" and recurring_lines:
        raise user_error(
            400, "A payment checkout takes one-time prices only", {"param": "line_items"}
        )
    if len({line.currency for line in lines}) != 1:
        raise user_error(400, "All line items must share a currency", {"param": "line_items"})
    return lines


def new_card(number: str, exp: str, cvc: str) -> Any:
    """A card PaymentMethod from what the page's form says (``MM/YY`` or ``MM/YYYY``)."""
    from localstripe import resources as r
    from localstripe.errors import UserError

    digits = "".join(number.split())
    month, _, year = (part.strip() for part in exp.partition("/"))
    if not digits.isdigit() or not 13 <= len(digits) <= 19:
        raise CheckoutError("Your card number is invalid.", "invalid_number")
    if not (month.isdigit() and year.isdigit()):
        raise CheckoutError("Your card's expiration date is incomplete.", "invalid_expiry")
    if not cvc.strip().isdigit() or len(cvc.strip()) not in (3, 4):
        raise CheckoutError("Your card's security code is incomplete.", "invalid_cvc")
    try:
        card = {
            "number": digits,
            "exp_month": month.strip(),
            "exp_year": year.strip(),
            "cvc": cvc.strip(),
        }
        return r.PaymentMethod(type="card", card=card)
    except UserError as exc:
        message = exc.body["error"].get("message") or "Your card details are invalid."
        raise CheckoutError(message, exc.body["error"].get("code") or "invalid_card") from exc


def pay(
    session_id: str, *, card: dict[str, str] | None, authenticated: str | None, email: str | None
) -> Any:
    """What the Pay button does; answers the completed session, `NeedsAuthentication`, or
    raises `CheckoutError` (nothing in Stripe changed but a stray payment method)."""
    from localstripe import resources as r

    cs = session(session_id)
    if cs.status != "open":
        raise CheckoutError(f"This Checkout Session is {cs.status}.", "session_not_open")
    if int(time.time()) > cs.expires_at:
        cs.status = "expired"
        emit("checkout.session.expired", cs)
        raise CheckoutError("This Checkout Session has expired.", "session_expired")
    code = (card or {}).get("promotion_code", "").strip()
    if code:
        if not cs.allow_promotion_codes:
            raise CheckoutError("Promotion codes are not accepted here.", "promotion_code_refused")
        cs._discount = redeem(code)
        if cs._discount is None:
            raise CheckoutError("This code is invalid.", "promotion_code_invalid")
    if authenticated:
        pm = r.PaymentMethod._api_retrieve(authenticated)
        if pm.customer not in (None, cs.customer):
            raise CheckoutError("This card cannot be used here.", "payment_method_unexpected")
        pm._authenticated_once = True
        pm._set_up_for_off_session = True
    else:
        assert card is not None
        pm = new_card(card.get("number", ""), card.get("exp", ""), card.get("cvc", ""))
        if pm._attaching_is_declined() or pm._charging_is_declined():
            raise _declined(pm)
        if needs_authentication(pm, off_session=False):
            return NeedsAuthentication(pm.id)
    if cs.customer is None:
        address = email or cs.customer_email
        if not address:
            raise CheckoutError("Your email is required.", "email_required")
        cs.customer = r.Customer(email=address).id
    customer = r.Customer._api_retrieve(cs.customer)
    if cs.mode == "subscription":
        _subscribe(r, cs, customer, pm)
    else:
        _pay_once(r, cs, customer, pm)
    cs.status = "complete"
    cs.customer_details = {"email": customer.email, "name": customer.name}
    emit("checkout.session.completed", cs)
    return cs


def _declined(pm: Any) -> CheckoutError:
    from billfold.standin.fidelity import DECLINE_CODES

    _, reason = DECLINE_CODES.get(pm._card_number, ("card_declined", "generic_decline"))
    messages = {
        "insufficient_funds": "Your card has insufficient funds.",
        "expired_card": "Your card has expired.",
        "incorrect_cvc": "Your card's security code is incorrect.",
        "processing_error": "An error occurred while processing your card. Try again.",
    }
    return CheckoutError(messages.get(reason, "Your card was declined."), reason)


def _subscribe(r: Any, cs: Any, customer: Any, pm: Any) -> None:
    pm.customer = customer.id  # attached: sends payment_method.attached
    # As Stripe's Checkout: the card becomes the subscription's default, not the customer's.
    data = cs._subscription_data
    params: dict[str, Any] = {
        "customer": customer.id,
        "items": [{"plan": line.price, "quantity": line.quantity} for line in cs._lines],
        "metadata": dict(data.get("metadata") or {}),
        "default_payment_method": pm.id,
    }
    if cs._trial_days:
        params["trial_period_days"] = cs._trial_days
    if getattr(cs, "_discount", None):
        params["_discount"] = cs._discount
    sub = r.Subscription(**params)
    pm._authenticated_once = False  # a trial charged nothing: the next charge asks again
    cs.subscription = sub.id
    cs.invoice = sub.latest_invoice
    cs.payment_status = "no_payment_required" if cs._trial_days else "paid"
    if sub.status not in ("active", "trialing"):
        # Checked before, so only a card that changed its mind gets here; Stripe leaves
        # nothing behind either.
        sub.status = "incomplete_expired"
        raise _declined(pm)


def _pay_once(r: Any, cs: Any, customer: Any, pm: Any) -> None:
    data = cs._payment_intent_data
    pi = r.PaymentIntent(
        amount=cs.amount_total,
        currency=cs.currency,
        customer=customer.id,
        payment_method=pm.id,
        metadata=dict(data.get("metadata") or cs.metadata),
    )
    pi.setup_future_usage = data.get("setup_future_usage")
    pi.description = data.get("description")
    pi.receipt_email = data.get("receipt_email")
    failed: list[bool] = []
    pi._create_charge(on_failure_now=lambda: failed.append(True))
    if failed:
        emit("payment_intent.payment_failed", pi)
        raise _declined(pm)
    cs.payment_intent = pi.id
    cs.payment_status = "paid"
