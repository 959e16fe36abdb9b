"""Values derived from the database that are worth keeping between requests in one process,
each kept while the marker it was made under (a cheap question to the database) still
holds: the marker says what the value depends on, so another process's change shows."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, TypeVar, cast

T = TypeVar("T")


class Memo:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, tuple[Hashable, Any, float]] = {}
        self._made: dict[str, int] = {}

    def get(
        self, name: str, marker: Hashable, make: Callable[[], T], max_age: float | None = None
    ) -> T:
        """The value kept under `name` if it was made under `marker` (and, with `max_age`,
        at most that many seconds ago), else a fresh one."""
        with self._lock:
            held = self._held.get(name)
        if (
            held is not None
            and held[0] == marker
            and (max_age is None or time.monotonic() - held[2] < max_age)
        ):
            return cast(T, held[1])
        value = make()
        with self._lock:
            self._held[name] = (marker, value, time.monotonic())
            self._made[name] = self._made.get(name, 0) + 1
        return value

    def made(self, name: str) -> int:
        """How many times the value under `name` was made (not served from here)."""
        with self._lock:
            return self._made.get(name, 0)
