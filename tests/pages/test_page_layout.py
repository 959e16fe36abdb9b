"""The pages' transaction rule, checked by reading the source (no database): a page module
never opens a transaction of its own. A page takes its request's unit of work
(`PageWorkDep`, `AdminPageWorkDep`, `PageSessionDep` from `pages/deps.py`) or calls one
service function that owns its transactions around Stripe (README "Who owns a transaction").

Two modules are the rule's owners, not its subjects: `deps.py` opens the pages' units of
work (as `auth/deps.py` does for the API), and `sessions.py` is the web-session service,
whose `open_session` follows sign-up's own transactions."""

from __future__ import annotations

from pathlib import Path

import pytest

PAGES = Path(__file__).resolve().parents[2] / "billfold" / "pages"
OPENS_A_TRANSACTION = "db.transaction("
OWNERS = {"deps.py", "sessions.py"}


def page_modules() -> list[Path]:
    return sorted(p for p in PAGES.rglob("*.py") if p.relative_to(PAGES).as_posix() not in OWNERS)


def transactions_opened(path: Path) -> list[int]:
    """The lines of `path` that open a transaction of their own."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [n for n, line in enumerate(lines, start=1) if OPENS_A_TRANSACTION in line]


def test_the_page_modules_are_found() -> None:
    names = {p.relative_to(PAGES).as_posix() for p in page_modules()}
    assert {"signin.py", "billing/plan.py", "admin/catalog.py"} <= names
    assert not names & OWNERS


@pytest.mark.parametrize("path", page_modules(), ids=lambda p: p.relative_to(PAGES).as_posix())
def test_a_page_module_opens_no_transaction(path: Path) -> None:
    opened = transactions_opened(path)
    assert not opened, (
        f"pages/{path.relative_to(PAGES)} lines {opened} open a transaction: take the page's "
        "unit of work (pages/deps.py PageWorkDep…) or call a service function that owns it"
    )


def test_a_transaction_in_a_page_module_is_noticed(tmp_path: Path) -> None:
    page = tmp_path / "page.py"
    page.write_text("def f(services):\n    with services.db.transaction() as session:\n")
    assert transactions_opened(page) == [2]
