"""Closes a few gaps between localstripe and real Stripe, inside the stand-in process only.

localstripe refuses some parameters real Stripe accepts and never declines the usual test
cards at charge time. `billfold dev` and the tests want Stripe's behaviour, so the stand-in
launcher applies these patches to localstripe before serving (never to Billfold itself):

- PaymentIntents accept `receipt_email`, `description`, `automatic_payment_methods` and
  `setup_future_usage`, and take a new payment method after a decline; they can be listed
  by `customer`; off-session, a card that needs 3-D Secure fails `authentication_required`.
  Refunds accept `reason`, and an intent never charged lists no refunds (not a 500).
- Stripe's decline test cards (…0002 generic, …9995 insufficient funds, …9987 lost, …9979
  stolen, …0069 expired, …0127 incorrect CVC, …0119 processing error) decline at charge
  time with their `decline_code`, as in Stripe's testing docs; setting one up for later
  (a SetupIntent, as the pages' Stripe.js does) is declined with its `decline_code` too.
- A refund sends `charge.refunded`; attaching and detaching a PaymentMethod send
  `payment_method.attached|detached`.
- Cards report their brand from the number (Visa, Mastercard, Amex, Discover, JCB, Diners,
  UnionPay); 15-digit Amex numbers and 4-digit CVCs are accepted; Stripe's `pm_card_*`
  test PaymentMethod IDs (mastercard, amex, discover, authenticationRequired…) work.
- An empty metadata value removes that key, and an empty `phone` unsets a customer's phone,
  as in Stripe's API (localstripe kept the empty strings).
- Cancelling a PaymentIntent sends `payment_intent.canceled` (with `cancellation_reason`);
  one with `setup_future_usage` saves its card to the customer when it succeeds.

Subscriptions, Checkout and the billing portal live in `billing`, `checkout` and `portal`.
"""

from __future__ import annotations

import time
from typing import Any

DECLINE_CODES = {
    "4000000000000002": ("card_declined", "generic_decline"),
    "4000000000009995": ("card_declined", "insufficient_funds"),
    "4000000000009987": ("card_declined", "lost_card"),
    "4000000000009979": ("card_declined", "stolen_card"),
    "4000000000000069": ("expired_card", "expired_card"),
    "4000000000000127": ("incorrect_cvc", "incorrect_cvc"),
    "4000000000000119": ("processing_error", "processing_error"),
    "4000000000000341": ("card_declined", "generic_decline"),
}
_PI_EXTRA = ("receipt_email", "description", "automatic_payment_methods", "setup_future_usage")


