"""The Alembic migrations build exactly the schema of the models, and undo it, on both engines."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from conftest import DATABASES
from sqlalchemy import create_engine, inspect, pool
from support.postgres import ThrowawayPostgres

import billfold.models  # noqa: F401  (registers every table on Base.metadata)
from billfold import migrations
from billfold.kit.db import Base

MODEL_TABLES = set(Base.metadata.tables)


@pytest.fixture(params=DATABASES)
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no tables at all (not the migrated copy that `database_url` gives)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    if request.param == "pgbouncer":
        pytest.skip("migrations run on PostgreSQL directly")
    server: ThrowawayPostgres = request.getfixturevalue("postgres")
    yield server.create_database(f"m_{uuid.uuid4().hex[:12]}")


def _tables(url: str) -> set[str]:
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _schema_differences(url: str) -> list[Any]:
    """What autogenerate would still write to go from this database to the models."""
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection)
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def _ignoring_type_only(differences: list[Any]) -> list[Any]:
    # A column-level difference comes as a list of ("modify_…", …) tuples; type-only ones
    # (our UTCDateTime decorator against the reflected TIMESTAMP, say) are expected.
    kept: list[Any] = []
    for difference in differences:
        if isinstance(difference, list):
            rest = [op for op in difference if op[0] != "modify_type"]
            if rest:
                kept.append(rest)
        else:
            kept.append(difference)
    return kept


def test_upgrade_downgrade_and_upgrade_again(empty_database_url: str) -> None:
    assert _tables(empty_database_url) == set()

    migrations.upgrade(empty_database_url)
    assert _tables(empty_database_url) == MODEL_TABLES | {"alembic_version"}

    migrations.downgrade(empty_database_url, "base")
    assert _tables(empty_database_url) - {"alembic_version"} == set()

    migrations.upgrade(empty_database_url)
    assert _tables(empty_database_url) == MODEL_TABLES | {"alembic_version"}


def test_migrated_schema_matches_the_models(empty_database_url: str) -> None:
    migrations.upgrade(empty_database_url)
    assert _ignoring_type_only(_schema_differences(empty_database_url)) == []


def test_schema_comparison_notices_a_missing_table(empty_database_url: str) -> None:
    """The comparison above is not vacuous: a schema missing a model's table is reported."""
    migrations.upgrade(empty_database_url)
    engine = create_engine(empty_database_url, poolclass=pool.NullPool)
    try:
        with engine.begin() as connection:
            Base.metadata.tables["api_keys"].drop(connection)
    finally:
        engine.dispose()
    differences = _ignoring_type_only(_schema_differences(empty_database_url))
    assert [d[0] for d in differences] == ["add_table"]
    assert differences[0][1].name == "api_keys"
