"""Who is calling: bearer tokens, the caller of the current RPC, and token verification with a cache."""

from __future__ import annotations

import contextvars
import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from service_runtime.errors import Unauthenticated


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of an RPC."""

    user_id: str
    email: str
    credential_id: str
    # Set for another of our services (a runner, the alert service) calling an internal method.
    service: str = ""


_current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("principal", default=None)


def current_principal() -> Principal:
    """The caller of the RPC being served. The auth interceptor sets it before the servicer runs."""
    principal = _current.get()
    if principal is None:
        raise Unauthenticated("this call needs 'authorization: Bearer <token>' metadata")
    return principal


def set_current_principal(principal: Principal | None) -> contextvars.Token[Principal | None]:
    return _current.set(principal)


# The verified bearer token of the user whose call is being served: a service that asks another service about
# the caller's own resources (their channels) asks with it, so the answer is what the caller may see. Never
# logged, never stored.
_bearer: contextvars.ContextVar[str] = contextvars.ContextVar("bearer", default="")


def current_bearer() -> str:
    """The current user call's verified bearer token ("" outside one)."""
    return _bearer.get()


def set_current_bearer(token: str) -> contextvars.Token[str]:
    return _bearer.set(token)


def token_digest(token: str) -> str:
    """SHA-256 of a high-entropy token: what we store and index instead of the token itself."""
    return hashlib.sha256(token.encode()).hexdigest()


def bearer_token(authorization: str | None) -> str:
    """The token in an ``authorization`` header value, or Unauthenticated with a message saying why."""
    if not authorization:
        raise Unauthenticated("missing 'authorization: Bearer <token>' metadata")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("authorization metadata must be 'Bearer <token>'")
    return token.strip()


class TokenVerifier(Protocol):
    """Resolves a bearer token to its principal, or raises Unauthenticated."""

    async def verify(self, token: str) -> Principal: ...


class CachingTokenVerifier:
    """Remembers verified tokens for ``ttl_s`` seconds (bounded), so hot callers skip the lookup.

    Revocation therefore takes effect within ``ttl_s`` on other replicas; :meth:`forget` drops a token at
    once in this process. Failures are not cached, so a new key works on its first call.
    """

    def __init__(self, inner: TokenVerifier, ttl_s: float, max_entries: int = 10_000) -> None:
        self._inner = inner
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._entries: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
        # Bumped by every revocation: a lookup that was in flight meanwhile may have read the credential before
        # it went, so its answer is not cached (it would outlive the revocation by ttl_s).
        self._revocations = 0

    async def verify(self, token: str) -> Principal:
        if self._ttl_s <= 0:
            return await self._inner.verify(token)
        key = token_digest(token)
        now = time.monotonic()
        entry = self._entries.get(key)
        if entry is not None and entry[1] > now:
            return entry[0]
        revocations = self._revocations
        principal = await self._inner.verify(token)
        if revocations != self._revocations:
            return principal
        self._entries[key] = (principal, now + self._ttl_s)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
        return principal

    def forget_credential(self, credential_id: str) -> None:
        """Drop every cached token of one credential (after it is deleted or revoked)."""
        self._revocations += 1
        for key in [k for k, (p, _) in self._entries.items() if p.credential_id == credential_id]:
            del self._entries[key]
