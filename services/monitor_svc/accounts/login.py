"""Email one-time-code login and sessions. Plain Python over the key-value port (Redis in production, the
database when embedded) and a sender of login codes (NotificationService).

- A code is 6 digits from :mod:`secrets`, kept only as an HMAC keyed from the master key, valid 10 minutes.
  A new code replaces the old one; 5 wrong tries burn it; a used code never works again.
- StartLogin does the same work for every well-formed address (known or not: accounts are created on the
  first successful login) and sends the email in the background, so its answer and timing say nothing
  about which addresses have accounts.
- Rate limits per address and per client, in fixed windows on the key-value store.
- Sessions are random tokens (``ms_...``), stored under their SHA-256 only, valid 30 days from their last
  use (renewed at most hourly), revoked by Logout.
- Key-value keys carry keyed digests of addresses, never the addresses themselves.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from service_runtime.auth import Principal, token_digest
from service_runtime.cache import KeyValueStore
from service_runtime.errors import InvalidArgument, ResourceExhausted, Unauthenticated, Unavailable
from service_runtime.settings import read_float, read_int
from services.monitor_svc.accounts.accounts import Accounts, normalise_email
from services.monitor_svc.accounts.store import User

log = logging.getLogger(__name__)

CODE_DIGITS = 6
CODE_TTL = timedelta(minutes=10)
MAX_TRIES = 5
SESSION_PREFIX = "ms_"
SESSION_TTL = timedelta(days=30)
RENEW_EVERY = timedelta(hours=1)
WRONG_CODE = "the code is wrong, expired or already used; ask for a new one with StartLogin"


class LoginCodeSender(Protocol):
    """Delivers a login code to an address (NotificationService in every deployment)."""

    async def send_login_code(self, email: str, code: str, valid_for: timedelta) -> None:
        """Hand the code over for delivery; Unavailable when that cannot happen now."""
        ...


@dataclass(frozen=True)
class LoginLimits:
    codes_per_address: int = 5
    # Five codes of five tries each per 15 minutes would still allow 2,400 guesses a day at one address (0.24% of
    # the code space); twenty codes a day allow 100.
    codes_per_address_per_day: int = 20
    codes_per_client: int = 20
    attempts_per_client: int = 30  # CompleteLogin calls
    window: timedelta = timedelta(minutes=15)
    code_ttl: timedelta = CODE_TTL

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> LoginLimits:
        """The limits MONITORS_LOGIN_* set in ``env`` (per 15 minutes); SettingsError naming a bad value."""
        return cls(
            codes_per_address=read_int(env, "MONITORS_LOGIN_CODES_PER_ADDRESS", cls.codes_per_address, minimum=1),
            codes_per_address_per_day=read_int(
                env, "MONITORS_LOGIN_CODES_PER_ADDRESS_PER_DAY", cls.codes_per_address_per_day, minimum=1
            ),
            codes_per_client=read_int(env, "MONITORS_LOGIN_CODES_PER_CLIENT", cls.codes_per_client, minimum=1),
            attempts_per_client=read_int(env, "MONITORS_LOGIN_ATTEMPTS_PER_CLIENT", cls.attempts_per_client, minimum=1),
            code_ttl=timedelta(
                seconds=read_float(env, "MONITORS_LOGIN_CODE_TTL_S", cls.code_ttl.total_seconds(), minimum=1.0)
            ),
        )


@dataclass(frozen=True)
class Session:
    token: str  # shown once
    expire_time: datetime
    user: User


class Login:
    def __init__(
        self,
        accounts: Accounts,
        store: KeyValueStore,
        sender: LoginCodeSender,
        hmac_key: bytes,
        limits: LoginLimits | None = None,
    ) -> None:
        self._accounts = accounts
        self._kv = store
        self._sender = sender
        self._key = hmac_key
        self.limits = limits or LoginLimits()
        self._sending: set[asyncio.Task[None]] = set()

    def _digest(self, *parts: str) -> str:
        return hmac.new(self._key, "\0".join(parts).encode(), hashlib.sha256).hexdigest()

    async def _limit(self, key: str, allowed: int, limit: str, message: str, window: timedelta | None = None) -> None:
        if await self._kv.incr(key, (window or self.limits.window).total_seconds()) > allowed:
            raise ResourceExhausted(limit, message)

    async def start(self, email: str, client: str) -> timedelta:
        """Send a new code to ``email``; returns how long it stays valid."""
        address = normalise_email(email)
        who = self._digest("address", address)
        minutes = int(self.limits.window.total_seconds() // 60)
        await self._limit(
            f"login:rate:client:{self._digest('client', client)}",
            self.limits.codes_per_client,
            "login_codes_per_client",
            f"too many login codes asked from this client; try again within {minutes} minutes",
        )
        await self._limit(
            f"login:rate:address:{who}",
            self.limits.codes_per_address,
            "login_codes_per_address",
            f"too many login codes asked for this address; try again within {minutes} minutes",
        )
        await self._limit(
            f"login:rate:address-day:{who}",
            self.limits.codes_per_address_per_day,
            "login_codes_per_address_per_day",
            "too many login codes asked for this address today; try again tomorrow",
            timedelta(days=1),
        )
        code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
        await self._kv.set(
            f"login:code:{who}", self._digest("code", address, code), self.limits.code_ttl.total_seconds()
        )
        await self._kv.delete(f"login:tries:{who}")
        task = asyncio.create_task(self._send(address, code))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)
        return self.limits.code_ttl

    async def _send(self, address: str, code: str) -> None:
        for attempt in range(4):
            try:
                await self._sender.send_login_code(address, code, self.limits.code_ttl)
                return
            except Unavailable as error:  # logged without the code or the address
                log.warning(
                    "login code not handed to notifications yet",
                    extra={"attempt": attempt + 1, "error": error.message},
                )
                await asyncio.sleep(2.0 * 2**attempt)
        log.error("login code could not be handed to notifications; the user must ask again")

    async def complete(self, email: str, code: str, client: str) -> Session:
        """Exchange a code for a session; the account is created on its first login."""
        address = normalise_email(email)
        code = code.strip()
        if not code:
            raise InvalidArgument("code", "is required")
        await self._limit(
            f"login:rate:attempts:{self._digest('client', client)}",
            self.limits.attempts_per_client,
            "login_attempts_per_client",
            "too many login attempts from this client; wait and ask for a new code",
        )
        who = self._digest("address", address)
        expected = await self._kv.get(f"login:code:{who}")
        if expected is None:
            raise Unauthenticated(WRONG_CODE)
        tries = await self._kv.incr(f"login:tries:{who}", self.limits.code_ttl.total_seconds())
        if tries > MAX_TRIES or not hmac.compare_digest(expected, self._digest("code", address, code)):
            if tries >= MAX_TRIES:
                await self._kv.delete(f"login:code:{who}")
            raise Unauthenticated(WRONG_CODE)
        # Single use, even for two concurrent calls with the right code: only one claims it.
        if not await self._kv.set(
            f"login:used:{expected}", "1", self.limits.code_ttl.total_seconds(), only_if_absent=True
        ):
            raise Unauthenticated(WRONG_CODE)
        await self._kv.delete(f"login:code:{who}")
        user = await self._accounts.ensure_user(address)
        token = SESSION_PREFIX + secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        await self._save_session(token_digest(token), user.id, user.email, now, renewal=False)
        return Session(token, now + SESSION_TTL, user)

    async def _save_session(self, digest: str, user_id: str, email: str, renewed: datetime, *, renewal: bool) -> None:
        record = json.dumps({"user_id": user_id, "email": email, "renewed": renewed.timestamp()})
        # A renewal only extends a session still there: a Logout between this call's read and its write stays.
        await self._kv.set(f"session:{digest}", record, SESSION_TTL.total_seconds(), only_if_present=renewal)

    async def _verify_session(self, token: str) -> Principal:
        """The caller behind a session token; renews it (sliding expiry) at most once an hour."""
        digest = token_digest(token)
        record = await self._kv.get(f"session:{digest}")
        if record is None:
            raise Unauthenticated("session expired or logged out; log in again")
        data = json.loads(record)
        now = datetime.now(UTC)
        if now - datetime.fromtimestamp(data["renewed"], UTC) > RENEW_EVERY:
            await self._save_session(digest, data["user_id"], data["email"], now, renewal=True)
        return Principal(user_id=data["user_id"], email=data["email"], credential_id=f"session:{digest}")

    async def logout(self, caller: Principal) -> str:
        """Revoke the caller's session; returns its credential id (for token caches to forget)."""
        if not caller.credential_id.startswith("session:"):
            raise Unauthenticated("Logout ends a session; this call used an API key (delete it with DeleteApiKey)")
        await self._kv.delete(caller.credential_id)
        for listener in self._accounts.revocation_listeners:
            listener(caller.credential_id)
        return caller.credential_id

    async def verify(self, token: str) -> Principal:
        """The caller behind a session token or an API key: the token verifier of the monitor process."""
        if token.startswith(SESSION_PREFIX):
            return await self._verify_session(token)
        return await self._accounts.verify(token)

    async def drain(self) -> None:
        """Wait for codes still being handed over (at shutdown), up to 5 s; then stop trying (the channel to
        notifications closes next, and a retry on it would fail with a traceback)."""
        if not self._sending:
            return
        _, pending = await asyncio.wait(self._sending, timeout=5)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if pending:
            log.warning("login codes not handed to notifications before stop: ask again", extra={"count": len(pending)})
