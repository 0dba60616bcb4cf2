"""Users' named secrets: write-only values sealed at rest, substituted into monitors as {{secret:NAME}}.

Values are sealed with the deployment's master key, bound to owner and name (a sealed value copied onto
another row does not open). They leave this module only towards a check: RunCheck, or the runner that owns a
monitor referring to them.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import cast

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from service_runtime.auth import Principal
from service_runtime.database import Database, UtcDateTime, upsert, utc_now
from service_runtime.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from service_runtime.pagination import PageRequest
from service_runtime.secretbox import SecretBox
from services.monitor_svc.schema import Base

NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
MAX_VALUE_BYTES = 8 * 1024
MAX_SECRETS_PER_USER = 100  # a quota: beyond it PutSecret of a new name is RESOURCE_EXHAUSTED (secrets_per_user)


class SecretRow(Base):
    __tablename__ = "secrets"

    owner_id: Mapped[str] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    sealed_value: Mapped[bytes] = mapped_column(sa.LargeBinary())
    create_time: Mapped[datetime] = mapped_column(UtcDateTime())
    update_time: Mapped[datetime] = mapped_column(UtcDateTime())


@dataclass(frozen=True)
class SecretInfo:
    """A secret without its value."""

    name: str
    create_time: datetime
    update_time: datetime


class UserSecrets:
    """Put, list and delete secrets; open the ones a check needs."""

    def __init__(
        self,
        database: Database,
        box: SecretBox,
        references: Callable[[str, str], Awaitable[list[str]]],
    ) -> None:
        """``references(owner_id, name)`` lists the ids of the owner's monitors that refer to ``name``."""
        self._db = database
        self._box = box
        self._references = references
        # Awaited with (owner id, secret name) after a value changes, so runners get the new value.
        self.change_listeners: list[Callable[[str, str], Awaitable[None]]] = []

    async def put(self, caller: Principal, name: str, value: str) -> SecretInfo:
        if not NAME.fullmatch(name):
            raise InvalidArgument("name", "letters, digits and underscores, starting with a letter, at most 64")
        if not value:
            raise InvalidArgument("value", "must not be empty")
        if len(value.encode()) > MAX_VALUE_BYTES:
            raise InvalidArgument("value", f"must be at most {MAX_VALUE_BYTES} bytes")
        owner = caller.user_id
        sealed = self._box.seal(value, owner, name)
        now = utc_now()

        def put(c: sa.Connection) -> datetime:
            others = sa.select(sa.func.count()).where(SecretRow.owner_id == owner, SecretRow.name != name)
            if c.execute(others).scalar_one() >= MAX_SECRETS_PER_USER:
                raise ResourceExhausted(
                    "secrets_per_user",
                    f"at most {MAX_SECRETS_PER_USER} secrets per user; delete one you no longer use, or change one",
                )
            row = {"owner_id": owner, "name": name, "sealed_value": sealed, "create_time": now, "update_time": now}
            upsert(c, cast(sa.Table, SecretRow.__table__), row, ("sealed_value", "update_time"))
            key = (SecretRow.owner_id == owner, SecretRow.name == name)
            return c.execute(sa.select(SecretRow.create_time).where(*key)).scalar_one()

        created = await self._db.run(put)
        for listener in self.change_listeners:
            await listener(owner, name)
        return SecretInfo(name, created, now)

    async def list(self, caller: Principal, size: int, token: str) -> tuple[list[SecretInfo], str]:
        request = PageRequest.of(size, token)
        query = (
            sa.select(SecretRow.name, SecretRow.create_time, SecretRow.update_time)
            .where(SecretRow.owner_id == caller.user_id)
            .order_by(SecretRow.name)
            .limit(request.read_limit)
        )
        if request.after is not None:
            query = query.where(SecretRow.name > request.after)
        found = await self._db.run(lambda c: [SecretInfo(*row) for row in c.execute(query)])
        return request.cut(found, lambda s: s.name)

    async def delete(self, caller: Principal, name: str) -> None:
        users = await self._references(caller.user_id, name)
        if users:
            shown = ", ".join(users[:5]) + (" and more" if len(users) > 5 else "")
            raise FailedPrecondition(
                f"secret {name} is used by monitor {shown}; change or delete those first",
                {"monitor_ids": ",".join(users[:20])},
            )
        delete = sa.delete(SecretRow).where(SecretRow.owner_id == caller.user_id, SecretRow.name == name)
        if await self._db.run(lambda c: c.execute(delete).rowcount) == 0:
            raise NotFound("secret", name)

    async def names(self, owner_id: str) -> set[str]:
        query = sa.select(SecretRow.name).where(SecretRow.owner_id == owner_id)
        return await self._db.run(lambda c: set(c.execute(query).scalars()))

    async def values(self, owner_id: str, names: Collection[str]) -> dict[str, str]:
        """The plaintext of those of ``names`` the owner has (for a check); absent names are left out."""
        if not names:
            return {}
        query = sa.select(SecretRow.name, SecretRow.sealed_value).where(
            SecretRow.owner_id == owner_id, SecretRow.name.in_(sorted(names))
        )
        rows = await self._db.run(lambda c: c.execute(query).all())
        return {name: self._box.open(sealed, owner_id, name) for name, sealed in rows}
