"""A small key-value port for counters, cooldowns and short-lived state.

Production uses Redis (``MONITORS_REDIS_URL``) so every replica sees the same counters. Embedded mode keeps
what must survive a restart (sessions, login counters) in its database (:class:`SqlStore`), and caches in an
in-process twin. Values are strings; every key may carry a time to live.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
import sqlalchemy as sa
from redis.exceptions import RedisError
from sqlalchemy.exc import IntegrityError, OperationalError

from service_runtime.database import Database
from service_runtime.errors import Unavailable

T = TypeVar("T")
log = logging.getLogger(__name__)


class KeyValueStore(Protocol):
    """What the domain needs from Redis or its embedded twin."""

    async def get(self, key: str) -> str | None: ...

    async def set(
        self,
        key: str,
        value: str,
        ttl_s: float | None = None,
        *,
        only_if_absent: bool = False,
        only_if_present: bool = False,
    ) -> bool:
        """Store ``value``; with ``only_if_absent`` do nothing (and return False) if the key exists, with
        ``only_if_present`` if it does not (a renewal must not bring back what another caller deleted)."""
        ...

    async def incr(self, key: str, ttl_s: float | None = None) -> int:
        """Add one and return the new count; ``ttl_s`` is set when the key is created."""
        ...

    async def renew(self, key: str, value: str, ttl_s: float) -> bool:
        """Give ``key`` a time to live of ``ttl_s`` from now only if it still holds ``value`` (compare and renew,
        in one step): a lease's holder extends its own lease, never one another caller took after it expired.
        Returns whether it did. A tiny ``ttl_s`` releases what the caller holds."""
        ...

    async def delete(self, key: str) -> None: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


class InProcessStore:
    """A bounded dict with expiry: the embedded twin of :class:`RedisStore` (one process only)."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self._items: OrderedDict[str, tuple[str, float | None]] = OrderedDict()
        self._max_keys = max_keys
        self._lock = asyncio.Lock()

    def _live(self, key: str) -> str | None:
        item = self._items.get(key)
        if item is None:
            return None
        value, expires = item
        if expires is not None and expires <= time.monotonic():
            del self._items[key]
            return None
        return value

    def _put(self, key: str, value: str, ttl_s: float | None) -> None:
        self._items[key] = (value, None if ttl_s is None else time.monotonic() + ttl_s)
        self._items.move_to_end(key)
        while len(self._items) > self._max_keys:
            self._items.popitem(last=False)

    async def get(self, key: str) -> str | None:
        return self._live(key)

    async def set(
        self,
        key: str,
        value: str,
        ttl_s: float | None = None,
        *,
        only_if_absent: bool = False,
        only_if_present: bool = False,
    ) -> bool:
        async with self._lock:
            present = self._live(key) is not None
            if (only_if_absent and present) or (only_if_present and not present):
                return False
            self._put(key, value, ttl_s)
            return True

    async def incr(self, key: str, ttl_s: float | None = None) -> int:
        async with self._lock:
            current = self._live(key)
            if current is None:
                self._put(key, "1", ttl_s)
                return 1
            count = int(current) + 1
            _, expires = self._items[key]
            self._items[key] = (str(count), expires)
            return count

    async def renew(self, key: str, value: str, ttl_s: float) -> bool:
        async with self._lock:
            if self._live(key) != value:
                return False
            self._put(key, value, ttl_s)
            return True

    async def delete(self, key: str) -> None:
        self._items.pop(key, None)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._items.clear()


# Compare and renew in one step on the server: PEXPIRE only while the key holds the caller's value.
_RENEW_SCRIPT = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""


REDIS_UNAVAILABLE = "the shared key-value store (Redis) does not answer; retry shortly"


