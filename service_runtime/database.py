"""Relational storage: SQLite when embedded, MySQL/MariaDB through PyMySQL in production.

Each service owns its tables and its Alembic history (its own version table), so the three services can
share one MySQL database or use separate ones. Migrations run on start, before the server listens.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import sqlalchemy as sa
import sqlalchemy.dialects.mysql
import sqlalchemy.dialects.sqlite
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import URL, make_url

from service_runtime.errors import ResourceExhausted, Unavailable
from service_runtime.settings import StartupError

log = logging.getLogger(__name__)
T = TypeVar("T")


def sync_url(url: str) -> URL:
    """The SQLAlchemy URL for a user-facing one: ``sqlite:///path`` or ``mysql+pymysql://...`` (utf8mb4)."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        return parsed.set(drivername="sqlite")
    if backend in ("mysql", "mariadb"):
        query = dict(parsed.query)
        query.setdefault("charset", "utf8mb4")
        return parsed.set(drivername="mysql+pymysql", query=query)
    raise ValueError(f"unsupported database URL scheme {parsed.drivername!r}: use sqlite:/// or mysql+pymysql://")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the services and the admin command read while one writes; busy_timeout waits out a writer.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def create_sync_engine(url: str, pool_size: int = 5) -> sa.Engine:
    """An engine with connect, read and write timeouts and, for SQLite, the pragmas we rely on."""
    target = sync_url(url)
    if target.get_backend_name() == "sqlite":
        engine = sa.create_engine(target, connect_args={"timeout": 5, "check_same_thread": False})
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return sa.create_engine(
        target,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=3600,
        pool_pre_ping=True,
        pool_timeout=5,
        connect_args={"connect_timeout": 5, "read_timeout": 30, "write_timeout": 30},
    )


def describe_url(url: str) -> str:
    """``url`` fit for a log line or an error: the password hidden."""
    return make_url(url).render_as_string(hide_password=True)


def _unreachable(url: str, error: sa.exc.DBAPIError) -> StartupError:
    """One line for a database we cannot connect to (a wrong password, a server down), not a traceback."""
    reason = error.orig.args[-1] if error.orig is not None and error.orig.args else str(error.orig or error)
    return StartupError(f"cannot connect to the database {describe_url(url)}: {reason}")


MIGRATION_LOCK_WAIT_S = 300.0


def migrate(url: str, migrations_dir: Path, version_table: str) -> None:
    """Apply every Alembic revision in ``migrations_dir`` to the database at ``url``.

    One process at a time per database (:class:`DatabaseLock` "migrations"): two services starting together on
    an empty database both created the version table, and one died. Raises :class:`StartupError` (one line)
    when the database cannot be reached or is not utf8mb4."""
    engine = create_sync_engine(url)
    lock = DatabaseLock(url, "migrations")
    # A server is asked first (a wrong password is one line, not a wait on a lock); a SQLite file only under
    # the lock: connecting sets its journal mode, which waits for another process's migration to commit and,
    # past the busy timeout, failed with "database is locked".
    server = engine.dialect.name != "sqlite"
    try:
        if server:
            _probe(engine, url)
        if not lock.acquire(MIGRATION_LOCK_WAIT_S):
            raise StartupError(
                f"the database {describe_url(url)} is being migrated by another process"
                f" ({lock.holder()}) for more than {MIGRATION_LOCK_WAIT_S:.0f} s"
            )
        if not server:
            _probe(engine, url)
        with engine.begin() as connection:
            _check_character_set(connection, url)
            config = Config()
            config.set_main_option("script_location", str(migrations_dir))
            config.attributes["connection"] = connection
            config.attributes["version_table"] = version_table
            command.upgrade(config, "head")
    finally:
        lock.release()
        engine.dispose()
    log.info("migrations applied", extra={"version_table": version_table})


def _probe(engine: sa.Engine, url: str) -> None:
    try:
        engine.connect().close()
    except sa.exc.DBAPIError as error:
        raise _unreachable(url, error) from None


