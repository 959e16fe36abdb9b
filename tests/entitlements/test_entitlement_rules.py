"""The entitlement rules on their own: flags, limits, credits, an inactive plan."""

from __future__ import annotations

from billfold.entitlements.rules import decide, every

FEATURES = {"flags": {"api": True, "sso": False}, "limits": {"projects": 5}}


def test_a_flag_on_in_an_active_plan_is_allowed_and_off_is_not() -> None:
    on = decide("api", 1, features=FEATURES, plan_active=True, balance=0)
    off = decide("sso", 1, features=FEATURES, plan_active=True, balance=0)
    assert (on.kind, on.allowed, on.reason) == ("flag", True, None)
    assert (off.allowed, off.reason) == (False, "not_in_plan")


def test_a_limit_allows_up_to_its_cap_and_says_what_remains() -> None:
    within = decide("projects", 5, features=FEATURES, plan_active=True, balance=0)
    over = decide("projects", 6, features=FEATURES, plan_active=True, balance=0)
    assert (within.allowed, within.limit, within.remaining) == (True, 5, 0)
    assert (over.allowed, over.reason, over.remaining) == (False, "limit_reached", -1)


def test_an_inactive_plan_grants_no_flag_or_limit_but_credits_still_count() -> None:
    flag = decide("api", 1, features=FEATURES, plan_active=False, balance=10)
    limit = decide("projects", 1, features=FEATURES, plan_active=False, balance=10)
    credits = decide("credits", 10, features=FEATURES, plan_active=False, balance=10)
    assert (flag.allowed, flag.reason) == (False, "subscription_inactive")
    assert (limit.allowed, limit.reason) == (False, "subscription_inactive")
    assert (credits.kind, credits.allowed, credits.remaining) == ("metered", True, 0)


def test_credits_short_of_the_amount_are_refused() -> None:
    short = decide("credits", 11, features={}, plan_active=True, balance=10)
    assert (short.allowed, short.reason, short.balance, short.remaining) == (
        False,
        "insufficient_credits",
        10,
        -1,
    )


def test_an_unknown_feature_is_not_allowed() -> None:
    unknown = decide("teleport", 1, features=FEATURES, plan_active=True, balance=0)
    assert (unknown.kind, unknown.allowed, unknown.reason) == (None, False, "not_in_plan")


def test_every_lists_flags_limits_and_credits() -> None:
    listed = every(FEATURES, plan_active=True, balance=7)
    assert [(e.feature, e.kind, e.allowed, e.remaining) for e in listed] == [
        ("api", "flag", True, None),
        ("sso", "flag", False, None),
        ("projects", "limit", True, 5),
        ("credits", "metered", True, 7),
    ]
