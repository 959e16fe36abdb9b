"""The ledger's one rule for moving credits (`postings.decide`), without a database: the
same rule answers a single debit, a grant and a batch of consumes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billfold.credits.models import EntryKind
from billfold.credits.postings import (
    Account,
    InsufficientCredits,
    KeyReused,
    Movement,
    Posted,
    decide,
)
from billfold.credits.rules import RechargePolicy

NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)
OFF = RechargePolicy(False, None, False, None)


def account(balance: int, policy: RechargePolicy = OFF, *, customer_id: str = "cus_a") -> Account:
    return Account(customer_id, balance, entries=3, policy=policy)


def consume(amount: int, key: str, customer_id: str = "cus_a") -> Movement:
    return Movement(customer_id, -amount, EntryKind.CONSUME, f"consume:{key}")


def test_a_debit_moves_the_balance_and_numbers_the_next_entry() -> None:
    accounts = {"cus_a": account(10)}

    decision = decide(accounts, {}, [consume(4, "k")], NOW)

    [posted] = decision.outcomes
    assert isinstance(posted, Posted)
    assert (posted.amount, posted.balance_after, posted.replayed) == (-4, 6, False)
    assert [(e.entry_no, e.posted) for e in decision.entries] == [(4, posted)]
    assert (accounts["cus_a"].balance, accounts["cus_a"].entries) == (6, 4)
    assert list(decision.touched) == ["cus_a"]


def test_a_debit_larger_than_the_balance_is_refused_and_changes_nothing() -> None:
    accounts = {"cus_a": account(3)}

    decision = decide(accounts, {}, [consume(4, "k")], NOW)

    [refused] = decision.outcomes
    assert isinstance(refused, InsufficientCredits)
    assert refused.status_code == 402
    assert decision.entries == []
    assert decision.touched == {}
    assert decision.refused == {0: ("cus_a", "consume:k")}
    assert accounts["cus_a"].balance == 3


def test_a_credit_is_never_refused_even_on_an_empty_account() -> None:
    decision = decide(
        {"cus_a": account(0)}, {}, [Movement("cus_a", 5, EntryKind.GRANT, "grant:g")], NOW
    )

    assert [o.balance_after for o in decision.outcomes if isinstance(o, Posted)] == [5]
    assert decision.crossings == []


def test_a_key_used_before_replays_its_answer_and_moves_nothing() -> None:
    earlier = Posted("ctx_1", -4, 6, EntryKind.CONSUME, "consume:k", NOW, True)
    accounts = {"cus_a": account(6)}

    decision = decide(accounts, {("cus_a", "consume:k"): earlier}, [consume(4, "k")], NOW)

    assert decision.outcomes == [earlier]
    assert decision.entries == []
    assert accounts["cus_a"].balance == 6


def test_a_key_repeated_in_the_same_batch_debits_once_and_replays_after() -> None:
    decision = decide({"cus_a": account(10)}, {}, [consume(4, "k"), consume(4, "k")], NOW)

    first, second = decision.outcomes
    assert isinstance(first, Posted)
    assert isinstance(second, Posted)
    assert second.id == first.id
    assert (first.replayed, second.replayed) == (False, True)
    assert len(decision.entries) == 1


def test_a_key_reused_for_another_amount_is_a_conflict_naming_the_first_amount() -> None:
    decision = decide({"cus_a": account(10)}, {}, [consume(4, "k"), consume(5, "k")], NOW)

    reused = decision.outcomes[1]
    assert isinstance(reused, KeyReused)
    assert reused.details == {"original_amount": 4}


def test_a_consume_below_the_threshold_makes_one_recharge_due_and_a_clawback_none() -> None:
    policy = RechargePolicy(True, 50, False, None)
    consumes = decide({"cus_a": account(60, policy)}, {}, [consume(20, "a"), consume(5, "b")], NOW)
    clawback = decide(
        {"cus_a": account(60, policy)},
        {},
        [Movement("cus_a", -20, EntryKind.REFUND, "clawback:p:1")],
        NOW,
    )

    assert consumes.recharges == ["cus_a"]
    assert [(c.before, c.after, c.threshold) for c in consumes.crossings] == [
        (60, 40, 50),
        (40, 35, 50),
    ]
    assert clawback.recharges == []
    assert [(c.before, c.after) for c in clawback.crossings] == [(60, 40)]


@given(
    start=st.integers(0, 50),
    debits=st.lists(st.tuples(st.integers(1, 20), st.sampled_from("abcdef")), max_size=20),
)
def test_a_batch_never_overdraws_and_its_entries_add_up_to_the_balance(
    start: int, debits: list[tuple[int, str]]
) -> None:
    accounts = {"cus_a": account(start)}

    decision = decide(accounts, {}, [consume(amount, key) for amount, key in debits], NOW)

    assert accounts["cus_a"].balance >= 0
    assert start + sum(e.posted.amount for e in decision.entries) == accounts["cus_a"].balance
    keys = [e.movement.idempotency_key for e in decision.entries]
    assert len(keys) == len(set(keys))
    assert [e.entry_no for e in decision.entries] == list(range(4, 4 + len(keys)))
    assert len(decision.outcomes) == len(debits)


@pytest.mark.parametrize("order", [["cus_b", "cus_a"], ["cus_a", "cus_b"]])
def test_debits_on_two_accounts_each_move_their_own_balance(order: list[str]) -> None:
    accounts = {c: account(10, customer_id=c) for c in order}

    decide(accounts, {}, [consume(3, "x", "cus_a"), consume(4, "x", "cus_b")], NOW)

    assert (accounts["cus_a"].balance, accounts["cus_b"].balance) == (7, 6)
