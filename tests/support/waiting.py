"""Polling for an outcome that arrives asynchronously (a webhook, a job, a lease)."""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import Engine, text


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll `predicate` until it holds or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def waits_on_a_lock(engine: Engine) -> bool:
    """Whether some session of this PostgreSQL database waits for a lock another holds."""
    with engine.connect() as connection:
        waiting = connection.execute(
            text(
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                " WHERE NOT l.granted AND a.datname = current_database()"
            )
        ).scalar_one()
    return bool(waiting)