def apply() -> None:
    from localstripe import resources as r
    from localstripe.errors import UserError

    pi_init = r.PaymentIntent.__init__

    def payment_intent_init(self: Any, *args: Any, **kwargs: Any) -> None:
        extra = {k: kwargs.pop(k) for k in _PI_EXTRA if k in kwargs}
        if kwargs.get("payment_method") in TEST_PAYMENT_METHODS:  # a new card each time
            kwargs["payment_method"] = r.PaymentMethod._api_retrieve(kwargs["payment_method"]).id
        pi_init(self, *args, **kwargs)
        self.receipt_email = extra.get("receipt_email")
        self.description = extra.get("description")
        self.setup_future_usage = extra.get("setup_future_usage")

    r.PaymentIntent.__init__ = payment_intent_init
    pi_update = r.PaymentIntent._api_update.__func__

    def payment_intent_update(cls: Any, id: str, /, **data: Any) -> Any:
        # A new payment method after a decline starts a new attempt, as in Stripe.
        if "payment_method" in data:
            intent = r.PaymentIntent._api_retrieve(id)
            failed = intent.latest_charge is not None and intent.latest_charge.status == "failed"
            if failed:
                intent.latest_charge = None
        return pi_update(cls, id, **data)

    r.PaymentIntent._api_update = classmethod(payment_intent_update)
    pi_create = r.PaymentIntent._api_create.__func__

    def payment_intent_create(cls: Any, /, **data: Any) -> Any:
        # Off-session, a card that needs 3-D Secure fails with `authentication_required`.
        off_session = str(data.get("off_session", "")).lower() == "true"
        confirm = str(data.get("confirm", "")).lower() == "true"
        method = data.get("payment_method")
        needs_auth = bool(
            off_session
            and confirm
            and method
            and r.PaymentMethod._api_retrieve(method)._requires_authentication()
        )
        if needs_auth:
            unconfirmed = {k: v for k, v in data.items() if k not in ("confirm", "off_session")}
            intent = pi_create(cls, **unconfirmed)
            intent._offsession_error = {
                "type": "card_error",
                "code": "authentication_required",
                "decline_code": "authentication_required",
                "message": "This payment requires authentication by the customer.",
            }
            intent.payment_method = None
            r.schedule_webhook(r.Event("payment_intent.payment_failed", intent))
            raise UserError(
                402,
                intent._offsession_error["message"],
                {**intent._offsession_error, "payment_intent": {"id": intent.id}},
            )
        return pi_create(cls, **data)

    r.PaymentIntent._api_create = classmethod(payment_intent_create)
    pi_list = r.PaymentIntent._api_list_all.__func__

    def payment_intent_list(cls: Any, url: str, /, customer: str | None = None, **data: Any) -> Any:
        listed = pi_list(cls, url, **data)
        if customer is not None:
            listed._list = [pi for pi in listed._list if pi.customer == customer]
        return listed

    r.PaymentIntent._api_list_all = classmethod(payment_intent_list)

    def charging_is_declined(self: Any) -> bool:
        return self.type == "card" and self._card_number in DECLINE_CODES

    r.PaymentMethod._charging_is_declined = charging_is_declined

    def set_auth_failure(self: Any) -> None:
        pm = r.PaymentMethod._api_retrieve(self.payment_method)
        code, decline = DECLINE_CODES.get(
            getattr(pm, "_card_number", ""), ("card_declined", "generic_decline")
        )
        self.status = "failed"
        self.failure_code = code
        self.failure_message = "Your card was declined."
        self.outcome = {"type": "issuer_declined", "reason": decline}
        self._decline_code = decline

    r.Charge._set_auth_failure = set_auth_failure

    def raise_failure(self: Any) -> None:
        raise UserError(
            402,
            self.failure_message,
            {
                "type": "card_error",
                "code": self.failure_code,
                "decline_code": getattr(self, "_decline_code", "generic_decline"),
                "charge": self.id,
                "payment_intent": {"id": self.payment_intent} if self.payment_intent else None,
            },
        )

    r.Charge._raise_failure = raise_failure

    last_error = r.PaymentIntent.last_payment_error

    def last_payment_error(self: Any) -> Any:
        if getattr(self, "_offsession_error", None):
            return self._offsession_error
        error = last_error.fget(self)
        if error and self.latest_charge is not None and self.latest_charge.status == "failed":
            error = {**error, "type": "card_error"}
            error["decline_code"] = getattr(self.latest_charge, "_decline_code", None)
        return error

    r.PaymentIntent.last_payment_error = property(last_payment_error)

    refund_init = r.Refund.__init__

    def refund_new(self: Any, *args: Any, reason: str | None = None, **kwargs: Any) -> None:
        refund_init(self, *args, **kwargs)
        self.reason = reason

    r.Refund.__init__ = refund_new
    refund_create = r.Refund._api_create.__func__

    def refund_api_create(cls: Any, /, **data: Any) -> Any:
        refund = refund_create(cls, **data)  # stored now, so the charge's totals include it
        r.schedule_webhook(r.Event("charge.refunded", r.Charge._api_retrieve(refund.charge)))
        return refund

    r.Refund._api_create = classmethod(refund_api_create)
    refund_list = r.Refund._api_list_all.__func__

    def refund_api_list(cls: Any, url: str, /, **data: Any) -> Any:
        # An intent never charged has no refunds: Stripe lists none (localstripe failed 500).
        intent_id = data.get("payment_intent")
        if isinstance(intent_id, str) and intent_id.startswith("pi_"):
            intent = r.PaymentIntent._api_retrieve(intent_id)
            if intent.latest_charge is None:
                empty = refund_list(cls, url, charge=None, limit=data.get("limit"))
                empty._list = []
                return empty
        return refund_list(cls, url, **data)

    r.Refund._api_list_all = classmethod(refund_api_list)

    def set_attribute(self: Any, name: str, value: Any) -> None:
        before = self.__dict__.get(name, None)
        object.__setattr__(self, name, value)
        if name == "customer" and before != value and "id" in self.__dict__:
            kind = "payment_method.attached" if value else "payment_method.detached"
            r.schedule_webhook(r.Event(kind, self))

    r.PaymentMethod.__setattr__ = set_attribute
    attach_pm = r.SetupIntent._attach_pm
    messages = {"insufficient_funds": "Your card has insufficient funds."}

    def setup_attach_pm(self: Any, pm: Any) -> None:
        try:
            attach_pm(self, pm)
        except UserError as exc:
            code, decline = DECLINE_CODES.get(getattr(pm, "_card_number", ""), (None, None))
            if decline is None:
                raise
            raise UserError(
                402,
                messages.get(decline, "Your card was declined."),
                {"code": code, "decline_code": decline, "type": "card_error"},
            ) from exc

    r.SetupIntent._attach_pm = setup_attach_pm

    _card_brands(r)
    _payment_intent_lifecycle(r)
    _test_payment_methods(r)
    _empty_values_unset(r)


def card_brand(number: str) -> str:
    """The brand Stripe reports for a card number (by its leading digits)."""
    if number.startswith("4"):
        return "visa"
    if number[:2] in ("34", "37"):
        return "amex"
    if number[:2] in {"51", "52", "53", "54", "55"} or 2221 <= int(number[:4] or 0) <= 2720:
        return "mastercard"
    if number.startswith(("6011", "65")) or 644 <= int(number[:3] or 0) <= 649:
        return "discover"
    if number.startswith("35"):
        return "jcb"
    if number[:2] in ("30", "36", "38", "39"):
        return "diners"
    if number.startswith("62"):
        return "unionpay"
    return "unknown"