class RedisStore:
    """:class:`KeyValueStore` on Redis, with connect and command timeouts.

    Redis failing (down, hung, refusing writes) is :class:`Unavailable` to callers, never an internal error. A
    hung Redis costs each command its timeout: once one command failed, the next ``retry_after_s`` fail at once
    instead of each waiting out the timeout, and one command then tries again."""

    def __init__(
        self, url: str, *, prefix: str = "monitors:", timeout_s: float = 2.0, retry_after_s: float = 1.0
    ) -> None:
        self._redis = aioredis.Redis.from_url(
            url, decode_responses=True, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._prefix = prefix
        self._renew = self._redis.register_script(_RENEW_SCRIPT)
        self._retry_after_s = retry_after_s
        self._failing_until = 0.0
        self._failing = False
        self._where = describe_redis_url(url)

    async def _call(self, command: Awaitable[T]) -> T:
        if time.monotonic() < self._failing_until:
            if inspect.iscoroutine(command):
                command.close()  # never awaited: say so to no one
            raise Unavailable(REDIS_UNAVAILABLE)
        try:
            result = await command
        except RedisError as error:
            self._failing_until = time.monotonic() + self._retry_after_s
            if not self._failing:  # one line per outage, not one per call
                log.warning(
                    "Redis does not answer", extra={"redis": self._where, "error": f"{type(error).__name__}: {error}"}
                )
            self._failing = True
            raise Unavailable(REDIS_UNAVAILABLE) from None
        if self._failing:
            log.warning("Redis answers again", extra={"redis": self._where})
            self._failing = False
        return result

    async def get(self, key: str) -> str | None:
        value = await self._call(self._redis.get(self._prefix + key))
        return None if value is None else str(value)

    async def set(
        self,
        key: str,
        value: str,
        ttl_s: float | None = None,
        *,
        only_if_absent: bool = False,
        only_if_present: bool = False,
    ) -> bool:
        px = None if ttl_s is None else max(1, int(ttl_s * 1000))
        done = self._redis.set(self._prefix + key, value, px=px, nx=only_if_absent, xx=only_if_present)
        return bool(await self._call(done))

    async def incr(self, key: str, ttl_s: float | None = None) -> int:
        return await self._call(self._incr(self._prefix + key, ttl_s))

    async def _incr(self, full: str, ttl_s: float | None) -> int:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(full)
            if ttl_s is not None:
                # NX: only the first increment of a window sets its expiry.
                pipe.pexpire(full, max(1, int(ttl_s * 1000)), nx=True)
            results = await pipe.execute()
        return int(results[0])

    async def renew(self, key: str, value: str, ttl_s: float) -> bool:
        # EVALSHA, falling back to EVAL once when the server does not know the script yet.
        renewed = await self._call(self._renew(keys=[self._prefix + key], args=[value, max(1, int(ttl_s * 1000))]))
        return bool(renewed)

    async def delete(self, key: str) -> None:
        await self._call(self._redis.delete(self._prefix + key))

    async def ping(self) -> None:
        await self._call(self._redis.ping())

    async def close(self) -> None:
        await self._redis.aclose()


def describe_redis_url(url: str) -> str:
    """A Redis URL fit for logs: its password hidden."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


async def warn_if_unreachable(store: KeyValueStore, url: str, consequence: str) -> None:
    """At start: one WARNING saying what fails while Redis does not answer (the service starts all the same)."""
    try:
        await store.ping()
    except Unavailable:
        log.warning(f"Redis at {describe_redis_url(url)} does not answer at start: {consequence} until it does")


KEY_VALUES = sa.Table(
    "key_values",
    sa.MetaData(),
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("value", sa.Text(), nullable=False),
    sa.Column("expire_at", sa.Double(), nullable=True),  # epoch seconds; NULL never expires
)


class SqlStore:
    """:class:`KeyValueStore` in a ``key_values`` table of the service's database (a migration creates it).

    Durable and shared by every process on that database; slower than Redis, so production uses Redis.
    Expired rows read as absent and are removed by :meth:`sweep`.
    """

    def __init__(self, database: Database) -> None:
        self._db = database

    @staticmethod
    def _expiry(ttl_s: float | None) -> float | None:
        return None if ttl_s is None else time.time() + ttl_s

    @staticmethod
    def _live_value(c: sa.Connection, key: str, *, lock: bool = False) -> str | None:
        query = sa.select(KEY_VALUES.c.value, KEY_VALUES.c.expire_at).where(KEY_VALUES.c.key == key)
        row = c.execute(query.with_for_update() if lock else query).first()
        if row is None or (row.expire_at is not None and row.expire_at <= time.time()):
            return None
        return str(row.value)

    @staticmethod
    def _live_row(now: float) -> sa.ColumnElement[bool]:
        """A row that has not expired at ``now``."""
        return sa.or_(KEY_VALUES.c.expire_at.is_(None), KEY_VALUES.c.expire_at > now)

    async def get(self, key: str) -> str | None:
        return await self._db.run(lambda c: self._live_value(c, key))

    async def set(
        self,
        key: str,
        value: str,
        ttl_s: float | None = None,
        *,
        only_if_absent: bool = False,
        only_if_present: bool = False,
    ) -> bool:
        expire_at = self._expiry(ttl_s)

        def put(c: sa.Connection) -> bool:
            if only_if_absent and self._live_value(c, key, lock=True) is not None:
                return False
            values = {"value": value, "expire_at": expire_at}
            if only_if_present:
                live = self._live_row(time.time())
                return bool(
                    c.execute(sa.update(KEY_VALUES).where(KEY_VALUES.c.key == key, live).values(values)).rowcount
                )
            if c.execute(sa.update(KEY_VALUES).where(KEY_VALUES.c.key == key).values(values)).rowcount == 0:
                c.execute(sa.insert(KEY_VALUES).values(key=key, **values))
            return True

        return await self._retrying(put)

    async def incr(self, key: str, ttl_s: float | None = None) -> int:
        def increment(c: sa.Connection) -> int:
            now = time.time()
            this = KEY_VALUES.c.key == key
            live = self._live_row(now)
            # One UPDATE, so concurrent increments queue on the row lock instead of losing counts.
            bump = sa.update(KEY_VALUES).where(this, live).values(value=sa.cast(KEY_VALUES.c.value, sa.Integer) + 1)
            if c.execute(bump).rowcount:
                return int(c.execute(sa.select(KEY_VALUES.c.value).where(this)).scalar_one())
            restart = {"value": "1", "expire_at": self._expiry(ttl_s)}
            # Only an expired row restarts; if another writer restarted it first, the insert fails and we retry.
            if c.execute(sa.update(KEY_VALUES).where(this, sa.not_(live)).values(restart)).rowcount == 0:
                c.execute(sa.insert(KEY_VALUES).values(key=key, **restart))
            return 1

        return await self._retrying(increment)

    async def renew(self, key: str, value: str, ttl_s: float) -> bool:
        expire_at = time.time() + ttl_s

        def extend(c: sa.Connection) -> bool:
            # Compared here, not in SQL: MySQL's default collations would match values differing in case.
            if self._live_value(c, key, lock=True) != value:
                return False
            c.execute(sa.update(KEY_VALUES).where(KEY_VALUES.c.key == key).values(expire_at=expire_at))
            return True

        return await self._db.run(extend)

    async def _retrying(self, work: Callable[[sa.Connection], T]) -> T:
        # Two writers creating the same key at once: the loser's insert fails (a duplicate key, or on MySQL
        # a deadlock between their gap locks); its retry sees the winner's row.
        for attempt in range(5):
            try:
                return await self._db.run(work)
            except (IntegrityError, OperationalError) as error:
                if isinstance(error, OperationalError) and "1213" not in str(error.orig):
                    raise
                await asyncio.sleep(0.005 * (attempt + 1))
        return await self._db.run(work)

    async def delete(self, key: str) -> None:
        await self._db.run(lambda c: c.execute(sa.delete(KEY_VALUES).where(KEY_VALUES.c.key == key)))

    async def sweep(self) -> None:
        """Remove expired rows."""
        stale = sa.delete(KEY_VALUES).where(KEY_VALUES.c.expire_at <= time.time())
        await self._db.run(lambda c: c.execute(stale))

    async def ping(self) -> None:
        await self._db.run(lambda c: c.execute(sa.text("SELECT 1")))

    async def close(self) -> None:
        return None  # the database belongs to the service


def open_key_value_store(redis_url: str, database: Database | None = None) -> KeyValueStore:
    """Redis when a URL is configured; else the database's table when given one; else the in-process twin."""
    if redis_url:
        return RedisStore(redis_url)
    return SqlStore(database) if database is not None else InProcessStore()
