"""The notification service's tables: channels (the channel store's) and the delivery queue's deliveries,
attempts and idempotency keys, on the ORM base the Alembic environment reads.

Both stores declare on this module rather than on one another: deleting a channel drops its waiting
deliveries in the same transaction.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from service_runtime.database import UtcDateTime


class Base(DeclarativeBase):
    pass


class ChannelRow(Base):
    __tablename__ = "notify_channels"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    owner_id: Mapped[str] = mapped_column(sa.String(32))
    display_name: Mapped[str] = mapped_column(sa.String(200))
    kind: Mapped[str] = mapped_column(sa.String(16))
    config: Mapped[str] = mapped_column(sa.Text())
    sealed_secrets: Mapped[str] = mapped_column(sa.Text())
    enabled: Mapped[bool] = mapped_column(sa.Boolean())
    disabled_reason: Mapped[str] = mapped_column(sa.String(500))
    is_default: Mapped[bool] = mapped_column(sa.Boolean())
    template_title: Mapped[str] = mapped_column(sa.Text())
    template_body: Mapped[str] = mapped_column(sa.Text())
    auth_failures: Mapped[int] = mapped_column(sa.Integer())
    create_time: Mapped[datetime] = mapped_column(UtcDateTime())
    update_time: Mapped[datetime] = mapped_column(UtcDateTime())


class DeliveryRow(Base):
    __tablename__ = "notify_deliveries"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    owner_id: Mapped[str] = mapped_column(sa.String(32))
    channel_id: Mapped[str] = mapped_column(sa.String(32))
    email_address: Mapped[str] = mapped_column(sa.String(254))
    idempotency_key: Mapped[str] = mapped_column(sa.String(200))
    kind: Mapped[str] = mapped_column(sa.String(24))
    sealed_notification: Mapped[bytes] = mapped_column(sa.LargeBinary())
    state: Mapped[str] = mapped_column(sa.String(16))
    attempt_count: Mapped[int] = mapped_column(sa.Integer())
    next_attempt_time: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    create_time: Mapped[datetime] = mapped_column(UtcDateTime())
    update_time: Mapped[datetime] = mapped_column(UtcDateTime())


class AttemptRow(Base):
    __tablename__ = "notify_attempts"

    id: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True)
    delivery_id: Mapped[str] = mapped_column(sa.String(32))
    attempt_time: Mapped[datetime] = mapped_column(UtcDateTime())
    outcome: Mapped[str] = mapped_column(sa.String(16))
    response_code: Mapped[int] = mapped_column(sa.Integer())
    error: Mapped[str] = mapped_column(sa.String(500))
    duration_ms: Mapped[float] = mapped_column(sa.Float())


class IdempotencyRow(Base):
    __tablename__ = "notify_idempotency_keys"

    key: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    owner_id: Mapped[str] = mapped_column(sa.String(32))
    delivery_ids: Mapped[str] = mapped_column(sa.Text())
    create_time: Mapped[datetime] = mapped_column(UtcDateTime())
