"""Plans: admin-managed codes, Stripe prices, trial days and feature sets."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from billfold.kit import audit
from billfold.kit.errors import Conflict, NotFound
from billfold.subscriptions.models import Plan

TRIAL = "trial"

# What `billfold dev` seeds: the three plans of the subscription guide.
DEFAULT_PLANS: list[dict[str, Any]] = [
    {
        "code": TRIAL,
        "name": "Free trial",
        "interval": "month",
        "trial_days": 14,
        "features": {"limits": {"projects": 1, "seats": 1}, "flags": {"api": False}},
    },
    {
        "code": "starter",
        "name": "Starter",
        "interval": "month",
        "price": 900,
        "features": {"limits": {"projects": 5, "seats": 3}, "flags": {"api": True}},
    },
    {
        "code": "professional",
        "name": "Professional",
        "interval": "month",
        "price": 2900,
        "features": {"limits": {"projects": 50, "seats": 20}, "flags": {"api": True, "sso": True}},
    },
]


def create_plan(session: Session, fields: dict[str, Any], *, actor: str) -> Plan:
    if session.scalar(select(Plan.id).where(Plan.code == fields["code"])):
        raise Conflict(f"A plan with code {fields['code']!r} exists", code="plan_exists")
    _price_is_free(session, fields.get("stripe_price_id"), plan_id=None)
    plan = Plan(**fields)
    session.add(plan)
    session.flush()
    audit.record(session, actor, "plan.create", plan.id, code=plan.code)
    return plan


def update_plan(session: Session, code: str, changes: dict[str, Any], *, actor: str) -> Plan:
    plan = get_plan(session, code, include_inactive=True)
    if "stripe_price_id" in changes:
        _price_is_free(session, changes["stripe_price_id"], plan_id=plan.id)
    for field, value in changes.items():
        setattr(plan, field, value)
    session.flush()
    audit.record(session, actor, "plan.update", plan.id, **{k: str(v) for k, v in changes.items()})
    return plan


def _price_is_free(session: Session, stripe_price_id: str | None, *, plan_id: str | None) -> None:
    """A Stripe price names one plan: it is how a subscription event finds its plan."""
    if stripe_price_id is None:
        return
    holder = session.execute(
        select(Plan.id, Plan.code).where(Plan.stripe_price_id == stripe_price_id)
    ).first()
    if holder is not None and holder.id != plan_id:
        raise Conflict(
            f"Stripe price {stripe_price_id!r} belongs to plan {holder.code!r}",
            code="price_in_use",
        )


def get_plan(session: Session, code: str, *, include_inactive: bool = False) -> Plan:
    plan = session.scalar(select(Plan).where(Plan.code == code))
    if plan is None or (not plan.active and not include_inactive):
        raise NotFound(f"No plan {code!r}", code="plan_not_found")
    return plan


def plan_for_price(session: Session, stripe_price_id: str | None) -> Plan | None:
    if stripe_price_id is None:
        return None
    return session.scalar(select(Plan).where(Plan.stripe_price_id == stripe_price_id))


def list_plans(session: Session, *, include_inactive: bool = False) -> list[Plan]:
    query = select(Plan).order_by(Plan.created_at)
    if not include_inactive:
        query = query.where(Plan.active.is_(True))
    return list(session.scalars(query))


def seed_default_plans(
    session: Session,
    *,
    price_ids: dict[str, str],
    actor: str,
    codes: Collection[str] | None = None,
) -> list[Plan]:
    """Create the default plans that are missing (of `codes`, or all), with the given Stripe
    price per code."""
    made = []
    for spec in DEFAULT_PLANS:
        if codes is not None and spec["code"] not in codes:
            continue
        if session.scalar(select(Plan.id).where(Plan.code == spec["code"])):
            continue
        fields = {k: v for k, v in spec.items() if k != "price"}
        made.append(
            create_plan(
                session, {**fields, "stripe_price_id": price_ids.get(spec["code"])}, actor=actor
            )
        )
    return made
