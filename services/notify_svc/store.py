"""The channel store (SQLite or MySQL): channels with sealed secrets, every read a user can reach scoped by
owner. Deleting a channel drops its deliveries still waiting in the queue (delivery_queue.py)."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from service_runtime.database import Database, Quota, insert_under_quota, new_id, utc_now
from service_runtime.errors import NotFound
from service_runtime.secretbox import SecretBox
from services.notify_svc.domain import (
    MAX_CHANNELS_PER_OWNER,
    Channel,
    ChannelConfig,
    ChannelDraft,
    ChannelKind,
    DeliveryState,
    MessageTemplate,
    config_from_parts,
    config_public,
    config_secrets,
)
from services.notify_svc.schema import AttemptRow, ChannelRow, DeliveryRow

OPENED_CONFIGS = 10_000  # channel configs kept opened, by their stored content
OPEN_STATES = (DeliveryState.PENDING.value, DeliveryState.RETRYING.value)
_CHANNEL = tuple(ChannelRow.__table__.columns)
_GET_CHANNEL = sa.select(*_CHANNEL).where(ChannelRow.id == sa.bindparam("channel_id"))
# Built once (the delivery path reads channels by id on every send; a statement made anew costs its cache key).
_GET_CHANNELS = sa.select(*_CHANNEL).where(ChannelRow.id.in_(sa.bindparam("channel_ids", expanding=True)))


class ChannelStore:
    """Channels of every owner. Their secrets are sealed with ``box``, bound to their owner, row and field, so
    a sealed value copied elsewhere does not open."""

    def __init__(self, database: Database, box: SecretBox, max_channels: int = MAX_CHANNELS_PER_OWNER) -> None:
        self._db = database
        self._box = box
        self._quota = Quota(
            "channels_per_user", max_channels, f"at most {max_channels} channels per user; delete one first"
        )
        self._configs: dict[tuple[str, str, str, str, str], ChannelConfig] = {}

    def _seal_secrets(self, owner_id: str, channel_id: str, values: dict[str, str]) -> str:
        sealed = {
            name: base64.b64encode(self._box.seal(value, owner_id, channel_id, name)).decode()
            for name, value in values.items()
        }
        return json.dumps(sealed)

    def _config(self, row: Any) -> ChannelConfig:
        # The delivery path reads a channel for every send: its config is opened (secrets unsealed, JSON
        # parsed) once per stored content, not each time.
        key = (row.id, row.owner_id, row.kind, row.config, row.sealed_secrets)
        found = self._configs.get(key)
        if found is not None:
            return found
        sealed = json.loads(row.sealed_secrets)
        values = {
            name: self._box.open(base64.b64decode(blob), row.owner_id, row.id, name) for name, blob in sealed.items()
        }
        config = config_from_parts(ChannelKind(row.kind), json.loads(row.config), values)
        if len(self._configs) >= OPENED_CONFIGS:
            self._configs.clear()
        self._configs[key] = config
        return config

    def _channel(self, row: Any) -> Channel:
        return Channel(
            id=row.id,
            owner_id=row.owner_id,
            display_name=row.display_name,
            config=self._config(row),
            enabled=bool(row.enabled),
            disabled_reason=row.disabled_reason,
            is_default=bool(row.is_default),
            template=MessageTemplate(row.template_title, row.template_body),
            create_time=row.create_time,
            update_time=row.update_time,
            auth_failures=row.auth_failures,
        )

    def _channel_values(self, channel: Channel) -> dict[str, Any]:
        return {
            "display_name": channel.display_name,
            "kind": channel.kind.value,
            "config": json.dumps(config_public(channel.config)),
            "sealed_secrets": self._seal_secrets(channel.owner_id, channel.id, config_secrets(channel.config)),
            "enabled": channel.enabled,
            "disabled_reason": channel.disabled_reason,
            "is_default": channel.is_default,
            "template_title": channel.template.title,
            "template_body": channel.template.body,
            "auth_failures": channel.auth_failures,
            "update_time": channel.update_time,
        }

    async def create_channel(self, owner_id: str, draft: ChannelDraft) -> Channel:
        """A new channel from a validated draft; RESOURCE_EXHAUSTED past the per-owner quota."""
        assert draft.config is not None, "validate first"
        now = utc_now()
        channel = Channel(
            id=new_id("chn"),
            owner_id=owner_id,
            display_name=draft.display_name,
            config=draft.config,
            enabled=True if draft.enabled is None else draft.enabled,
            disabled_reason="",
            is_default=draft.is_default,
            template=draft.template,
            create_time=now,
            update_time=now,
        )
        values = {"id": channel.id, "owner_id": owner_id, "create_time": now, **self._channel_values(channel)}
        await self._db.run(
            lambda c: insert_under_quota(c, ChannelRow, values, ChannelRow.owner_id == owner_id, self._quota)
        )
        return channel

    async def get_channel(self, owner_id: str, channel_id: str) -> Channel:
        query = sa.select(*_CHANNEL).where(ChannelRow.id == channel_id, ChannelRow.owner_id == owner_id)
        row = await self._db.run(lambda c: c.execute(query).first())
        if row is None:
            raise NotFound("channel", channel_id)
        return self._channel(row)

    async def channel(self, channel_id: str) -> Channel | None:
        """Any owner's channel (for the delivery worker), None when deleted."""
        row = await self._db.run(lambda c: c.execute(_GET_CHANNEL, {"channel_id": channel_id}).first())
        return None if row is None else self._channel(row)

    async def channels(self, channel_ids: Sequence[str]) -> dict[str, Channel]:
        """Any owners' channels by id (for the delivery worker); deleted ones are left out."""
        params = {"channel_ids": list(channel_ids)}
        return await self._db.run(lambda c: {row.id: self._channel(row) for row in c.execute(_GET_CHANNELS, params)})

    async def channel_kinds(self, channel_ids: Sequence[str]) -> dict[str, ChannelKind]:
        query = sa.select(ChannelRow.id, ChannelRow.kind).where(ChannelRow.id.in_(list(channel_ids)))
        return await self._db.run(lambda c: {row.id: ChannelKind(row.kind) for row in c.execute(query)})

    async def list_channels(self, owner_id: str, after_id: str | None, limit: int) -> list[Channel]:
        query = sa.select(*_CHANNEL).where(ChannelRow.owner_id == owner_id).order_by(ChannelRow.id).limit(limit)
        if after_id is not None:
            query = query.where(ChannelRow.id > after_id)
        return await self._db.run(lambda c: [self._channel(row) for row in c.execute(query)])

    async def channels_for(self, owner_id: str, channel_ids: Sequence[str]) -> list[Channel]:
        """The owner's channels named (in order), or their default channels when none is named; NOT_FOUND
        for a channel that is not theirs."""
        query = sa.select(*_CHANNEL).where(ChannelRow.owner_id == owner_id)
        if channel_ids:
            query = query.where(ChannelRow.id.in_(list(channel_ids)))
        else:
            query = query.where(ChannelRow.is_default.is_(True)).order_by(ChannelRow.id)
        found = {row.id: self._channel(row) for row in await self._db.run(lambda c: list(c.execute(query)))}
        for channel_id in channel_ids:
            if channel_id not in found:
                raise NotFound("channel", channel_id)
        return [found[i] for i in channel_ids] if channel_ids else list(found.values())

    async def save_channel(self, channel: Channel, *, with_state: bool) -> Channel:
        """Store a changed channel and return it as now stored. Without ``with_state`` its enabled state,
        disabled reason and failure count stay as stored: the delivery worker may have disabled the channel
        since the caller read it, and an edit of its name or template must not switch it back on."""
        values = self._channel_values(channel)
        if not with_state:
            for column in ("enabled", "disabled_reason", "auth_failures"):
                del values[column]
        update = (
            sa.update(ChannelRow)
            .where(ChannelRow.id == channel.id, ChannelRow.owner_id == channel.owner_id)
            .values(values)
        )
        if await self._db.run(lambda c: c.execute(update).rowcount) == 0:
            raise NotFound("channel", channel.id)
        return await self.get_channel(channel.owner_id, channel.id)

    async def delete_channel(self, owner_id: str, channel_id: str) -> None:
        """Delete a channel and drop its deliveries that were still waiting to be sent."""

        def delete(c: sa.Connection) -> int:
            deleted = c.execute(
                sa.delete(ChannelRow).where(ChannelRow.id == channel_id, ChannelRow.owner_id == owner_id)
            ).rowcount
            if deleted:
                waiting = sa.select(DeliveryRow.id).where(
                    DeliveryRow.channel_id == channel_id, DeliveryRow.state.in_(OPEN_STATES)
                )
                ids = [row.id for row in c.execute(waiting)]
                if ids:
                    c.execute(sa.delete(AttemptRow).where(AttemptRow.delivery_id.in_(ids)))
                    c.execute(sa.delete(DeliveryRow).where(DeliveryRow.id.in_(ids)))
            return deleted

        if await self._db.run(delete) == 0:
            raise NotFound("channel", channel_id)

    async def note_channel_answer(self, channel_id: str, auth_failure: bool, disable_after: int, reason: str) -> bool:
        """Count a 401/403/404/410 answer (or reset the count on any other); disable the channel when the
        count reaches ``disable_after``. True when this call disabled it."""

        def note(c: sa.Connection) -> bool:
            if not auth_failure:
                c.execute(
                    sa.update(ChannelRow)
                    .where(ChannelRow.id == channel_id, ChannelRow.auth_failures != 0)
                    .values(auth_failures=0)
                )
                return False
            c.execute(
                sa.update(ChannelRow)
                .where(ChannelRow.id == channel_id)
                .values(auth_failures=ChannelRow.auth_failures + 1)
            )
            disable = (
                sa.update(ChannelRow)
                .where(
                    ChannelRow.id == channel_id,
                    ChannelRow.enabled.is_(True),
                    ChannelRow.auth_failures >= disable_after,
                )
                .values(enabled=False, disabled_reason=reason[:500], update_time=utc_now())
            )
            return bool(c.execute(disable).rowcount)

        return await self._db.run(note)
