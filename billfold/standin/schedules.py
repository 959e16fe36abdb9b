"""Subscription schedules in the stand-in, as Stripe runs them for a change at period end:
a schedule made `from_subscription` (one phase: the current period as it is), its phases
replaced (the current one kept to its end, then the next price), released or canceled, and
the subscription moved to the next phase's price when the stand-in's clock (`advance`)
reaches a phase's end.

localstripe has no subscription schedules. The stand-in keeps one subscription item, as
elsewhere; a phase is one price and a quantity.
"""

from __future__ import annotations

import time
from typing import Any

from billfold.standin import web
from billfold.standin.billing import emit, period_after

_END_BEHAVIORS = ("release", "cancel")
_PRORATIONS = ("create_prorations", "none", "always_invoice")
_schedules: dict[str, Schedule] = {}


class Schedule:
    """A subscription schedule: its phases (`items`, `start_date`, `end_date`, …) as Stripe
    shows them, and what happens after the last (`end_behavior`)."""

    def __init__(self, sub: Any) -> None:
        from localstripe import resources as r

        self.id = "sub_sched_" + r.random_id(14)
        self.created = int(time.time())
        self.customer = sub.customer
        self.subscription: str | None = sub.id
        self.end_behavior = "release"
        self.metadata: dict[str, str] = {}
        self.status = "active"
        self.released_at: int | None = None
        self.released_subscription: str | None = None
        self.canceled_at: int | None = None
        self.completed_at: int | None = None
        start, end = sub._period
        item = sub.items._list[0]
        phase: dict[str, Any] = {
            "start_date": start,
            "end_date": end,
            "items": [{"price": item.plan.id, "quantity": item.quantity}],
            "metadata": {},
            "proration_behavior": "create_prorations",
            "trial_end": sub.trial_end if sub.status == "trialing" else None,
            **_settings_of(sub),
        }
        self.phases: list[dict[str, Any]] = [phase]

    def current_phase(self) -> dict[str, int] | None:
        """The phase the subscription is in: the one its period starts in (the stand-in's
        clock moves subscriptions, not the wall clock)."""
        if self.status != "active":
            return None
        return self._phase_of_subscription()

    def _phase_of_subscription(self) -> dict[str, int] | None:
        from localstripe import resources as r

        if self.subscription is None:
            return None
        start = r.Subscription._api_retrieve(self.subscription)._period[0]
        for phase in self.phases:
            if phase["start_date"] <= start < phase["end_date"]:
                return {"start_date": phase["start_date"], "end_date": phase["end_date"]}
        return None

    def _export(self, expand: Any = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "subscription_schedule",
            "created": self.created,
            "customer": self.customer,
            "subscription": self.subscription,
            "status": self.status,
            "end_behavior": self.end_behavior,
            "current_phase": self.current_phase(),
            "phases": [
                {**p, "items": [dict(i, plan=i["price"]) for i in p["items"]]} for p in self.phases
            ],
            "metadata": dict(self.metadata),
            "released_at": self.released_at,
            "released_subscription": self.released_subscription,
            "canceled_at": self.canceled_at,
            "completed_at": self.completed_at,
            "default_settings": {"collection_method": "charge_automatically"},
            "test_clock": None,
            "livemode": False,
        }


def _settings_of(sub: Any) -> dict[str, Any]:
    """What a phase made `from_subscription` copies of the subscription besides its items:
    its discount, default payment method and collection settings."""
    discount = getattr(sub, "discount", None)
    return {
        "discounts": [
            {
                "coupon": discount["coupon"]["id"],
                "promotion_code": discount.get("promotion_code"),
                "discount": None,  # the stand-in's discounts have no IDs
            }
        ]
        if discount
        else [],
        "default_payment_method": getattr(sub, "default_payment_method", None),
        "collection_method": getattr(sub, "collection_method", None) or "charge_automatically",
        "invoice_settings": None,
    }


def _checked_settings(phase: dict[str, Any], param: str) -> dict[str, Any]:
    """A phase's discounts, default payment method and collection settings, checked; a phase
    without them sets none on the subscription (as in Stripe)."""
    from localstripe import resources as r

    from billfold.standin import discounts as promotion

    found = []
    for n, given in enumerate(phase.get("discounts") or []):
        where = f"{param}[discounts][{n}]"
        if not isinstance(given, dict):
            raise _error(400, "Invalid discounts", where)
        if given.get("promotion_code"):
            promo = promotion.find(str(given["promotion_code"]))
            if promo is None:
                raise _error(400, "No such promotion code", f"{where}[promotion_code]")
            found.append({"coupon": promo["coupon"]["id"], "promotion_code": promo["id"]})
        elif given.get("coupon"):
            found.append({"coupon": r.Coupon._api_retrieve(given["coupon"]).id})
        else:
            raise _error(400, "The stand-in takes a promotion_code or a coupon", where)
    method = phase.get("default_payment_method") or None
    if method is not None:
        r.PaymentMethod._api_retrieve(method)
    collection = phase.get("collection_method") or "charge_automatically"
    if collection not in ("charge_automatically", "send_invoice"):
        raise _error(400, "Invalid collection_method", f"{param}[collection_method]")
    return {
        "discounts": [
            {"coupon": d["coupon"], "promotion_code": d.get("promotion_code"), "discount": None}
            for d in found
        ],
        "default_payment_method": method,
        "collection_method": collection,
        "invoice_settings": phase.get("invoice_settings") or None,
    }