def _check_character_set(connection: sa.Connection, url: str) -> None:
    """MySQL: the database's default character set must be utf8mb4, or tables we create hold no emoji (and on
    latin1 or utf8mb3 the text conversion of migration 0006 widened TEXT columns, surprising 0007)."""
    if connection.dialect.name != "mysql":
        return
    name, charset = connection.execute(sa.text("SELECT DATABASE(), @@character_set_database")).one()
    if charset != "utf8mb4":
        raise StartupError(
            f"the database {describe_url(url)} uses the character set {charset}; monitors needs utf8mb4:"
            f" ALTER DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
        )


class DatabaseLock:
    """A named lock beside the database at ``url``, held until :meth:`release` (or the process ends).

    MySQL/MariaDB: ``GET_LOCK`` on a connection of its own, so the server frees it if the process dies. SQLite:
    ``flock`` on a file beside the database file, which the kernel frees likewise.
    """

    def __init__(self, url: str, purpose: str) -> None:
        target = sync_url(url)
        self._url = url
        self._engine: sa.Engine | None = None
        self._connection: sa.Connection | None = None
        self._file: Any = None
        self._path: Path | None = None
        if target.get_backend_name() == "sqlite":
            database = target.database or ""
            if database and database != ":memory:":
                self._path = Path(database).with_name(f"{Path(database).name}.{purpose}.lock")
        else:
            # Lock names are server-wide (all databases), at most 64 characters.
            scope = target.database or ""
            if len(scope) + len(purpose) > 50:
                scope = hashlib.sha256(scope.encode()).hexdigest()[:16]
            self.name = f"monitors:{scope}:{purpose}"
            self._engine = create_sync_engine(url, pool_size=1)

    def acquire(self, wait_s: float) -> bool:
        """Take the lock, waiting up to ``wait_s`` (0: one try); whether it is ours."""
        deadline = time.monotonic() + wait_s
        if self._engine is not None:
            return self._acquire_mysql(deadline)
        if self._path is None:
            return True  # an in-memory database is this process's alone
        self._file = self._path.open("a+")
        while True:
            try:
                fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    self._file.close()
                    self._file = None
                    return False
                time.sleep(0.05)
                continue
            self._file.truncate(0)
            self._file.write(f"process {os.getpid()} on {socket.gethostname()}\n")
            self._file.flush()
            return True

    def _acquire_mysql(self, deadline: float) -> bool:
        assert self._engine is not None
        if self._connection is None:
            try:
                self._connection = self._engine.connect()
            except sa.exc.DBAPIError as error:
                raise _unreachable(self._url, error) from None
        while True:
            # In slices, under the connection's read timeout.
            wait = max(0, min(10, int(deadline - time.monotonic())))
            got = self._connection.execute(sa.text("SELECT GET_LOCK(:name, :wait)"), {"name": self.name, "wait": wait})
            self._connection.commit()  # the lock outlives transactions; end the one the SELECT opened
            if got.scalar() == 1:
                return True
            if time.monotonic() >= deadline:
                return False

    def held(self) -> bool:
        """Whether the lock is still ours: MySQL's is lost with its connection (the server restarted)."""
        if self._connection is None:
            return self._file is not None
        try:
            mine = self._connection.execute(
                sa.text("SELECT IS_USED_LOCK(:name) = CONNECTION_ID()"), {"name": self.name}
            )
            result = mine.scalar() == 1
            self._connection.commit()
            return result
        except sa.exc.DBAPIError:
            self._connection.invalidate()
            self._connection.close()
            self._connection = None
            return False

    def holder(self) -> str:
        """Who holds the lock, as far as we can tell (for the message of one who could not take it)."""
        if self._path is not None:
            try:
                return self._path.read_text().strip() or "another process"
            except OSError:
                return "another process"
        if self._engine is None:
            return "another process"
        with self._engine.connect() as connection:
            row = connection.execute(
                sa.text(
                    "SELECT l.id, p.host FROM (SELECT IS_USED_LOCK(:name) AS id) l"
                    " LEFT JOIN information_schema.processlist p ON p.id = l.id"
                ),
                {"name": self.name},
            ).one()
        if row.id is None:
            return "another process, now gone"
        return f"database connection {row.id}" + (f" from {row.host}" if row.host else "")

    def release(self) -> None:
        """Give the lock back (idempotent)."""
        if self._file is not None:
            self._file.close()  # closing the descriptor drops the flock
            self._file = None
        if self._connection is not None:
            try:
                self._connection.execute(sa.text("SELECT RELEASE_LOCK(:name)"), {"name": self.name})
                self._connection.commit()
            except sa.exc.DBAPIError:
                pass  # a lost connection holds nothing
            self._connection.close()
            self._connection = None
        if self._engine is not None:
            self._engine.dispose()


