"""The token cache: a revocation is never undone by a lookup that was in flight when it happened."""

from __future__ import annotations

import asyncio

import pytest

from service_runtime.auth import CachingTokenVerifier, Principal
from service_runtime.errors import Unauthenticated

KEY = Principal("usr_1", "a@example.com", "key_1")


class HeldStore:
    """Reads the credential, then answers only when released: a lookup on the wire while the key is deleted."""

    def __init__(self) -> None:
        self.live = {"mk_secret": KEY}
        self.read = asyncio.Event()
        self.release = asyncio.Event()

    async def verify(self, token: str) -> Principal:
        found = self.live.get(token)
        self.read.set()
        await self.release.wait()
        if found is None:
            raise Unauthenticated("unknown or revoked token")
        return found


async def test_a_lookup_in_flight_during_a_revocation_is_not_cached() -> None:
    """Failed before: the in-flight answer was cached after forget_credential, and the deleted key worked on for
    the cache's whole TTL on the replica that deleted it."""
    store = HeldStore()
    cache = CachingTokenVerifier(store, ttl_s=60)
    in_flight = asyncio.create_task(cache.verify("mk_secret"))
    await store.read.wait()
    del store.live["mk_secret"]  # DeleteApiKey commits ...
    cache.forget_credential("key_1")  # ... and its revocation listener runs
    store.release.set()
    assert await in_flight == KEY  # it had read the key before it went
    with pytest.raises(Unauthenticated):
        await cache.verify("mk_secret")


async def test_answers_are_cached_when_nothing_was_revoked_meanwhile() -> None:
    store = HeldStore()
    store.release.set()
    cache = CachingTokenVerifier(store, ttl_s=60)
    assert await cache.verify("mk_secret") == KEY
    del store.live["mk_secret"]  # deleted on another replica: this one's cache answers until its TTL
    assert await cache.verify("mk_secret") == KEY
