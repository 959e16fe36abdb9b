"""Alembic environment: the URL comes from the caller, the target schema from our models."""

from __future__ import annotations

from typing import Any, Literal

from alembic import context
from sqlalchemy import create_engine, pool

import billfold.models  # noqa: F401  (registers every table on Base.metadata)
from billfold.kit.db import Base, UTCDateTime

config = context.config


def _render_item(type_: str, obj: Any, _autogen_context: Any) -> str | Literal[False]:
    # Migrations must not depend on our Python types: UTCDateTime is a timestamptz.
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def run_migrations() -> None:
    url: str = config.attributes.get("database_url") or config.get_main_option("sqlalchemy.url", "")
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            render_item=_render_item,
            compare_type=lambda *_a: False,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations()
