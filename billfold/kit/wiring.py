"""Typed places where the application plugs one domain's behaviour into another's flow.

A domain declares a `Hook` (callables run in order, e.g. what else happens at sign-up) or a
`Table` (entries by name, e.g. what a paid payment fulfils) beside the code that runs it.
The application builds one `Wiring` holding every entry (`billfold/registry.py`,
`build_wiring`) and hands it to `Services`; nothing is registered at import time, so code
that runs without the application's wiring visibly has none rather than silently less.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Hook(Generic[T]):
    """Callables of type T that run, in the order wired, at one point of a domain's flow."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Hook({self.name!r})"


class Table(Generic[T]):
    """Entries of type T by name (a payment's purpose, a Stripe event type …)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Table({self.name!r})"


class Wiring:
    """Every hook's callables and every table's entries, built once by the application."""

    def __init__(self) -> None:
        self._hooks: dict[Hook[Any], tuple[Any, ...]] = {}
        self._tables: dict[Table[Any], dict[str, Any]] = {}

    def on(self, hook: Hook[T], *callables: T) -> Wiring:
        """Run `callables` (after those already wired) wherever `hook` is run."""
        self._hooks[hook] = self._hooks.get(hook, ()) + callables
        return self

    def put(self, table: Table[T], entries: Mapping[str, T]) -> Wiring:
        """Add entries to `table`; a name given twice is a wiring mistake."""
        current = self._tables.setdefault(table, {})
        twice = sorted(current.keys() & entries.keys())
        if twice:
            raise ValueError(f"{table.name}: {', '.join(twice)} wired twice")
        current.update(entries)
        return self

    def hooks(self, hook: Hook[T]) -> tuple[T, ...]:
        return self._hooks.get(hook, ())

    def table(self, table: Table[T]) -> Mapping[str, T]:
        return MappingProxyType(self._tables.get(table, {}))