def _card_brands(r: Any) -> None:
    """Cards say their brand; 14- and 15-digit numbers (Amex, Diners) and 4-digit CVCs work."""
    pm_init = r.PaymentMethod.__init__

    def payment_method_init(self: Any, *args: Any, card: Any = None, **kwargs: Any) -> None:
        number = cvc = None
        if isinstance(card, dict) and isinstance(card.get("number"), str):
            number = "".join(card["number"].split())
            cvc = card.get("cvc")
            # localstripe takes 16 digits and a 3-digit CVC only: give it those, then the truth.
            card = {**card, "number": number.ljust(16, "0")[:16], "cvc": "123"}
            if not number.isdigit() or not 13 <= len(number) <= 19:
                raise r.UserError(
                    402, "Your card number is incorrect.", {"code": "incorrect_number"}
                )
            if not isinstance(cvc, str) or not cvc.isdigit() or len(cvc) not in (3, 4):
                raise r.UserError(
                    402, "Your card's security code is invalid.", {"code": "invalid_cvc"}
                )
        pm_init(self, *args, card=card, **kwargs)
        if number is not None and self.type == "card":
            object.__setattr__(self, "_card_number", number)
            self.card["last4"] = number[-4:]
            self.card["brand"] = card_brand(number)
            self.card["fingerprint"] = r.fingerprint(number)
            self.card["country"] = "US"

    r.PaymentMethod.__init__ = payment_method_init


def _payment_intent_lifecycle(r: Any) -> None:
    """`payment_intent.canceled` on cancel; `setup_future_usage` saves the card on success."""
    from billfold.standin import web

    def cancel(id: str, cancellation_reason: str | None = None, **_: Any) -> Any:
        intent = r.PaymentIntent._api_retrieve(id)
        cancelable = ("requires_payment_method", "requires_capture", "requires_confirmation")
        if intent.status not in (*cancelable, "requires_action"):
            raise r.UserError(
                400,
                f"You cannot cancel this PaymentIntent because it has a status of {intent.status}.",
                {"code": "payment_intent_unexpected_state"},
            )
        intent._canceled = True
        intent.next_action = None
        intent.cancellation_reason = cancellation_reason
        intent.canceled_at = int(time.time())
        r.schedule_webhook(r.Event("payment_intent.canceled", intent))
        return intent

    web.api("POST", "/v1/payment_intents/{id}/cancel", cancel)
    on_success = r.PaymentIntent._on_success

    def succeeded(self: Any) -> None:
        if getattr(self, "setup_future_usage", None) and self.customer and self.payment_method:
            method = r.PaymentMethod._api_retrieve(self.payment_method)
            if method.customer is None:
                method.customer = self.customer  # sends payment_method.attached
            method._set_up_for_off_session = True
        on_success(self)

    r.PaymentIntent._on_success = succeeded


#: Stripe's test PaymentMethod IDs (usable without sending a card number) and their cards.
TEST_PAYMENT_METHODS = {
    "pm_card_visa": "4242424242424242",
    "pm_card_visa_debit": "4000056655665556",
    "pm_card_mastercard": "5555555555554444",
    "pm_card_amex": "378282246310005",
    "pm_card_discover": "6011111111111117",
    "pm_card_visa_chargeDeclined": "4000000000000002",
    "pm_card_chargeDeclinedInsufficientFunds": "4000000000009995",
    "pm_card_chargeCustomerFail": "4000000000000341",
    "pm_card_authenticationRequired": "4000002760003184",
    "pm_card_authenticationRequiredOnSetup": "4000002500003155",
    "pm_card_threeDSecure2Required": "4000000000003220",
}


def _test_payment_methods(r: Any) -> None:
    """`pm_card_*` IDs give a new PaymentMethod with Stripe's test card for that name."""

    def canonical(cls: Any, id: str) -> Any:
        number = TEST_PAYMENT_METHODS.get(id)
        if number is None:
            return None
        cvc = "1234" if number.startswith(("34", "37")) else "123"
        card = {"number": number, "exp_month": "12", "exp_year": "2034", "cvc": cvc}
        return r.PaymentMethod(type="card", card=card)

    r.PaymentMethod._try_get_canonical_test_article = classmethod(canonical)


def _empty_values_unset(r: Any) -> None:
    update = r.StripeObject._update

    def update_like_stripe(self: Any, **data: Any) -> None:
        if isinstance(self, r.Customer) and data.get("phone") == "":
            data["phone"] = None
        update(self, **data)
        if isinstance(data.get("metadata"), dict) and isinstance(self.metadata, dict):
            self.metadata = {k: v for k, v in self.metadata.items() if v != ""}

    r.StripeObject._update = update_like_stripe
