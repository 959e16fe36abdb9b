"""Promotion codes and discounts in the stand-in: `/v1/promotion_codes`, a code typed on the
Checkout page (when the session allows them) becoming the subscription's discount, and
every invoice of a discounted subscription reduced by its coupon while the coupon lasts.

localstripe keeps coupons but applies them nowhere and has no promotion codes."""

from __future__ import annotations

import time
from typing import Any

from billfold.standin import web

_codes: dict[str, dict[str, Any]] = {}


class _Shown:
    def __init__(self, exported: dict[str, Any]) -> None:
        self.exported = exported
        self.id = exported["id"]

    def _export(self, expand: Any = None) -> dict[str, Any]:
        return self.exported


def _create(
    coupon: Any = None,
    promotion: Any = None,
    code: Any = None,
    active: Any = None,
    metadata: Any = None,
    **unknown: Any,
) -> Any:
    from localstripe import resources as r
    from localstripe.errors import UserError

    if unknown:
        raise UserError(400, "Unexpected " + ", ".join(unknown))
    coupon_id = coupon or (promotion or {}).get("coupon")
    if not coupon_id:
        raise UserError(400, "Missing required param: promotion[coupon].")
    found = r.Coupon._api_retrieve(coupon_id)
    code = str(code or r.random_id(8)).upper()
    if any(c["code"] == code and c["active"] for c in _codes.values()):
        raise UserError(400, f"A promotion code with code {code} already exists.")
    promo = {
        "id": "promo_" + r.random_id(14),
        "object": "promotion_code",
        "code": code,
        "coupon": found._export(),
        "promotion": {"type": "coupon", "coupon": found.id},
        "active": r.try_convert_to_bool(active) if active is not None else True,
        "metadata": metadata or {},
        "times_redeemed": 0,
        "created": int(time.time()),
        "livemode": False,
    }
    _codes[promo["id"]] = promo
    return _Shown(promo)


def _retrieve(id: str, **_: Any) -> Any:
    from localstripe.errors import UserError

    if id not in _codes:
        raise UserError(404, f"No such promotion code: '{id}'")
    return _Shown(_codes[id])


def _list(code: Any = None, active: Any = None, **_: Any) -> Any:
    data = [
        c
        for c in _codes.values()
        if (code is None or c["code"] == str(code).upper())
        and (active is None or c["active"] == (str(active).lower() == "true"))
    ]
    return _Shown(
        {
            "id": None,
            "object": "list",
            "url": "/v1/promotion_codes",
            "data": data,
            "has_more": False,
        }
    )


def find(promotion_code_id: str) -> dict[str, Any] | None:
    """A promotion code by its ID (a schedule phase's discount names one)."""
    return _codes.get(promotion_code_id)


def redeem(code: str) -> dict[str, Any] | None:
    """The discount a code typed on Checkout gives, or None if no active code matches."""
    for promo in _codes.values():
        if promo["active"] and promo["code"] == code.strip().upper():
            promo["times_redeemed"] += 1
            return {
                "object": "discount",
                "coupon": promo["coupon"],
                "promotion_code": promo["id"],
                "start": int(time.time()),
            }
    return None


def discount_amount(invoice: Any, sub: Any, discount: dict[str, Any]) -> int:
    """What the coupon takes off this invoice (0 once it no longer applies)."""
    from localstripe import resources as r

    coupon = discount["coupon"]
    earlier = [
        i
        for key, i in r.store.items()
        if key.startswith("invoice:")
        and i is not invoice
        and i.subscription == sub.id
        and getattr(i, "_discount_amount", 0)
    ]
    if coupon["duration"] == "once" and earlier:
        return 0
    if coupon["duration"] == "repeating" and len(earlier) >= int(coupon["duration_in_months"]):
        return 0
    subtotal = sum(line.amount for line in invoice.lines._list if not line.proration)
    if coupon.get("percent_off") is not None:
        off = round(subtotal * float(coupon["percent_off"]) / 100)
    else:
        off = int(coupon.get("amount_off") or 0)
    found: int = max(0, min(off, subtotal))
    return found


def apply() -> None:
    from localstripe import resources as r

    coupon_init = r.Coupon.__init__

    def new_coupon(self: Any, id: Any = None, **data: Any) -> None:
        coupon_init(self, id=id or r.random_id(8), **data)  # Stripe names it if we do not

    r.Coupon.__init__ = new_coupon
    web.api("POST", "/v1/promotion_codes", _create)
    web.api("GET", "/v1/promotion_codes/{id}", _retrieve)
    web.api("GET", "/v1/promotion_codes", _list)

    invoice_init = r.Invoice.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        invoice_init(self, *args, **kwargs)
        self._discount_amount = 0
        self.total_discount_amounts = []
        sub = r.Subscription._api_retrieve(self.subscription) if self.subscription else None
        discount = sub and (
            getattr(sub, "discount", None) or getattr(sub, "_pending_discount", None)
        )
        if discount:
            self._discount_amount = discount_amount(self, sub, discount)
            if self._discount_amount:
                self.discount = discount
                self.total_discount_amounts = [
                    {"amount": self._discount_amount, "discount": discount["promotion_code"]}
                ]

    r.Invoice.__init__ = init
    total = r.Invoice.total

    def discounted_total(self: Any) -> int:
        found: int = total.fget(self)
        return max(0, found - getattr(self, "_discount_amount", 0))

    r.Invoice.total = property(discounted_total)