# Text compares exactly on MySQL, as it does on SQLite. A MySQL database's usual collations (utf8mb4_unicode_ci,
# utf8mb4_general_ci) ignore case and accents and strip some invisible characters, so "josé@example.com" would
# find the account of "jose@example.com", and "TOKEN" overwrite a secret named "Token".
MYSQL_COLLATION = "utf8mb4_bin"


def use_exact_text_comparison(bind: sa.Connection, tables: Sequence[str]) -> None:
    """For migrations: on MySQL, convert ``tables`` to :data:`MYSQL_COLLATION` (on SQLite text is already exact).

    MariaDB refuses to change the collation of a column in a foreign key (whichever side goes first, even with
    foreign key checks off), so the foreign keys among ``tables`` are dropped first and made again after.
    """
    if bind.dialect.name != "mysql":
        return
    names: sa.BindParameter[list[str]] = sa.bindparam("tables", expanding=True)
    rows = bind.execute(
        sa.text(
            "SELECT k.constraint_name, k.table_name, k.column_name, k.referenced_table_name,"
            " k.referenced_column_name, r.delete_rule, r.update_rule"
            " FROM information_schema.key_column_usage k JOIN information_schema.referential_constraints r"
            " ON r.constraint_schema = k.constraint_schema AND r.constraint_name = k.constraint_name"
            " AND r.table_name = k.table_name"
            " WHERE k.table_schema = DATABASE() AND k.referenced_table_name IS NOT NULL AND k.table_name IN :tables"
            " ORDER BY k.table_name, k.constraint_name, k.ordinal_position"
        ).bindparams(names),
        {"tables": list(tables)},
    ).all()
    foreign_keys: dict[tuple[str, str], list[Any]] = {}
    for row in rows:
        foreign_keys.setdefault((row.table_name, row.constraint_name), []).append(row)
    for table, constraint in foreign_keys:
        bind.execute(sa.text(f"ALTER TABLE `{table}` DROP FOREIGN KEY `{constraint}`"))
    for table in tables:
        bind.execute(sa.text(f"ALTER TABLE `{table}` CONVERT TO CHARACTER SET utf8mb4 COLLATE {MYSQL_COLLATION}"))
    for (table, constraint), columns in foreign_keys.items():
        first = columns[0]
        bind.execute(
            sa.text(
                f"ALTER TABLE `{table}` ADD CONSTRAINT `{constraint}`"
                f" FOREIGN KEY ({', '.join(f'`{c.column_name}`' for c in columns)})"
                f" REFERENCES `{first.referenced_table_name}`"
                f" ({', '.join(f'`{c.referenced_column_name}`' for c in columns)})"
                f" ON DELETE {first.delete_rule} ON UPDATE {first.update_rule}"
            )
        )


ALREADY_LARGE = frozenset({"mediumtext", "longtext", "mediumblob", "longblob"})


