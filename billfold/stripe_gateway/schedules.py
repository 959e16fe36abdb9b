"""Stripe calls about subscription schedules: a price change set for the period's end."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from billfold.stripe_gateway.base import GatewayBase, idempotency_key
from billfold.stripe_gateway.errors import StripeRejected
from billfold.stripe_gateway.objects import id_of

_LIVE = ("not_started", "active")


@dataclass(frozen=True)
class StripeSchedulePhase:
    start: int
    end: int
    price_id: str
    quantity: int
    trial_end: int | None
    # What the phase sets on the subscription besides its items, as update parameters:
    # `discounts`, `default_payment_method`, `collection_method`, `invoice_settings`. A phase
    # written without them takes them off the subscription, so a rewrite carries them.
    settings: dict[str, Any] = field(default_factory=dict)


def _settings(phase: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    discounts = []
    for given in phase.get("discounts") or []:
        # Each names an existing discount, a promotion code or a coupon: pass just that one.
        for key in ("discount", "promotion_code", "coupon"):
            if value := id_of(given.get(key)):
                discounts.append({key: value})
                break
    if not discounts and (coupon := id_of(phase.get("coupon"))):
        discounts.append({"coupon": coupon})  # older API versions: one coupon per phase
    if discounts:
        found["discounts"] = discounts
    if method := id_of(phase.get("default_payment_method")):
        found["default_payment_method"] = method
    if collection := phase.get("collection_method"):
        found["collection_method"] = collection
    due = (phase.get("invoice_settings") or {}).get("days_until_due")
    if due is not None:
        found["invoice_settings"] = {"days_until_due": due}
    return found


@dataclass(frozen=True)
class StripeSchedule:
    id: str
    status: str  # not_started, active, completed, released, canceled
    subscription: str | None
    released_subscription: str | None
    phases: tuple[StripeSchedulePhase, ...]

    @property
    def live(self) -> bool:
        return self.status in _LIVE


def parse_schedule(resource: Any) -> StripeSchedule:
    obj = resource.to_dict() if hasattr(resource, "to_dict") else dict(resource)
    phases = []
    for phase in obj.get("phases") or []:
        item = (phase.get("items") or [{}])[0]
        price = item.get("price") or item.get("plan")
        phases.append(
            StripeSchedulePhase(
                start=int(phase["start_date"]),
                end=int(phase["end_date"]),
                price_id=str(price["id"] if isinstance(price, dict) else price),
                quantity=int(item.get("quantity") or 1),
                trial_end=phase.get("trial_end"),
                settings=_settings(phase),
            )
        )
    subscription = obj.get("subscription")
    return StripeSchedule(
        id=obj["id"],
        status=obj["status"],
        subscription=subscription if not isinstance(subscription, dict) else subscription["id"],
        released_subscription=obj.get("released_subscription"),
        phases=tuple(phases),
    )


class ScheduleCalls(GatewayBase):
    def schedule_price_change(
        self,
        stripe_subscription_id: str,
        *,
        change_id: str,
        price_id: str,
        plan_code: str,
        interval: str,
    ) -> StripeSchedule:
        """Put the subscription on `price_id` from the end of its current period (a trial's
        end on a trial): a schedule made from the subscription, its current phase kept as it
        is, then one `interval` on the new price, after which the schedule lets go (release)
        and the subscription goes on at the new price. Keys come from `change_id`, our
        scheduled change: a retry after a crash finishes the same schedule."""
        create_key = idempotency_key("subscription_schedule.create", change_id)
        created = self._call(
            "subscription_schedule.create",
            lambda: parse_schedule(
                self._client.v1.subscription_schedules.create(
                    params={"from_subscription": stripe_subscription_id},
                    options={"idempotency_key": create_key},
                )
            ),
            subscription_id=stripe_subscription_id,
            change_id=change_id,
        )
        current = created.phases[0]
        kept: dict[str, Any] = {
            **current.settings,  # the discount, card and collection settings, kept throughout
            "items": [{"price": current.price_id, "quantity": current.quantity}],
            "start_date": current.start,
            "end_date": current.end,
        }
        if current.trial_end:
            kept["trial_end"] = current.trial_end  # else Stripe would end the trial now
        params: dict[str, Any] = {
            "phases": [
                kept,
                {
                    **current.settings,
                    "items": [{"price": price_id, "quantity": current.quantity}],
                    "duration": {"interval": interval, "interval_count": 1},
                    "proration_behavior": "none",
                    "metadata": {"plan": plan_code},
                },
            ],
            "end_behavior": "release",
            "metadata": {"change_id": change_id},
        }
        update_key = idempotency_key("subscription_schedule.update", change_id)
        return self._call(
            "subscription_schedule.update",
            lambda: parse_schedule(
                self._client.v1.subscription_schedules.update(
                    created.id,
                    params=params,  # type: ignore[arg-type]
                    options={"idempotency_key": update_key},
                )
            ),
            schedule_id=created.id,
            change_id=change_id,
        )

    def retrieve_schedule(self, schedule_id: str) -> StripeSchedule:
        return self._call(
            "subscription_schedule.retrieve",
            lambda: parse_schedule(self._client.v1.subscription_schedules.retrieve(schedule_id)),
            schedule_id=schedule_id,
        )

    def release_schedule(self, schedule_id: str, *, change_id: str) -> StripeSchedule:
        """Let the subscription go from the schedule, as it is now. A schedule that already
        ended (released, completed, canceled) is answered as it is: the wish is met."""
        key = idempotency_key("subscription_schedule.release", change_id)
        try:
            return self._call(
                "subscription_schedule.release",
                lambda: parse_schedule(
                    self._client.v1.subscription_schedules.release(
                        schedule_id, options={"idempotency_key": key}
                    )
                ),
                schedule_id=schedule_id,
                change_id=change_id,
            )
        except StripeRejected:
            found = self.retrieve_schedule(schedule_id)
            if found.live:
                raise
            return found
