"""The per-process memo: a value is served again while its marker holds and it is younger
than its max age, and built anew otherwise."""

from __future__ import annotations

from billfold.kit.memo import Memo


def test_a_value_is_served_again_under_the_same_marker_and_built_anew_under_another() -> None:
    memo = Memo()
    built: list[int] = []

    def make() -> int:
        built.append(len(built))
        return len(built)

    assert memo.get("n", ("a", 1), make) == 1
    assert memo.get("n", ("a", 1), make) == 1
    assert memo.get("n", ("a", 2), make) == 2
    assert memo.made("n") == 2
    assert memo.made("other") == 0


def test_a_value_older_than_its_max_age_is_built_anew_though_the_marker_holds() -> None:
    memo = Memo()
    assert memo.get("n", "same", lambda: "first", max_age=3600) == "first"
    assert memo.get("n", "same", lambda: "second", max_age=3600) == "first"
    assert memo.get("n", "same", lambda: "third", max_age=0) == "third"
    assert memo.made("n") == 2
