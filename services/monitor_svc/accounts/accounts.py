"""Accounts: users and their API keys. Plain Python; the servicer translates to and from protobuf."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime

from service_runtime.auth import Principal
from service_runtime.database import utc_now
from service_runtime.errors import InvalidArgument
from service_runtime.pagination import PageRequest
from services.monitor_svc.accounts.store import AccountStore, ApiKey, User

_EMAIL = re.compile(
    r"^[^@\s]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)
MAX_DISPLAY_NAME = 100


def normalise_email(email: str, *, field: str = "email") -> str:
    """Trimmed and lower-cased; INVALID_ARGUMENT naming ``field`` if it is not an address."""
    value = email.strip().lower()
    if not value:
        raise InvalidArgument(field, "is required")
    if len(value) > 254 or not _EMAIL.match(value):
        raise InvalidArgument(field, "is not a valid email address")
    return value


class Accounts:
    """Rules for users and API keys."""

    def __init__(self, store: AccountStore) -> None:
        self._store = store
        # Called with a credential id when it stops being valid (token caches drop it at once).
        self.revocation_listeners: list[Callable[[str], None]] = []

    async def current_user(self, principal: Principal) -> User:
        return await self._store.get_user(principal.user_id)

    async def ensure_user(self, email: str) -> User:
        return await self._store.ensure_user(normalise_email(email))

    async def create_api_key(
        self, owner: Principal | User, display_name: str, expire_time: datetime | None
    ) -> tuple[ApiKey, str]:
        """A new key; the secret is returned once and only its digest is kept."""
        name = display_name.strip() or "API key"
        if len(name) > MAX_DISPLAY_NAME:
            raise InvalidArgument("display_name", f"must be at most {MAX_DISPLAY_NAME} characters")
        if expire_time is not None and expire_time <= utc_now():
            raise InvalidArgument("expire_time", "must be in the future")
        user_id = owner.user_id if isinstance(owner, Principal) else owner.id
        return await self._store.create_api_key(user_id, name, expire_time)

    async def list_api_keys(self, owner: Principal, requested_size: int, token: str) -> tuple[list[ApiKey], str]:
        """One page of the caller's keys, oldest first, and the token of the next page ('' at the end)."""
        request = PageRequest.of(requested_size, token)
        keys = await self._store.list_api_keys(owner.user_id, request.after, request.read_limit)
        return request.cut(keys, lambda k: k.id)

    async def delete_api_key(self, owner: Principal, key_id: str) -> None:
        if not key_id:
            raise InvalidArgument("id", "is required")
        await self._store.delete_api_key(owner.user_id, key_id)
        for listener in self.revocation_listeners:
            listener(key_id)

    async def verify(self, token: str) -> Principal:
        """The caller behind a bearer token (API keys now; sessions arrive with email login)."""
        return await self._store.principal_for_api_key(token)
