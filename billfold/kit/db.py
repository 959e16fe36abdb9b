"""The database adapter: engine, transactions, the declarative base, IDs and UTC timestamps."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    DateTime,
    Engine,
    MetaData,
    String,
    any_,
    bindparam,
    create_engine,
    event,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, QueryableAttribute, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def new_id(prefix: str) -> str:
    """An opaque ID of ours: `cust_<32 hex>`, `job_<32 hex>`…"""
    return f"{prefix}_{uuid.uuid4().hex}"


def utcnow() -> datetime:
    return datetime.now(UTC)


def one_of(
    column: ColumnElement[str] | QueryableAttribute[str], name: str, *, postgresql: bool
) -> ColumnElement[bool]:
    """`column IN (:name...)` for a statement that runs very often. On PostgreSQL it is
    `column = ANY(:name)`, one array parameter: the statement's text is the same whatever the
    list's length, so psycopg prepares it once per connection and PostgreSQL plans it once,
    and SQLAlchemy need not re-render it on every run. SQLite has no arrays: an expanding IN.
    """
    if postgresql:
        return column == any_(bindparam(name, type_=ARRAY(String)))
    return column.in_(bindparam(name, expanding=True))


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every database (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Execution option of a connection whose transactions mostly read (`kit/batching.py`'s
# readers): on SQLite they begin deferred, without the write lock. PostgreSQL ignores it.
READER = "billfold_reader"


def make_engine(url: str, *, transaction_pooler: bool = False) -> Engine:
    """The engine; its errors never carry their bound parameters (password hashes, e-mails),
    which would otherwise reach the logs with the error. Behind a transaction-pooling
    PgBouncer (`transaction_pooler`) psycopg prepares no statements on the server: the next
    transaction may run on a server connection that never saw them."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            hide_parameters=True,
        )
        _make_sqlite_transactions_immediate(engine)
        return engine
    return create_engine(
        url,
        pool_size=10,
        max_overflow=40,
        pool_pre_ping=True,
        hide_parameters=True,
        connect_args={"prepare_threshold": None} if transaction_pooler else {},
    )


def _make_sqlite_transactions_immediate(engine: Engine) -> None:
    # SQLite's deferred transactions cannot upgrade a stale read to a write and fail at once
    # ("database is locked"); taking the write lock at BEGIN makes writers queue instead.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # A reader's transaction takes no lock up front, so it neither waits for a writer nor
        # holds writers back; should it write after all, SQLite may refuse it (a writer came
        # between), and the reader's caller retries it as an ordinary transaction.
        conn.exec_driver_sql(
            "BEGIN" if conn.get_execution_options().get(READER) else "BEGIN IMMEDIATE"
        )


class Database:
    """Owns the engine; hands out sessions and short transactions."""

    def __init__(self, url: str, *, transaction_pooler: bool = False) -> None:
        self.url = url
        self.engine = make_engine(url, transaction_pooler=transaction_pooler)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session whose work commits on success and rolls back on any error."""
        with self.sessions() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
