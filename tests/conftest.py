"""Fixtures: throwaway real servers (MariaDB, Redis, InfluxDB, our three services) on free loopback ports.

Storage-facing tests take ``database_url`` or ``key_value_store``, which run each test twice: embedded
(SQLite file, in-process store) and production (a fresh database on the harness's MariaDB, its Redis).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from harness.external import TEMPLATE_CACHE, InfluxDBServer, MariaDBServer, RedisServer, production_env
from harness.services import Stack
from service_runtime.cache import InProcessStore, KeyValueStore, RedisStore, SqlStore
from service_runtime.database import Database, open_database
from services.monitor_svc.schema import MIGRATIONS as MONITOR_MIGRATIONS
from services.monitor_svc.schema import VERSION_TABLE as MONITOR_VERSION_TABLE

_database_names = itertools.count()


@pytest.fixture(scope="session")
def mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDBServer]:
    """A real mariadbd for the whole session (template data dir made once per machine, copied here)."""
    with MariaDBServer(tmp_path_factory.mktemp("mariadb"), TEMPLATE_CACHE) as server:
        yield server


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="session")
def influxdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxDBServer]:
    with InfluxDBServer(tmp_path_factory.mktemp("influxdb")) as server:
        yield server


@pytest.fixture(params=["embedded", "production"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: a SQLite file, or a fresh database on the harness's MariaDB."""
    if request.param == "embedded":
        return f"sqlite:///{tmp_path / 'test.sqlite3'}"
    server: MariaDBServer = request.getfixturevalue("mariadb")
    return server.create_database(f"test_{next(_database_names)}")


@pytest.fixture(params=["in-process", "redis", "sqlite", "mariadb"])
async def key_value_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[KeyValueStore]:
    """Each twin of the key-value port: in-process, Redis on the harness's redis-server (a fresh key prefix per
    test), and the database table on a SQLite file and on a fresh MariaDB database."""
    store: KeyValueStore
    database: Database | None = None
    if request.param == "in-process":
        store = InProcessStore()
    elif request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        store = RedisStore(server.url, prefix=f"test{next(_database_names)}:")
    else:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path / 'kv.sqlite3'}"
        else:
            url = request.getfixturevalue("mariadb").create_database(f"kv_{next(_database_names)}")
        database = await open_database(url, MONITOR_MIGRATIONS, MONITOR_VERSION_TABLE)
        store = SqlStore(database)
    yield store
    await store.close()
    if database is not None:
        await database.close()


@pytest.fixture(scope="session")
def embedded_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The three services, embedded: SQLite files and in-process stores in a temp data dir."""
    with Stack(tmp_path_factory.mktemp("embedded"), {}) as stack:
        yield stack


@pytest.fixture(scope="session")
def production_stack(
    tmp_path_factory: pytest.TempPathFactory,
    mariadb: MariaDBServer,
    redis_server: RedisServer,
    influxdb: InfluxDBServer,
) -> Iterator[Stack]:
    """The services on MariaDB, Redis and InfluxDB, with a master key from the environment, as in production."""
    with Stack(
        tmp_path_factory.mktemp("production"), production_env(mariadb, redis_server, influxdb, "stack")
    ) as stack:
        yield stack


@pytest.fixture(params=["embedded", "production"], scope="session")
def stack(request: pytest.FixtureRequest) -> Stack:
    """Each of the two stacks in turn."""
    return request.getfixturevalue(f"{request.param}_stack")  # type: ignore[no-any-return]