def use_large_text_columns(bind: sa.Connection, table: str, columns: Sequence[str]) -> None:
    """For migrations: on MySQL, widen ``columns`` of ``table`` from TEXT/BLOB (64 KiB) to MEDIUMTEXT/MEDIUMBLOB
    (16 MiB), keeping their nullability, so what validation accepts fits as it does on SQLite (unbounded)."""
    if bind.dialect.name != "mysql":
        return
    for column in columns:
        data_type, nullable = bind.execute(
            sa.text(
                "SELECT data_type, is_nullable FROM information_schema.columns"
                " WHERE table_schema = DATABASE() AND table_name = :table AND column_name = :column"
            ),
            {"table": table, "column": column},
        ).one()
        if data_type in ALREADY_LARGE:
            # On a database that was latin1 or utf8mb3, converting the table to utf8mb4 (use_exact_text_comparison)
            # already chose MEDIUMTEXT to keep TEXT's length in characters.
            continue
        wide = {"text": f"MEDIUMTEXT CHARACTER SET utf8mb4 COLLATE {MYSQL_COLLATION}", "blob": "MEDIUMBLOB"}[data_type]
        null = "NULL" if nullable == "YES" else "NOT NULL"
        bind.execute(sa.text(f"ALTER TABLE `{table}` MODIFY `{column}` {wide} {null}"))


def upsert(c: sa.Connection, table: sa.Table, values: Mapping[str, Any], update: Sequence[str]) -> None:
    """Insert a row, or set the ``update`` columns of the row with the same primary key, in one statement: two
    writers of a new key both succeed (select-then-insert lost with a duplicate key error, and recovering from it
    deadlocked InnoDB's waiting writers)."""
    if c.dialect.name == "mysql":
        on_mysql = sqlalchemy.dialects.mysql.insert(table).values(values)
        c.execute(on_mysql.on_duplicate_key_update({column: on_mysql.inserted[column] for column in update}))
        return
    on_sqlite = sqlalchemy.dialects.sqlite.insert(table).values(values)
    c.execute(
        on_sqlite.on_conflict_do_update(
            index_elements=list(table.primary_key.columns),
            set_={column: on_sqlite.excluded[column] for column in update},
        )
    )


@dataclass(frozen=True)
class Quota:
    """At most ``limit`` rows of an owner's; past it, RESOURCE_EXHAUSTED naming ``name`` and saying ``message``."""

    name: str
    limit: int
    message: str


def insert_under_quota(
    c: sa.Connection, table: type[Any], values: Mapping[str, Any], counted: sa.ColumnElement[bool], quota: Quota
) -> None:
    """Insert ``values`` into ``table`` (an ORM class) unless ``quota.limit`` of its rows match ``counted`` (an
    owner's rows, or their live ones) already. The count is taken in the insert's own transaction; a caller
    whose creates of one owner may race serialises them first (the alert store locks the owner's row)."""
    if c.execute(sa.select(sa.func.count()).select_from(table).where(counted)).scalar_one() >= quota.limit:
        raise ResourceExhausted(quota.name, quota.message)
    c.execute(sa.insert(table).values(values))


class HeldTransaction(Protocol):
    """Runs ``work(connection)`` in a transaction held open by :meth:`Database.held`."""

    def __call__(self, work: Callable[[sa.Connection], T], /) -> Awaitable[T]: ...


# MySQL and MariaDB errors that say the server cannot be reached or went away (it restarts, the network drops):
# can't connect (2002, 2003), gone away (2006), lost during a query (2013, 2055), shutting down (1053), the
# connection killed (1927).
UNREACHABLE_CODES = frozenset({1053, 1927, 2002, 2003, 2006, 2013, 2055})


def unreachable(error: sa.exc.DBAPIError) -> bool:
    """Whether ``error`` says the database server is out of reach (rather than refusing a statement)."""
    code = error.orig.args[0] if error.orig is not None and error.orig.args else None
    return bool(error.connection_invalidated) or code in UNREACHABLE_CODES


def _reachable(call: Callable[..., T], *args: Any) -> T:
    """``call(*args)``, with a database out of reach raised as :class:`DatabaseUnavailable`."""
    try:
        return call(*args)
    except sa.exc.DBAPIError as error:
        if unreachable(error):
            raise DatabaseUnavailable() from error
        raise


class DatabaseUnavailable(Unavailable):
    """The database server is out of reach: UNAVAILABLE, for the caller to retry. A restart of MariaDB had been
    answered INTERNAL by every service for as long as it lasted."""

    def __init__(self) -> None:
        super().__init__("the database is unreachable right now; retry in a few seconds")


