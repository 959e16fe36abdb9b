"""Whether any of our database connections holds a transaction open right now: for tests
that catch a service while Stripe is answering and check it keeps no transaction open
meanwhile (on SQLite one would hold the one write lock)."""

from __future__ import annotations

import socket
import sqlite3
from typing import Any

import pytest
from sqlalchemy import text

from billfold.services import Services


def transaction_open(services: Services) -> bool:
    engine = services.db.engine
    if engine.dialect.name == "sqlite":
        # Every transaction of ours takes the write lock (BEGIN IMMEDIATE): see if it is free.
        probe = sqlite3.connect(str(engine.url.database), timeout=0, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            return True
        else:
            probe.execute("ROLLBACK")
            return False
        finally:
            probe.close()
    with engine.connect() as conn:
        idle_in_transaction = conn.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()"
            )
        )
    return bool(idle_in_transaction)


def transaction_open_at_lookups(
    monkeypatch: pytest.MonkeyPatch, services: Services, port: int
) -> list[bool]:
    """Watches this process's DNS lookups (getaddrinfo) for `port`: for each, in order,
    whether a transaction of ours was open as it began. The lookups themselves still run."""
    seen: list[bool] = []
    real = socket.getaddrinfo

    def watched(host: Any, looked_up_port: Any, *args: Any, **kwargs: Any) -> Any:
        if looked_up_port == port:
            seen.append(transaction_open(services))
        return real(host, looked_up_port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", watched)
    return seen
