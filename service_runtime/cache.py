"""A small key-value port for counters, cooldowns and short-lived state.

Production uses Redis (``MONITORS_REDIS_URL``) so every replica sees the same counters; embedded mode uses
an in-process twin with the same semantics. Values are strings; every key may carry a time to live.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import Protocol

import redis.asyncio as aioredis


class KeyValueStore(Protocol):
    """What the domain needs from Redis or its embedded twin."""

    async def get(self, key: str) -> str | None: ...

    async def set(self, key: str, value: str, ttl_s: float | None = None, *, only_if_absent: bool = False) -> bool:
        """Store ``value``; with ``only_if_absent`` do nothing (and return False) if the key exists."""
        ...

    async def incr(self, key: str, ttl_s: float | None = None) -> int:
        """Add one and return the new count; ``ttl_s`` is set when the key is created."""
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

    async def set(self, key: str, value: str, ttl_s: float | None = None, *, only_if_absent: bool = False) -> bool:
        async with self._lock:
            if only_if_absent and self._live(key) is not None:
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

    async def delete(self, key: str) -> None:
        self._items.pop(key, None)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._items.clear()


class RedisStore:
    """:class:`KeyValueStore` on Redis, with connect and command timeouts."""

    def __init__(self, url: str, *, prefix: str = "monitors:", timeout_s: float = 2.0) -> None:
        self._redis = aioredis.Redis.from_url(
            url, decode_responses=True, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._prefix = prefix

    async def get(self, key: str) -> str | None:
        value = await self._redis.get(self._prefix + key)
        return None if value is None else str(value)

    async def set(self, key: str, value: str, ttl_s: float | None = None, *, only_if_absent: bool = False) -> bool:
        px = None if ttl_s is None else max(1, int(ttl_s * 1000))
        return bool(await self._redis.set(self._prefix + key, value, px=px, nx=only_if_absent))

    async def incr(self, key: str, ttl_s: float | None = None) -> int:
        full = self._prefix + key
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(full)
            if ttl_s is not None:
                # NX: only the first increment of a window sets its expiry.
                pipe.pexpire(full, max(1, int(ttl_s * 1000)), nx=True)
            results = await pipe.execute()
        return int(results[0])

    async def delete(self, key: str) -> None:
        await self._redis.delete(self._prefix + key)

    async def ping(self) -> None:
        await self._redis.ping()

    async def close(self) -> None:
        await self._redis.aclose()


def open_key_value_store(redis_url: str) -> KeyValueStore:
    """Redis when a URL is configured, else the in-process twin."""
    return RedisStore(redis_url) if redis_url else InProcessStore()