class Database:
    """A blocking SQLAlchemy engine driven from asyncio: SQLite inline, MySQL through a pool of worker threads.

    Why not SQLAlchemy's asyncio extension: measured here, an ORM read through aiosqlite cost about 2 ms of
    CPU per call against about 0.1 ms for the same Core read done directly (an ORM Session doubles that, so
    stores use Core). PyMySQL releases the GIL while it waits on the network, so threads serve MySQL well.
    Each unit of work runs in one transaction.
    """

    def __init__(self, url: str, workers: int = 8) -> None:
        # SQLite work runs inline: a statement on a local file takes microseconds, readers never wait in WAL
        # mode, and handing each one to a thread cost more than the statement (GIL hand-offs).
        self._inline = sync_url(url).get_backend_name() == "sqlite"
        self.engine = create_sync_engine(url, pool_size=1 if self._inline else workers)
        self._executor = None if self._inline else ThreadPoolExecutor(max_workers=workers, thread_name_prefix="db")
        self._connection: sa.Connection | None = None

    def _transaction(self, work: Callable[[sa.Connection], T]) -> T:
        with self.engine.begin() as connection:
            return work(connection)

    def _inline_connection(self) -> sa.Connection:
        # Inline work never overlaps (it runs on the event loop without awaiting), so one connection held
        # open serves it all, saving a pool checkout and return per call.
        if self._connection is None:
            self._connection = self.engine.connect()
        return self._connection

    def _inline_transaction(self, work: Callable[[sa.Connection], T]) -> T:
        connection = self._inline_connection()
        with connection.begin():
            return work(connection)

    async def run(self, work: Callable[[sa.Connection], T]) -> T:
        """Run ``work(connection)`` in one transaction (on a worker thread for MySQL): committed on return,
        rolled back on error."""
        if self._executor is None:
            return self._inline_transaction(work)
        return await asyncio.get_running_loop().run_in_executor(self._executor, _reachable, self._transaction, work)

    @asynccontextmanager
    async def held(self) -> AsyncIterator[HeldTransaction]:
        """One transaction held open across awaits, for work that keeps rows locked while it waits on something
        else (another store): yields a ``run(work)`` like :meth:`run` whose calls all share the transaction,
        committed when the block ends, rolled back if it raises. On SQLite, which runs inline on one connection
        that every caller shares, each ``run`` is its own transaction instead: a SQLite database has one process
        serving it, whose own locks order its writers."""
        if self._executor is None:
            yield self.run
            return
        loop = asyncio.get_running_loop()
        executor = self._executor
        connection = await loop.run_in_executor(executor, _reachable, self.engine.connect)
        try:
            await loop.run_in_executor(executor, connection.begin)

            async def run(work: Callable[[sa.Connection], T]) -> T:
                return await loop.run_in_executor(executor, _reachable, work, connection)

            yield run
            await loop.run_in_executor(executor, _reachable, connection.commit)
        finally:
            # Closing returns the connection to the pool, rolling back what was not committed.
            await loop.run_in_executor(executor, connection.close)

    def prepare(self, statement: sa.Select[*tuple[Any, ...]]) -> Query:
        """``statement`` prepared for :meth:`fetch_one`."""
        return Query(statement)

    async def fetch_one(self, query: Query, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """The first row of a prepared read (see :class:`Query`), or None."""
        if self._executor is None:
            # No transaction: one SELECT reads one snapshot, and on SQLite a SELECT run through the driver
            # opens none that would need ending.
            return query.first(self._inline_connection(), params)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, _reachable, self._pooled_first, query, params)

    def _pooled_first(self, query: Query, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        # Returning the connection to the pool rolls back the transaction MySQL opened for the SELECT.
        with self.engine.connect() as connection:
            return query.first(connection, params)

    async def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        if self._executor is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown)
        self.engine.dispose()


