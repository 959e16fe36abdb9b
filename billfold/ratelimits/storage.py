"""A `limits` storage kept in our own database, so every server process shares the counters.

`limits` ships storages for Redis, Memcached, MongoDB and memory; Billfold's only shared state
is its database, so this one keeps fixed-window counters in `rate_limit_counters`. A hit is
one atomic upsert (`INSERT … ON CONFLICT DO UPDATE … RETURNING`, on SQLite and PostgreSQL
alike) that starts a new window when the old one has ended and answers both the count and
the window's end, so a request costs one round trip where `limits`' own strategy (a hit,
then `get` and `get_expiry` for the headers) would cost three.
"""

from __future__ import annotations

import time

from limits.storage import Storage
from sqlalchemy import case, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.sql import Executable

from billfold.kit.db import Database
from billfold.ratelimits.models import RateLimitCounter

_T = RateLimitCounter


class DatabaseStorage(Storage):
    """Fixed-window counters in the database (`limits.FixedWindowRateLimiter` works on it)."""

    STORAGE_SCHEME = None  # built from our Database, not from a URI

    def __init__(self, db: Database) -> None:
        super().__init__()
        self._db = db
        self._insert = postgresql.insert if db.dialect == "postgresql" else sqlite.insert

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return SQLAlchemyError

    def hit(self, key: str, expiry: float, amount: int = 1) -> tuple[int, float]:
        """Add `amount` to the key's window (a new one if it ended); answer (count, its end)."""
        with self._db.transaction() as session:
            row = session.execute(self._upsert(key, time.time(), expiry, amount)).one()
        return int(row.hits), float(row.expires_at)

    def _upsert(self, key: str, now: float, expiry: float, amount: int) -> Executable:
        insert = self._insert(_T).values(key=key, hits=amount, expires_at=now + expiry)
        ended = _T.expires_at <= now
        return insert.on_conflict_do_update(
            index_elements=[_T.key],
            set_={
                "hits": case((ended, insert.excluded.hits), else_=_T.hits + insert.excluded.hits),
                "expires_at": case((ended, insert.excluded.expires_at), else_=_T.expires_at),
            },
        ).returning(_T.hits, _T.expires_at)

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        return self.hit(key, expiry, amount)[0]

    def get(self, key: str) -> int:
        with self._db.transaction() as session:
            hits = session.scalar(select(_T.hits).where(_T.key == key, _T.expires_at > time.time()))
        return int(hits or 0)

    def get_expiry(self, key: str) -> float:
        with self._db.transaction() as session:
            expires_at = session.scalar(select(_T.expires_at).where(_T.key == key))
        now = time.time()
        return float(expires_at) if expires_at is not None and expires_at > now else now

    def check(self) -> bool:
        try:
            with self._db.transaction() as session:
                session.execute(select(func.count()).select_from(_T).where(_T.key == ""))
        except SQLAlchemyError:
            return False
        return True

    def reset(self) -> int | None:
        with self._db.transaction() as session:
            return int(session.execute(delete(_T)).rowcount)  # type: ignore[attr-defined]

    def clear(self, key: str) -> None:
        with self._db.transaction() as session:
            session.execute(delete(_T).where(_T.key == key))

    def purge_expired(self, older_than: float = 0.0) -> int:
        """Delete the counters whose window ended more than `older_than` seconds ago."""
        with self._db.transaction() as session:
            result = session.execute(delete(_T).where(_T.expires_at < time.time() - older_than))
            return int(result.rowcount)  # type: ignore[attr-defined]
