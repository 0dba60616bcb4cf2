"""Login sessions against the key-value port: a Logout is final even when a call on the same session renews
it at the same moment."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from service_runtime.auth import token_digest
from service_runtime.cache import InProcessStore
from service_runtime.errors import Unauthenticated
from services.monitor_svc.accounts.accounts import Accounts
from services.monitor_svc.accounts.login import RENEW_EVERY, SESSION_PREFIX, Login


class HeldReads(InProcessStore):
    """Reads return only once ``release`` is set: a read on the wire while another call writes (Redis, MySQL)."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = False
        self.read = asyncio.Event()
        self.release = asyncio.Event()

    async def get(self, key: str) -> str | None:
        value = await super().get(key)
        if self.hold:
            self.read.set()
            await self.release.wait()
        return value


async def test_a_renewal_racing_logout_does_not_bring_the_session_back() -> None:
    """Failed before: the renewal wrote the record back after Logout deleted it, and the token worked again."""
    store = HeldReads()
    login = Login(Accounts(store=None), store, sender=None, hmac_key=b"k" * 32)  # type: ignore[arg-type]
    token = SESSION_PREFIX + "x" * 43
    idle = datetime.now(UTC) - RENEW_EVERY - timedelta(minutes=5)  # due for renewal
    await login._save_session(token_digest(token), "usr_1", "a@example.com", idle, renewal=False)
    caller = await login.verify(token)
    await login._save_session(token_digest(token), "usr_1", "a@example.com", idle, renewal=False)

    store.hold = True
    other_call = asyncio.create_task(login.verify(token))  # reads the record, then waits
    await store.read.wait()
    store.hold = False
    await login.logout(caller)
    store.release.set()
    await other_call  # it had authenticated before the Logout; its renewal must not write the record back

    with pytest.raises(Unauthenticated):
        await login.verify(token)
