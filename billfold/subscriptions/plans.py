"""Plans: admin-managed codes, Stripe prices, trial days and feature sets."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from billfold.kit import audit
from billfold.kit.errors import Conflict, InvalidInput, NotFound
from billfold.services import Services
from billfold.stripe_gateway import StripeGateway, StripeNotFound
from billfold.subscriptions.models import Plan, PlanPrice

TRIAL = "trial"

# What `billfold migrate` creates when there is no trial plan (the example catalog,
# catalog.example.toml, declares the same).
TRIAL_PLAN: dict[str, Any] = {
    "code": TRIAL,
    "name": "Free trial",
    "interval": "month",
    "trial_days": 14,
    "features": {"limits": {"projects": 1, "seats": 1}, "flags": {"api": False}},
}


def create_plan(services: Services, fields: dict[str, Any], *, actor: str) -> Plan:
    """Add a plan. Its Stripe price (if any) is checked with Stripe between two short
    transactions, never inside one (on SQLite an open one holds the one write lock while
    Stripe answers); the second checks again what another request may have taken meanwhile."""
    price_id = fields.get("stripe_price_id")
    with services.db.transaction() as session:
        _code_is_free(session, fields["code"])
        _price_is_free(session, price_id, plan_id=None)
    _price_sells(services.stripe, price_id, fields.get("interval", "month"))
    with services.db.transaction() as session:
        _code_is_free(session, fields["code"])
        _price_is_free(session, price_id, plan_id=None)
        plan = Plan(**fields)
        with _unless_taken_meanwhile(session, fields["code"], price_id, plan_id=None):
            session.add(plan)
        audit.record(session, actor, "plan.create", plan.id, code=plan.code)
        return plan


def update_plan(services: Services, code: str, changes: dict[str, Any], *, actor: str) -> Plan:
    """Change a plan; a new Stripe price is checked with Stripe between two short
    transactions, as in `create_plan`."""
    price_changes = "stripe_price_id" in changes
    with services.db.transaction() as session:
        plan = get_plan(session, code, include_inactive=True)
        if price_changes:
            _price_is_free(session, changes["stripe_price_id"], plan_id=plan.id)
        ask_stripe = price_changes and changes["stripe_price_id"] != plan.stripe_price_id
        interval = plan.interval
    if ask_stripe:
        _price_sells(services.stripe, changes["stripe_price_id"], interval)
    with services.db.transaction() as session:
        plan = get_plan(session, code, include_inactive=True)
        if price_changes:
            _price_is_free(session, changes["stripe_price_id"], plan_id=plan.id)
        with _unless_taken_meanwhile(
            session, None, changes.get("stripe_price_id"), plan_id=plan.id
        ):
            for field, value in changes.items():
                setattr(plan, field, value)
        audit.record(
            session, actor, "plan.update", plan.id, **{k: str(v) for k, v in changes.items()}
        )
        return plan


@contextmanager
def _unless_taken_meanwhile(
    session: Session, code: str | None, stripe_price_id: str | None, *, plan_id: str | None
) -> Iterator[None]:
    """Write the plan in a savepoint: a parallel request that took the code or the price
    after our check (on PostgreSQL both pass it, then one insert meets the other's unique
    key) gets the same Conflict the check gives, not a 500."""
    try:
        with session.begin_nested():
            yield
    except IntegrityError:
        if code is not None:
            _code_is_free(session, code)
        _price_is_free(session, stripe_price_id, plan_id=plan_id)
        raise


def _code_is_free(session: Session, code: str) -> None:
    if session.scalar(select(Plan.id).where(Plan.code == code)):
        raise Conflict(f"A plan with code {code!r} exists", code="plan_exists")


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


def _price_sells(stripe: StripeGateway, stripe_price_id: str | None, interval: str) -> None:
    """A plan's price must exist in Stripe, be offered, and bill every `interval`: Checkout
    would otherwise fail for every customer who picks the plan."""
    if stripe_price_id is None:
        return
    try:
        price = stripe.retrieve_price(stripe_price_id)
    except StripeNotFound as exc:
        raise InvalidInput(
            f"Stripe has no price {stripe_price_id!r}: create it in Stripe (or declare the "
            "plan in the catalog) first",
            code="unknown_price",
        ) from exc
    if not price.active:
        raise InvalidInput(f"Stripe price {stripe_price_id!r} is inactive", code="price_inactive")
    if price.interval != interval:
        billed = f"every {price.interval}" if price.interval else "once"
        raise InvalidInput(
            f"Stripe price {stripe_price_id!r} bills {billed}, the plan every {interval}",
            code="price_interval_mismatch",
        )


def get_plan(session: Session, code: str, *, include_inactive: bool = False) -> Plan:
    plan = session.scalar(select(Plan).where(Plan.code == code))
    if plan is None or (not plan.active and not include_inactive):
        raise NotFound(f"No plan {code!r}", code="plan_not_found")
    return plan


def plan_for_price(session: Session, stripe_price_id: str | None) -> Plan | None:
    """The plan a Stripe price sells: its Checkout price, or any price the catalog made for
    it, retired ones included (their subscriptions carry on)."""
    if stripe_price_id is None:
        return None
    plan = session.scalar(select(Plan).where(Plan.stripe_price_id == stripe_price_id))
    if plan is not None:
        return plan
    return session.scalar(
        select(Plan)
        .join(PlanPrice, PlanPrice.plan_id == Plan.id)
        .where(PlanPrice.stripe_price_id == stripe_price_id)
    )


def list_plans(session: Session, *, include_inactive: bool = False) -> list[Plan]:
    query = select(Plan).order_by(Plan.created_at)
    if not include_inactive:
        query = query.where(Plan.active.is_(True))
    return list(session.scalars(query))


def ensure_trial_plan(session: Session, *, actor: str) -> Plan | None:
    """Create the trial plan if there is none; answers it when made."""
    if session.scalar(select(Plan.id).where(Plan.code == TRIAL)):
        return None
    plan = Plan(**TRIAL_PLAN)
    session.add(plan)
    session.flush()
    audit.record(session, actor, "plan.create", plan.id, code=TRIAL)
    return plan
