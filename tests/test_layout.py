"""The layout's rules that a reading of the source can check, without a database.

A route never opens a transaction of its own: it takes the request's unit of work
(`WorkDep`, `AdminWorkDep`, `PrivilegedWorkDep`, `AnonymousWorkDep` from `auth/deps.py`) or
calls one service function that owns its transactions (README "Layout", "Who owns a
transaction")."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "billfold"
OPENS_A_TRANSACTION = "db.transaction("


def _is_route_module(path: Path) -> bool:
    return path.name == "api.py" or path.name.endswith("_api.py")


# The pages' owners of the rule, not its subjects: deps.py opens the pages' units of work (as
# auth/deps.py does for the API); sessions.py is the web-session service, whose open_session
# follows sign-up's own transactions.
PAGE_OWNERS = {"deps.py", "sessions.py"}


def _is_page_module(path: Path) -> bool:
    return path.relative_to(PACKAGE / "pages").as_posix() not in PAGE_OWNERS


# Where routes live: a folder under billfold/ (searched to the bottom), and which of its
# files are routes. Add a line for a folder whose every module is routes.
ROUTE_MODULES: list[tuple[str, Callable[[Path], bool]]] = [
    (".", _is_route_module),
    ("pages", _is_page_module),
]


def route_modules() -> list[Path]:
    found: set[Path] = set()
    for folder, is_routes in ROUTE_MODULES:
        for path in (PACKAGE / folder).rglob("*.py"):
            if is_routes(path):
                found.add(path)
    return sorted(found)


def transactions_opened(path: Path) -> list[int]:
    """The lines of `path` that open a transaction of their own."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [n for n, line in enumerate(lines, start=1) if OPENS_A_TRANSACTION in line]


def test_the_route_modules_are_found() -> None:
    names = {p.relative_to(PACKAGE).as_posix() for p in route_modules()}
    assert {"credits/api.py", "customers/sign_in_api.py", "webhooks/outbound/api.py"} <= names
    assert {"pages/signin.py", "pages/billing/plan.py", "pages/admin/catalog.py"} <= names
    assert not {"pages/deps.py", "pages/sessions.py"} & names


@pytest.mark.parametrize("path", route_modules(), ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_a_route_module_opens_no_transaction(path: Path) -> None:
    opened = transactions_opened(path)
    assert not opened, (
        f"{path.relative_to(PACKAGE)} lines {opened} open a transaction: take the request's "
        "unit of work (auth/deps.py WorkDep…, pages/deps.py PageWorkDep…) or call a service "
        "function that owns it"
    )


def test_a_transaction_in_a_route_module_is_noticed(tmp_path: Path) -> None:
    route = tmp_path / "api.py"
    route.write_text("def f(services):\n    with services.db.transaction() as session:\n")
    assert _is_route_module(route)
    assert transactions_opened(route) == [2]


# The stand-in's modules that run in the test process (the launcher) are measured; the rest
# run only inside the stand-in's own process, whose coverage is not collected, and must be
# left out of the figure (pyproject [tool.coverage.run] omit), or each would count as unrun.
STANDIN_IN_OUR_PROCESS = {"__init__.py", "launcher.py"}


def test_every_standin_module_run_only_in_its_own_process_is_left_out_of_coverage() -> None:
    pyproject = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())
    omitted = set(pyproject["tool"]["coverage"]["run"]["omit"])
    standin = PACKAGE / "standin"
    expected = {
        f"billfold/standin/{path.name}"
        for path in standin.glob("*.py")
        if path.name not in STANDIN_IN_OUR_PROCESS
    }
    assert expected - omitted == set(), "add them to [tool.coverage.run] omit"
    assert not (omitted - expected), "omitted, but no longer a stand-in-process module"
