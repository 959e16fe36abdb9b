"""Whether any of our database connections holds a transaction open right now: for tests
that catch a service while Stripe is answering and check it keeps no transaction open
meanwhile (on SQLite one would hold the one write lock)."""

from __future__ import annotations

import sqlite3

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