class Query:
    """A Core SELECT compiled once for a dialect and run on the driver's cursor: for reads on every call's path.

    SQLAlchemy's own execute costs about 60 microseconds a statement even from its compiled cache (execution
    context, result metadata, row objects), several times what the driver and SQLite take for a primary-key
    read. This keeps what matters of it: the SQL and parameter order SQLAlchemy compiles for the dialect, each
    column's and parameter's type processing (time zones, SQLite's text datetimes), and dropping a connection
    the database lost. It compiles on first use, once the dialect has met the server (MySQL quoting modes).
    """

    def __init__(self, statement: sa.Select[*tuple[Any, ...]]) -> None:
        if any(bind.expanding for bind in statement.compile().binds.values()):
            raise ValueError("a prepared query cannot take IN lists (expanding parameters)")
        self._statement = statement
        self._compiled: _CompiledQuery | None = None

    def first(self, connection: sa.Connection, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """The first row for ``params`` (bind name -> value), read on ``connection``'s driver connection."""
        dialect = connection.dialect
        raw = connection.connection
        if self._compiled is None:
            self._compiled = _CompiledQuery(self._statement, dialect)
        compiled = self._compiled
        try:
            cursor = raw.driver_connection.cursor()  # type: ignore[union-attr]
            try:
                cursor.execute(compiled.sql, compiled.parameters(params))
                row = cursor.fetchone()
            finally:
                cursor.close()
        except dialect.loaded_dbapi.Error as error:
            # As SQLAlchemy's execute does: a connection the database lost is dropped, and the next use of
            # ``connection`` opens a new one.
            if dialect.is_disconnect(error, raw, None):
                connection.invalidate(error)
            raise
        return None if row is None else compiled.row(row)


class _CompiledQuery:
    """What :class:`Query` runs for one dialect."""

    def __init__(self, statement: sa.Select[*tuple[Any, ...]], dialect: sa.Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = compiled.string
        self._names = list(compiled.positiontup or ())
        # Values written into the statement itself (``column == 5``); the caller gives the named ones.
        self._defaults = {name: bind.effective_value for name, bind in compiled.binds.items() if not bind.required}
        self._bind_processors = {
            name: processor
            for name, bind in compiled.binds.items()
            if (processor := bind.type.dialect_impl(dialect).bind_processor(dialect)) is not None
        }
        self._result_processors = [
            column.type.dialect_impl(dialect).result_processor(dialect, None) for column in statement.selected_columns
        ]
        self._plain_rows = not any(self._result_processors)

    def parameters(self, params: Mapping[str, Any]) -> Any:
        values = {**self._defaults, **params}
        for name, process in self._bind_processors.items():
            values[name] = process(values[name])
        return [values[name] for name in self._names] if self._names else values

    def row(self, row: Any) -> tuple[Any, ...]:
        if self._plain_rows:
            return tuple(row)
        return tuple(
            value if process is None else process(value)
            for value, process in zip(row, self._result_processors, strict=True)
        )


class UtcDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (MySQL's DATETIME has no zone: we store UTC)."""

    impl = sa.DateTime(timezone=False).with_variant(sa.dialects.mysql.DATETIME(fsp=6), "mysql")
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def utc_now() -> datetime:
    """Now, in UTC, to the microsecond (what MySQL DATETIME(6) keeps)."""
    return datetime.now(UTC)


_id_lock = threading.Lock()
_last_id_value = 0


def new_id(prefix: str) -> str:
    """A sortable id: ``prefix_`` + milliseconds since the epoch + 40 random bits, in hex.

    Ids made by one process increase strictly (within a millisecond the next is the last plus one, as
    ULID's monotonic mode does), so ordering by id is creation order and pages by id never skip.
    """
    global _last_id_value
    with _id_lock:
        value = max((int(time.time() * 1000) << 40) | secrets.randbits(40), _last_id_value + 1)
        _last_id_value = value
    return f"{prefix}_{value:022x}"


async def open_database(url: str, migrations_dir: Path, version_table: str) -> Database:
    """Apply a service's migrations (off the event loop), then open its asyncio engine."""
    await asyncio.to_thread(migrate, url, migrations_dir, version_table)
    return Database(url)