def _enter(sub: Any, phase: dict[str, Any]) -> None:
    """The subscription takes the phase's settings: its discount (kept as it is when the
    phase names the same one), default payment method and collection method."""
    from localstripe import resources as r

    from billfold.standin import discounts as promotion

    current = getattr(sub, "discount", None)
    wanted = (phase.get("discounts") or [None])[0]
    if wanted is None:
        sub.discount = None
    elif not (
        current
        and current["coupon"]["id"] == wanted["coupon"]
        and current.get("promotion_code") == wanted.get("promotion_code")
    ):
        promo = promotion.find(wanted["promotion_code"]) if wanted.get("promotion_code") else None
        sub.discount = {
            "object": "discount",
            "coupon": promo["coupon"]
            if promo
            else r.Coupon._api_retrieve(wanted["coupon"])._export(),
            "promotion_code": wanted.get("promotion_code"),
            "start": int(time.time()),
        }
    sub.default_payment_method = phase.get("default_payment_method")
    sub.collection_method = phase.get("collection_method") or "charge_automatically"


def _error(status: int, message: str, param: str | None = None) -> Exception:
    from localstripe.errors import UserError

    error: Exception = UserError(status, message, {"param": param} if param else None)
    return error


def _get(id: str) -> Schedule:
    if id not in _schedules:
        raise _error(404, f"No such subscription_schedule: '{id}'")
    return _schedules[id]


def _live(schedule: Schedule) -> None:
    if schedule.status not in ("active", "not_started"):
        raise _error(
            400,
            "You cannot update a subscription schedule that is currently in the "
            f"`{schedule.status}` status. It must be in one of the following statuses: "
            "`not_started`, `active`.",
        )


def create(from_subscription: Any = None, metadata: Any = None, **others: Any) -> Schedule:
    """`POST /v1/subscription_schedules` with `from_subscription` (the stand-in's only way:
    schedules for new subscriptions are not made here)."""
    from localstripe import resources as r

    if not from_subscription:
        raise _error(400, "The stand-in creates schedules from_subscription only")
    if others:
        raise _error(
            400,
            "You cannot set other parameters with from_subscription: " + ", ".join(others),
        )
    sub = r.Subscription._api_retrieve(from_subscription)
    if sub.status in ("canceled", "incomplete_expired", "incomplete"):
        raise _error(400, f"You cannot migrate a subscription that is {sub.status}.")
    if getattr(sub, "schedule", None):
        raise _error(
            400,
            "You cannot migrate a subscription that is already attached to a schedule: "
            f"`{sub.schedule}`.",
            "from_subscription",
        )
    if sub.cancel_at_period_end:
        raise _error(400, "You cannot migrate a subscription that is set to cancel.")
    schedule = Schedule(sub)
    if metadata is not None:
        schedule.metadata = _metadata(metadata)
    _schedules[schedule.id] = schedule
    sub.schedule = schedule.id
    emit("subscription_schedule.created", schedule)
    emit("customer.subscription.updated", sub)
    return schedule


def update(
    id: str,
    phases: Any = None,
    end_behavior: Any = None,
    metadata: Any = None,
    proration_behavior: Any = None,
    **unknown: Any,
) -> Schedule:
    """`POST /v1/subscription_schedules/{id}`: phases replace the current and future ones
    (the current phase keeps its start); the subscription follows the phase it is in."""
    from localstripe import resources as r

    if unknown:
        raise _error(400, "Received unknown parameters: " + ", ".join(unknown))
    schedule = _get(id)
    _live(schedule)
    if end_behavior is not None and end_behavior not in _END_BEHAVIORS:
        raise _error(400, "Invalid end_behavior", "end_behavior")
    if proration_behavior is not None and proration_behavior not in _PRORATIONS:
        raise _error(400, "Invalid proration_behavior", "proration_behavior")
    sub = r.Subscription._api_retrieve(schedule.subscription)
    new_phases = _phases(phases, sub) if phases is not None else None
    new_metadata = _metadata(metadata) if metadata is not None else None
    # All checks done: change nothing before this point.
    if new_phases is not None:
        schedule.phases = new_phases
        first = new_phases[0]
        item = sub.items._list[0]
        price = r.Plan._api_retrieve(first["items"][0]["price"])
        if price.id != item.plan.id:
            # The current phase's price changed: the subscription changes now, prorated.
            from billfold.standin.billing import _change_price

            _change_price(r, sub, price, first["proration_behavior"])
        item.quantity = first["items"][0]["quantity"]
        _enter(sub, first)
    if end_behavior is not None:
        schedule.end_behavior = end_behavior
    if new_metadata is not None:
        schedule.metadata = {**schedule.metadata, **new_metadata}
        schedule.metadata = {k: v for k, v in schedule.metadata.items() if v != ""}
    emit("subscription_schedule.updated", schedule)
    return schedule


