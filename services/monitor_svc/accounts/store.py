"""The account store: users and API keys as SQLAlchemy tables, and their repository (SQLite or MySQL)."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from service_runtime.auth import Principal, token_digest
from service_runtime.database import Database, UtcDateTime, new_id, utc_now
from service_runtime.errors import NotFound, Unauthenticated
from services.monitor_svc.schema import Base

API_KEY_PREFIX = "mk_"
# How stale last_use_time may get before a call refreshes it: one write a minute per key, not one a call.
LAST_USE_RESOLUTION = timedelta(minutes=1)


class UserRow(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(254), unique=True)
    create_time: Mapped[datetime] = mapped_column(UtcDateTime())


class ApiKeyRow(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    display_name: Mapped[str] = mapped_column(sa.String(100))
    prefix: Mapped[str] = mapped_column(sa.String(16))
    secret_digest: Mapped[str] = mapped_column(sa.String(64), unique=True)
    create_time: Mapped[datetime] = mapped_column(UtcDateTime())
    last_use_time: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    expire_time: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


@dataclass(frozen=True)
class User:
    id: str
    email: str
    create_time: datetime


@dataclass(frozen=True)
class ApiKey:
    id: str
    display_name: str
    prefix: str
    create_time: datetime
    last_use_time: datetime | None
    expire_time: datetime | None


_USER = (UserRow.id, UserRow.email, UserRow.create_time)
_API_KEY = (
    ApiKeyRow.id,
    ApiKeyRow.display_name,
    ApiKeyRow.prefix,
    ApiKeyRow.create_time,
    ApiKeyRow.last_use_time,
    ApiKeyRow.expire_time,
)

# Statements on the hot path (every authenticated call reads one of them) are built once with bind
# parameters: SQLAlchemy then reuses its compiled form without rebuilding and re-adapting the statement,
# which measured here cut a user read from about 330 to about 100 microseconds. The user read, on every
# GetCurrentUser, goes further: it runs as a prepared read (Database.prepare) on the driver's cursor.
_GET_USER = sa.select(*_USER).where(UserRow.id == sa.bindparam("user_id"))
_KEY_OWNER = (
    sa.select(ApiKeyRow.id, ApiKeyRow.expire_time, ApiKeyRow.last_use_time, UserRow.id, UserRow.email)
    .join(UserRow, UserRow.id == ApiKeyRow.user_id)
    .where(ApiKeyRow.secret_digest == sa.bindparam("digest"))
)


class AccountStore:
    """Users and API keys. Every method that touches a key is scoped by its owner."""

    def __init__(self, database: Database) -> None:
        self._db = database
        self._get_user = database.prepare(_GET_USER)

    async def ensure_user(self, email: str) -> User:
        """The user with this (normalised) email, created if new."""

        def find(connection: sa.Connection) -> User | None:
            row = connection.execute(sa.select(*_USER).where(UserRow.email == email)).first()
            return None if row is None else User(*row)

        def create(connection: sa.Connection) -> User:
            user = User(new_id("usr"), email, utc_now())
            connection.execute(sa.insert(UserRow).values(id=user.id, email=user.email, create_time=user.create_time))
            return user

        found = await self._db.run(find)
        if found is not None:
            return found
        try:
            return await self._db.run(create)
        except IntegrityError:  # created concurrently: the other one won
            winner = await self._db.run(find)
            assert winner is not None
            return winner

    async def emails(self, user_ids: Sequence[str]) -> dict[str, str]:
        """The account address of each of ``user_ids`` that exists, by id."""

        def read(connection: sa.Connection) -> dict[str, str]:
            found: dict[str, str] = {}
            for start in range(0, len(user_ids), 500):
                chunk = list(user_ids[start : start + 500])
                rows = connection.execute(sa.select(UserRow.id, UserRow.email).where(UserRow.id.in_(chunk)))
                found.update({row.id: row.email for row in rows})
            return found

        return await self._db.run(read) if user_ids else {}

    async def get_user(self, user_id: str) -> User:
        row = await self._db.fetch_one(self._get_user, {"user_id": user_id})
        if row is None:
            raise NotFound("user", user_id)
        return User(*row)

    async def create_api_key(self, user_id: str, display_name: str, expire_time: datetime | None) -> tuple[ApiKey, str]:
        """A new key for ``user_id``; returns it with its secret, which is never stored or shown again."""
        secret = API_KEY_PREFIX + secrets.token_urlsafe(32)
        key = ApiKey(new_id("key"), display_name, secret[:11], utc_now(), None, expire_time)
        insert = sa.insert(ApiKeyRow).values(
            id=key.id,
            user_id=user_id,
            display_name=key.display_name,
            prefix=key.prefix,
            secret_digest=token_digest(secret),
            create_time=key.create_time,
            last_use_time=None,
            expire_time=expire_time,
        )
        await self._db.run(lambda connection: connection.execute(insert))
        return key, secret

    async def list_api_keys(self, user_id: str, after_id: str | None, limit: int) -> list[ApiKey]:
        query = sa.select(*_API_KEY).where(ApiKeyRow.user_id == user_id).order_by(ApiKeyRow.id).limit(limit)
        if after_id is not None:
            query = query.where(ApiKeyRow.id > after_id)
        return await self._db.run(lambda connection: [ApiKey(*row) for row in connection.execute(query)])

    async def delete_api_key(self, user_id: str, key_id: str) -> None:
        delete = sa.delete(ApiKeyRow).where(ApiKeyRow.id == key_id, ApiKeyRow.user_id == user_id)
        if await self._db.run(lambda connection: connection.execute(delete).rowcount) == 0:
            raise NotFound("api key", key_id)

    async def principal_for_api_key(self, secret: str) -> Principal:
        """The owner of a live key; Unauthenticated for an unknown, deleted or expired key."""
        if not secret.startswith(API_KEY_PREFIX):
            raise Unauthenticated("unknown or revoked token")
        digest = token_digest(secret)

        def lookup(connection: sa.Connection) -> Principal:
            now = utc_now()
            found = connection.execute(_KEY_OWNER, {"digest": digest}).first()
            if found is None:
                raise Unauthenticated("unknown or revoked token")
            key_id, expire_time, last_use_time, user_id, email = found
            if expire_time is not None and expire_time <= now:
                raise Unauthenticated("token expired")
            if last_use_time is None or now - last_use_time > LAST_USE_RESOLUTION:
                connection.execute(sa.update(ApiKeyRow).where(ApiKeyRow.id == key_id).values(last_use_time=now))
            return Principal(user_id=user_id, email=email, credential_id=key_id)

        return await self._db.run(lookup)
