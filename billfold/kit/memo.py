"""Values derived from the database that are worth keeping between requests in one process,
each kept while the marker it was made under (a cheap question to the database) still
holds: the marker says what the value depends on, so another process's change shows."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any, TypeVar, cast

T = TypeVar("T")


class Memo:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, tuple[Hashable, Any]] = {}
        self._made: dict[str, int] = {}

    def get(self, name: str, marker: Hashable, make: Callable[[], T]) -> T:
        """The value kept under `name` if it was made under `marker`, else a fresh one."""
        with self._lock:
            held = self._held.get(name)
        if held is not None and held[0] == marker:
            return cast(T, held[1])
        value = make()
        with self._lock:
            self._held[name] = (marker, value)
            self._made[name] = self._made.get(name, 0) + 1
        return value

    def made(self, name: str) -> int:
        """How many times the value under `name` was made (not served from here)."""
        with self._lock:
            return self._made.get(name, 0)
