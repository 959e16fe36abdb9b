"""The wallet's pure rules without a database: when a recharge is due, how much it brings,
which package it buys, and how many credits a refund takes back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billfold.credits.rules import (
    PackageOption,
    RechargePolicy,
    choose_package,
    clawback,
    credits_needed,
    recharge_due,
)

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
ON = RechargePolicy(enabled=True, threshold=100, in_flight=False, paused_until=None)


# -- recharge_due -----------------------------------------------------------------------


def test_a_balance_below_the_threshold_is_due_and_at_the_threshold_is_not() -> None:
    assert recharge_due(99, ON, NOW)
    assert recharge_due(0, ON, NOW)
    assert not recharge_due(100, ON, NOW)
    assert not recharge_due(101, ON, NOW)


@pytest.mark.parametrize(
    "policy",
    [
        RechargePolicy(enabled=False, threshold=100, in_flight=False, paused_until=None),
        RechargePolicy(enabled=True, threshold=None, in_flight=False, paused_until=None),
        RechargePolicy(enabled=True, threshold=100, in_flight=True, paused_until=None),
        RechargePolicy(
            enabled=True, threshold=100, in_flight=False, paused_until=NOW + timedelta(seconds=1)
        ),
    ],
    ids=["disabled", "no-threshold", "one-in-flight", "paused-by-a-cap"],
)
def test_nothing_is_due_when_off_unconfigured_in_flight_or_paused(policy: RechargePolicy) -> None:
    assert not recharge_due(0, policy, NOW)


def test_a_pause_ends_at_its_time() -> None:
    ended = RechargePolicy(enabled=True, threshold=100, in_flight=False, paused_until=NOW)
    assert recharge_due(5, ended, NOW)
    assert recharge_due(5, ended, NOW + timedelta(hours=1))
    assert not recharge_due(5, ended, NOW - timedelta(microseconds=1))


def test_a_zero_threshold_is_never_crossed() -> None:
    zero = RechargePolicy(enabled=True, threshold=0, in_flight=False, paused_until=None)
    assert not recharge_due(0, zero, NOW)


policies = st.builds(
    RechargePolicy,
    enabled=st.booleans(),
    threshold=st.none() | st.integers(0, 10_000),
    in_flight=st.booleans(),
    paused_until=st.none() | st.integers(-3600, 3600).map(lambda s: NOW + timedelta(seconds=s)),
)


@given(policy=policies, balance=st.integers(0, 20_000), lower=st.integers(0, 20_000))
def test_due_is_monotone_in_the_balance_and_never_due_at_or_above_the_threshold(
    policy: RechargePolicy, balance: int, lower: int
) -> None:
    due = recharge_due(balance, policy, NOW)
    if due:
        assert policy.threshold is not None
        assert balance < policy.threshold
        assert policy.enabled
        assert not policy.in_flight
        assert policy.paused_until is None or policy.paused_until <= NOW
        # Spending more can only keep it due.
        assert recharge_due(min(lower, balance), policy, NOW)
    elif policy.enabled and not policy.in_flight and policy.threshold is not None:
        paused = policy.paused_until is not None and policy.paused_until > NOW
        assert paused or balance >= policy.threshold


# -- credits_needed ---------------------------------------------------------------------


def test_one_charge_closes_the_whole_gap() -> None:
    assert credits_needed(balance=50, threshold=1000, configured=200) == 950
    assert credits_needed(balance=900, threshold=1000, configured=200) == 200
    assert credits_needed(balance=1000, threshold=1000, configured=0) == 1
    assert credits_needed(balance=5000, threshold=1000, configured=0) == 1


@given(
    balance=st.integers(0, 10**9), threshold=st.integers(0, 10**9), configured=st.integers(0, 10**9)
)
def test_needed_covers_the_configured_amount_and_the_gap_and_no_more(
    balance: int, threshold: int, configured: int
) -> None:
    needed = credits_needed(balance, threshold, configured)
    assert needed >= 1
    assert needed >= configured
    assert balance + needed >= threshold
    # The smallest amount with those three properties: no charge bigger than it must be.
    assert needed in {1, configured, threshold - balance}


# -- choose_package ---------------------------------------------------------------------


def test_the_smallest_covering_package_is_chosen() -> None:
    small, medium, large = (
        PackageOption("a", 100, 100),
        PackageOption("b", 500, 450),
        PackageOption("c", 2000, 1600),
    )
    assert choose_package([large, small, medium], 1) == small
    assert choose_package([large, small, medium], 100) == small
    assert choose_package([large, small, medium], 101) == medium
    assert choose_package([large, small, medium], 2000) == large


def test_without_a_covering_package_the_largest_is_chosen() -> None:
    small, large = PackageOption("a", 100, 100), PackageOption("c", 2000, 1600)
    assert choose_package([small, large], 2001) == large
    assert choose_package([], 10) is None


def test_a_tie_in_credits_goes_to_the_cheaper_package() -> None:
    dear, cheap = PackageOption("a", 500, 500), PackageOption("b", 500, 400)
    assert choose_package([dear, cheap], 300) == cheap
    assert choose_package([cheap, dear], 300) == cheap


package_lists = st.lists(
    st.builds(
        PackageOption,
        id=st.text("abcdef", min_size=1, max_size=4),
        credits=st.integers(1, 5000),
        price=st.integers(1, 500_000),
    ),
    max_size=8,
)


@given(packages=package_lists, needed=st.integers(1, 6000))
def test_choose_package_picks_the_smallest_cover_when_one_exists_else_the_largest(
    packages: list[PackageOption], needed: int
) -> None:
    chosen = choose_package(packages, needed)
    if not packages:
        assert chosen is None
        return
    assert chosen in packages
    covering = [p for p in packages if p.credits >= needed]
    if covering:
        assert chosen.credits >= needed
        assert chosen.credits == min(p.credits for p in covering)
        same_size = [p for p in covering if p.credits == chosen.credits]
        # Cheapest per credit among equals (all have the same credits: cheapest price).
        assert chosen.price == min(p.price for p in same_size)
    else:
        assert chosen.credits == max(p.credits for p in packages)
    # The order packages are listed in never changes the choice.
    again = choose_package(list(reversed(packages)), needed)
    assert again is not None
    assert (again.credits, again.price) == (chosen.credits, chosen.price)


# -- clawback ---------------------------------------------------------------------------


def test_a_full_refund_takes_back_every_unspent_credit_it_granted() -> None:
    assert clawback(granted=1000, paid=900, refunded_total=900, clawed_back=0, balance=5000) == 1000
    assert clawback(granted=1000, paid=900, refunded_total=900, clawed_back=0, balance=400) == 400
    assert clawback(granted=1000, paid=900, refunded_total=900, clawed_back=0, balance=0) == 0


def test_a_partial_refund_takes_back_its_share_and_a_later_one_the_rest() -> None:
    first = clawback(granted=1000, paid=1000, refunded_total=250, clawed_back=0, balance=5000)
    assert first == 250
    second = clawback(granted=1000, paid=1000, refunded_total=1000, clawed_back=250, balance=5000)
    assert second == 750
    assert clawback(granted=1000, paid=1000, refunded_total=1000, clawed_back=1000, balance=9) == 0


def test_refunding_more_than_was_paid_takes_back_no_more_than_was_granted() -> None:
    assert (
        clawback(granted=1000, paid=500, refunded_total=900, clawed_back=0, balance=10**6) == 1000
    )


def test_nothing_is_taken_back_of_a_free_or_empty_purchase() -> None:
    assert clawback(granted=1000, paid=0, refunded_total=100, clawed_back=0, balance=1000) == 0
    assert clawback(granted=0, paid=100, refunded_total=100, clawed_back=0, balance=1000) == 0


@given(
    granted=st.integers(0, 10**7),
    paid=st.integers(0, 10**7),
    refunded_total=st.integers(0, 2 * 10**7),
    clawed_back=st.integers(0, 10**7),
    balance=st.integers(0, 10**8),
)
def test_clawback_never_exceeds_the_balance_nor_the_refunded_share(
    granted: int, paid: int, refunded_total: int, clawed_back: int, balance: int
) -> None:
    taken = clawback(granted, paid, refunded_total, clawed_back, balance)
    assert 0 <= taken <= balance
    assert taken <= granted
    if paid > 0:
        # The refunded share, exactly (cross-multiplied rather than rounded).
        assert (clawed_back + taken) * paid <= granted * min(refunded_total, paid) or taken == 0


@given(
    granted=st.integers(1, 10**6),
    paid=st.integers(1, 10**6),
    refunds=st.lists(st.integers(1, 10**6), min_size=1, max_size=6),
    balances=st.lists(st.integers(0, 2 * 10**6), min_size=6, max_size=6),
)
def test_a_series_of_refunds_never_takes_back_more_than_was_granted_in_total(
    granted: int, paid: int, refunds: list[int], balances: list[int]
) -> None:
    total = clawed = 0
    for amount, balance in zip(refunds, balances, strict=False):
        total = min(paid, total + amount)
        taken = clawback(granted, paid, total, clawed, balance)
        assert 0 <= taken <= balance
        clawed += taken
        assert clawed <= granted * total // paid
    assert clawed <= granted


@given(
    granted=st.integers(1, 10**6),
    paid=st.integers(1, 10**6),
    refunds=st.lists(st.integers(1, 10**6), min_size=1, max_size=6),
)
def test_with_enough_balance_partial_refunds_add_up_to_the_share_of_the_total(
    granted: int, paid: int, refunds: list[int]
) -> None:
    total = clawed = 0
    for amount in refunds:
        total = min(paid, total + amount)
        clawed += clawback(granted, paid, total, clawed, balance=10**9)
    assert clawed == granted * total // paid
    if total == paid:
        assert clawed == granted
