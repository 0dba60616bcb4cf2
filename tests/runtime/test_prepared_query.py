"""Prepared reads (``Database.prepare`` / ``fetch_one``) on both relational stores, against SQLAlchemy's own
execute of the same statement: same rows, same types and time zones, same parameter handling, and never a
stale read after a write by this or another connection."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from harness.clock import midnight_days_ago
from service_runtime.database import Database, UtcDateTime, create_sync_engine

metadata = sa.MetaData()
things = sa.Table(
    "things",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(100)),
    sa.Column("size", sa.Integer),
    sa.Column("active", sa.Boolean),
    sa.Column("create_time", UtcDateTime()),
    sa.Column("expire_time", UtcDateTime(), nullable=True),
)
T0 = midnight_days_ago(1) + timedelta(hours=15, minutes=4, seconds=5, microseconds=123456)
BY_ID = sa.select(things).where(things.c.id == sa.bindparam("id"))


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    engine = create_sync_engine(database_url)
    metadata.create_all(engine)
    engine.dispose()
    database = Database(database_url)
    await database.run(
        lambda connection: connection.execute(
            sa.insert(things),
            [
                {"id": "a", "name": "Ä x", "size": 5, "active": True, "create_time": T0, "expire_time": None},
                {
                    "id": "b",
                    "name": "b",
                    "size": 7,
                    "active": False,
                    "create_time": T0 + timedelta(days=1),
                    "expire_time": T0 + timedelta(days=2),
                },
            ],
        )
    )
    yield database
    await database.close()


async def sqlalchemy_first(database: Database, statement: sa.Select, params: dict[str, object]) -> object:  # type: ignore[type-arg]
    row = await database.run(lambda connection: connection.execute(statement, params).first())
    return None if row is None else tuple(row)


@pytest.mark.parametrize("key", ["a", "b", "missing"])
async def test_rows_match_sqlalchemy_with_types_and_time_zones(database: Database, key: str) -> None:
    row = await database.fetch_one(database.prepare(BY_ID), {"id": key})
    assert row == await sqlalchemy_first(database, BY_ID, {"id": key})
    if key == "a":
        assert row == ("a", "Ä x", 5, True, T0, None)
        assert row is not None
        assert row[4].tzinfo is not None


async def test_datetime_parameters_and_literal_values_are_bound_as_sqlalchemy_binds_them(database: Database) -> None:
    statement = (
        sa.select(things.c.id)
        .where(things.c.create_time > sa.bindparam("after", type_=UtcDateTime()))
        .where(things.c.size > 6)  # a literal: its value travels with the statement
    )
    query = database.prepare(statement)
    assert await database.fetch_one(query, {"after": T0}) == ("b",)
    assert await database.fetch_one(query, {"after": T0 + timedelta(days=1)}) is None
    # A naive datetime is refused by the column type, as it is through SQLAlchemy.
    with pytest.raises(ValueError, match="timezone-aware"):
        await database.fetch_one(query, {"after": datetime(2001, 1, 1)})


async def test_in_lists_are_refused_when_preparing(database: Database) -> None:
    with pytest.raises(ValueError, match="IN lists"):
        database.prepare(sa.select(things.c.id).where(things.c.id.in_(sa.bindparam("ids", expanding=True))))


async def test_reads_see_writes_made_here_and_by_another_connection(database: Database, database_url: str) -> None:
    query = database.prepare(sa.select(things.c.name).where(things.c.id == sa.bindparam("id")))
    assert await database.fetch_one(query, {"id": "a"}) == ("Ä x",)
    await database.run(lambda c: c.execute(sa.update(things).where(things.c.id == "a").values(name="here")))
    assert await database.fetch_one(query, {"id": "a"}) == ("here",)
    # Another process (the admin command, another replica) writes: no snapshot left open here hides it.
    other = create_sync_engine(database_url)
    try:
        with other.begin() as connection:
            connection.execute(sa.update(things).where(things.c.id == "a").values(name="elsewhere"))
    finally:
        other.dispose()
    assert await database.fetch_one(query, {"id": "a"}) == ("elsewhere",)
    # And this process can still write afterwards (no read transaction holds a lock).
    await database.run(lambda c: c.execute(sa.delete(things).where(things.c.id == "a")))
    assert await database.fetch_one(query, {"id": "a"}) is None


async def test_a_connection_the_database_lost_is_replaced(database: Database, database_url: str) -> None:
    query = database.prepare(sa.select(things.c.name).where(things.c.id == sa.bindparam("id")))
    assert await database.fetch_one(query, {"id": "a"}) == ("Ä x",)
    if database_url.startswith("sqlite"):
        # The held connection breaks under the read: that read fails, the next opens a new connection.
        held = database._inline_connection().connection.driver_connection
        assert held is not None
        held.close()
        with pytest.raises(sqlite3.ProgrammingError):
            await database.fetch_one(query, {"id": "a"})
    else:
        # The server ends every connection of this database but the killer's own.
        other = create_sync_engine(database_url)
        try:
            with other.connect() as connection:
                ids = connection.execute(
                    sa.text(
                        "SELECT id FROM information_schema.processlist WHERE db = DATABASE() AND id <> CONNECTION_ID()"
                    )
                ).scalars()
                for connection_id in ids:
                    connection.execute(sa.text(f"KILL CONNECTION {int(connection_id)}"))
        finally:
            other.dispose()
    assert await database.fetch_one(query, {"id": "a"}) == ("Ä x",)
