"""The key-value port behaves the same on each twin: in-process, Redis, SQLite and MariaDB tables."""

from __future__ import annotations

import asyncio

from service_runtime.cache import KeyValueStore


async def test_set_get_delete(key_value_store: KeyValueStore) -> None:
    assert await key_value_store.get("a") is None
    assert await key_value_store.set("a", "1")
    assert await key_value_store.get("a") == "1"
    await key_value_store.delete("a")
    assert await key_value_store.get("a") is None


async def test_only_if_absent_keeps_the_first_value(key_value_store: KeyValueStore) -> None:
    assert await key_value_store.set("lock", "first", 10, only_if_absent=True)
    assert not await key_value_store.set("lock", "second", 10, only_if_absent=True)
    assert await key_value_store.get("lock") == "first"


async def test_only_if_present_never_brings_back_a_deleted_key(key_value_store: KeyValueStore) -> None:
    assert not await key_value_store.set("session", "renewed", 10, only_if_present=True)
    assert await key_value_store.get("session") is None
    assert await key_value_store.set("session", "first", 10)
    assert await key_value_store.set("session", "renewed", 10, only_if_present=True)
    assert await key_value_store.get("session") == "renewed"
    await key_value_store.delete("session")
    assert not await key_value_store.set("session", "again", 10, only_if_present=True)
    assert await key_value_store.get("session") is None


async def test_only_if_present_counts_an_expired_key_as_gone(key_value_store: KeyValueStore) -> None:
    await key_value_store.set("short", "x", ttl_s=0.2)
    await asyncio.sleep(0.4)
    assert not await key_value_store.set("short", "renewed", 10, only_if_present=True)
    assert await key_value_store.get("short") is None


async def test_values_expire(key_value_store: KeyValueStore) -> None:
    await key_value_store.set("short", "x", ttl_s=0.2)
    assert await key_value_store.get("short") == "x"
    await asyncio.sleep(0.4)
    assert await key_value_store.get("short") is None


async def test_incr_counts_and_the_window_expires_from_the_first_hit(key_value_store: KeyValueStore) -> None:
    counts = [await key_value_store.incr("hits", ttl_s=0.5) for _ in range(3)]
    assert counts == [1, 2, 3]
    await asyncio.sleep(0.7)
    assert await key_value_store.incr("hits", ttl_s=0.5) == 1


async def test_concurrent_increments_are_not_lost(key_value_store: KeyValueStore) -> None:
    await asyncio.gather(*(key_value_store.incr("n") for _ in range(50)))
    assert await key_value_store.get("n") == "50"


async def test_ping(key_value_store: KeyValueStore) -> None:
    await key_value_store.ping()


async def test_renew_extends_only_the_holders_own_value(key_value_store: KeyValueStore) -> None:
    assert await key_value_store.set("lease", "replica-a", ttl_s=0.3, only_if_absent=True)
    assert await key_value_store.renew("lease", "replica-a", 10)
    assert not await key_value_store.renew("lease", "replica-b", 10)
    await asyncio.sleep(0.5)
    assert await key_value_store.get("lease") == "replica-a"  # the holder's renewal outlived the first TTL


async def test_renew_with_another_value_neither_extends_nor_replaces(key_value_store: KeyValueStore) -> None:
    await key_value_store.set("lease", "replica-a", ttl_s=0.3)
    assert not await key_value_store.renew("lease", "replica-b", 10)
    assert await key_value_store.get("lease") == "replica-a"
    await asyncio.sleep(0.5)
    assert await key_value_store.get("lease") is None


async def test_renew_never_brings_back_an_expired_or_deleted_key(key_value_store: KeyValueStore) -> None:
    assert not await key_value_store.renew("lease", "replica-a", 10)
    await key_value_store.set("lease", "replica-a", ttl_s=0.2)
    await asyncio.sleep(0.4)
    assert not await key_value_store.renew("lease", "replica-a", 10)
    assert await key_value_store.get("lease") is None
    await key_value_store.set("lease", "replica-a", ttl_s=10)
    await key_value_store.delete("lease")
    assert not await key_value_store.renew("lease", "replica-a", 10)
    assert await key_value_store.get("lease") is None
    # Expired, then taken by another: the first holder's renewal leaves the new holder's lease alone.
    assert await key_value_store.set("lease", "replica-b", ttl_s=10, only_if_absent=True)
    assert not await key_value_store.renew("lease", "replica-a", 0.01)
    assert await key_value_store.get("lease") == "replica-b"


async def test_renew_with_a_tiny_ttl_releases_the_lease(key_value_store: KeyValueStore) -> None:
    await key_value_store.set("lease", "replica-a", ttl_s=10)
    assert await key_value_store.renew("lease", "replica-a", 0.001)
    await asyncio.sleep(0.05)
    assert await key_value_store.set("lease", "replica-b", ttl_s=10, only_if_absent=True)