def _phases(phases: Any, sub: Any) -> list[dict[str, Any]]:
    """Phases as given, checked as Stripe checks them: the first is the current one (its start
    unchanged), each starts where the one before ends, an end given or one interval long."""
    from localstripe import resources as r

    if not isinstance(phases, list) or not phases:
        raise _error(400, "Invalid phases: give at least one phase", "phases")
    start = sub._period[0]
    checked: list[dict[str, Any]] = []
    for n, phase in enumerate(phases):
        param = f"phases[{n}]"
        if not isinstance(phase, dict):
            raise _error(400, f"Invalid {param}", param)
        given_start = (
            r.try_convert_to_int(phase.get("start_date")) if phase.get("start_date") else None
        )
        if n == 0 and given_start is not None and given_start != start:
            raise _error(
                400,
                "You can not modify the start date of the current phase.",
                f"{param}[start_date]",
            )
        if n > 0 and given_start is not None and given_start != start:
            raise _error(
                400,
                "Phases must be sequential: a phase starts where the one before it ends.",
                f"{param}[start_date]",
            )
        items = phase.get("items")
        if not isinstance(items, list) or len(items) != 1 or not isinstance(items[0], dict):
            raise _error(400, "The stand-in supports one item per phase", f"{param}[items]")
        price_id = items[0].get("price") or items[0].get("plan")
        if not price_id:
            raise _error(400, "Missing required param: price.", f"{param}[items][0][price]")
        price = r.Plan._api_retrieve(price_id)
        quantity = r.try_convert_to_int(items[0].get("quantity", 1))
        if not isinstance(quantity, int) or quantity < 1:
            raise _error(400, "Invalid quantity", f"{param}[items][0][quantity]")
        end = _phase_end(phase, start, price, param)
        if end <= start:
            raise _error(
                400, "The phase's end_date must be after its start_date.", f"{param}[end_date]"
            )
        behavior = phase.get("proration_behavior") or "create_prorations"
        if behavior not in _PRORATIONS:
            raise _error(400, "Invalid proration_behavior", f"{param}[proration_behavior]")
        trial_end = r.try_convert_to_int(phase.get("trial_end")) if phase.get("trial_end") else None
        if n == 0 and sub.status == "trialing" and trial_end != sub.trial_end:
            # Stripe would end (or move) the trial now; the stand-in does not model that.
            raise _error(
                400,
                "The stand-in keeps a trial only when the current phase repeats its trial_end",
                f"{param}[trial_end]",
            )
        checked.append(
            {
                "start_date": start,
                "end_date": end,
                "items": [{"price": price.id, "quantity": quantity}],
                "metadata": _metadata(phase.get("metadata") or {}),
                "proration_behavior": behavior,
                "trial_end": trial_end,
                **_checked_settings(phase, param),
            }
        )
        start = end
    return checked


def _phase_end(phase: dict[str, Any], start: int, price: Any, param: str) -> int:
    from localstripe import resources as r

    given = [k for k in ("end_date", "duration", "iterations") if phase.get(k) not in (None, "")]
    if len(given) > 1:
        raise _error(400, f"You may only set one of {', '.join(given)}.", param)
    if phase.get("end_date") not in (None, ""):
        end = r.try_convert_to_int(phase["end_date"])
        if not isinstance(end, int):
            raise _error(400, "Invalid end_date", f"{param}[end_date]")
        return end
    duration = phase.get("duration")
    if duration not in (None, ""):
        if not isinstance(duration, dict) or duration.get("interval") not in (
            "day",
            "week",
            "month",
            "year",
        ):
            raise _error(400, "Invalid duration", f"{param}[duration]")
        count = r.try_convert_to_int(duration.get("interval_count", 1))
        return period_after(start, duration["interval"], count)
    iterations = r.try_convert_to_int(phase.get("iterations") or 1)
    return period_after(start, price.interval, price.interval_count * iterations)


def _metadata(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise _error(400, "Invalid metadata", "metadata")
    return {str(k): str(v) for k, v in value.items()}


def release(id: str, preserve_cancel_date: Any = None, **unknown: Any) -> Schedule:
    """`POST /v1/subscription_schedules/{id}/release`: the subscription stays as it is, with
    no schedule; the schedule is `released`."""
    from localstripe import resources as r

    if unknown:
        raise _error(400, "Received unknown parameters: " + ", ".join(unknown))
    schedule = _get(id)
    _live(schedule)
    _release(r, schedule)
    return schedule


def _release(r: Any, schedule: Schedule) -> None:
    sub = r.Subscription._api_retrieve(schedule.subscription)
    schedule.status, schedule.released_at = "released", int(time.time())
    schedule.released_subscription, schedule.subscription = sub.id, None
    sub.schedule = None
    emit("subscription_schedule.released", schedule)
    emit("customer.subscription.updated", sub)


def cancel(id: str, invoice_now: Any = None, prorate: Any = None, **unknown: Any) -> Schedule:
    """`POST /v1/subscription_schedules/{id}/cancel`: the schedule and its subscription end."""
    from localstripe import resources as r

    if unknown:
        raise _error(400, "Received unknown parameters: " + ", ".join(unknown))
    schedule = _get(id)
    _live(schedule)
    schedule.status, schedule.canceled_at = "canceled", int(time.time())
    sub = r.Subscription._api_retrieve(schedule.subscription)
    sub.schedule = None
    emit("subscription_schedule.canceled", schedule)
    r.Subscription._api_delete(sub.id)
    return schedule


def end_with_subscription(sub: Any) -> None:
    """A subscription canceled outright takes its schedule with it (`canceled`), as in Stripe."""
    schedule = _schedules.get(getattr(sub, "schedule", None) or "")
    if schedule is None or schedule.status not in ("active", "not_started"):
        return
    schedule.status, schedule.canceled_at = "canceled", int(time.time())
    sub.schedule = None
    emit("subscription_schedule.canceled", schedule)


def _list(customer: Any = None, subscription: Any = None, **_: Any) -> Any:
    data = [
        s._export()
        for s in _schedules.values()
        if (customer is None or s.customer == customer)
        and (subscription is None or subscription in (s.subscription, s.released_subscription))
    ]
    return _Listed(data)


class _Listed:
    def __init__(self, data: list[dict[str, Any]]) -> None:
        self.id = None
        self.data = data

    def _export(self, expand: Any = None) -> dict[str, Any]:
        return {
            "object": "list",
            "url": "/v1/subscription_schedules",
            "data": self.data,
            "has_more": False,
        }


def at_period_end(sub: Any, end: int) -> None:
    """The stand-in's clock reached `end`, the end of `sub`'s period: if a phase of its
    schedule ends there, the subscription enters the next phase (its price, quantity and
    metadata, no prorations: nothing of the period is left), or the schedule ends as its
    `end_behavior` says (release: the subscription goes on as it is; cancel: it ends)."""
    from localstripe import resources as r

    schedule = _schedules.get(getattr(sub, "schedule", None) or "")
    if schedule is None or schedule.status != "active":
        return
    start = sub._period[0]
    ending = next((p for p in schedule.phases if start < p["end_date"] <= end), None)
    if ending is None:
        return
    later = [p for p in schedule.phases if p["start_date"] >= ending["end_date"]]
    if later:
        phase = later[0]
        item = sub.items._list[0]
        item.plan = r.Plan._api_retrieve(phase["items"][0]["price"])
        item.quantity = phase["items"][0]["quantity"]
        _enter(sub, phase)
        if phase["metadata"]:
            sub.metadata = {**(sub.metadata or {}), **phase["metadata"]}
        emit("subscription_schedule.updated", schedule)
        return
    if schedule.end_behavior == "cancel":
        schedule.status, schedule.completed_at = "completed", end
        schedule.released_subscription, schedule.subscription = sub.id, None
        sub.schedule = None
        sub.cancel_at_period_end = True
        emit("subscription_schedule.completed", schedule)
        return
    _release(r, schedule)


def apply() -> None:
    from localstripe import resources as r

    r.Subscription.schedule = None
    exported = r.Subscription._export

    def _export(self: Any, expand: Any = None) -> dict[str, Any]:
        """Every subscription shows `schedule`, null without one, as Stripe's do (localstripe
        exports only what was set on the object)."""
        obj: dict[str, Any] = exported(self, expand=expand)
        obj.setdefault("schedule", None)
        return obj

    r.Subscription._export = _export
    web.api("POST", "/v1/subscription_schedules", create)
    web.api("GET", "/v1/subscription_schedules", _list)
    web.api("GET", "/v1/subscription_schedules/{id}", lambda id, **_: _get(id))
    web.api("POST", "/v1/subscription_schedules/{id}", update)
    web.api("POST", "/v1/subscription_schedules/{id}/release", release)
    web.api("POST", "/v1/subscription_schedules/{id}/cancel", cancel)
