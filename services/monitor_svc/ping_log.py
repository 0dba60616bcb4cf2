"""The latest pings of each heartbeat monitor (SQLite or MySQL, table ``heartbeat_pings``): at most
:data:`~services.monitor_svc.heartbeats.KEPT_PINGS` a monitor, the older ones deleted as new ones come."""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from service_runtime.database import Database, UtcDateTime
from services.monitor_svc.domain import Ping, PingKind, PingRecord
from services.monitor_svc.heartbeats import KEPT_PINGS
from services.monitor_svc.schema import Base


class HeartbeatPingRow(Base):
    __tablename__ = "heartbeat_pings"

    id: Mapped[int] = mapped_column(sa.Integer(), primary_key=True, autoincrement=True)
    monitor_id: Mapped[str] = mapped_column(sa.ForeignKey("monitors.id", ondelete="CASCADE"))
    time: Mapped[datetime] = mapped_column(UtcDateTime())
    kind: Mapped[str] = mapped_column(sa.String(16))
    exit_status: Mapped[int | None] = mapped_column(sa.Integer(), nullable=True)
    run_time_s: Mapped[float | None] = mapped_column(sa.Float(), nullable=True)
    body: Mapped[str] = mapped_column(sa.Text())
    body_truncated: Mapped[bool] = mapped_column(sa.Boolean())
    method: Mapped[str] = mapped_column(sa.String(8))
    remote_address: Mapped[str] = mapped_column(sa.String(64))
    user_agent: Mapped[str] = mapped_column(sa.String(200))


_COLUMNS = tuple(HeartbeatPingRow.__table__.columns)


class SqlPingLog:
    """:class:`~services.monitor_svc.heartbeats.PingLog` in the monitor service's database."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def add(self, monitor_id: str, record: PingRecord) -> None:
        ping = record.ping
        values = {
            "monitor_id": monitor_id,
            "time": record.time,
            "kind": ping.kind.value,
            "exit_status": ping.exit_status,
            "run_time_s": None if record.run_time is None else record.run_time.total_seconds(),
            "body": ping.body,
            "body_truncated": ping.body_truncated,
            "method": ping.method[:8],
            "remote_address": ping.remote_address[:64],
            "user_agent": ping.user_agent[:200],
        }
        row = HeartbeatPingRow
        oldest_kept = (
            sa.select(row.id)
            .where(row.monitor_id == monitor_id)
            .order_by(row.id.desc())
            .offset(KEPT_PINGS - 1)
            .limit(1)
        )

        def insert(c: sa.Connection) -> None:
            c.execute(sa.insert(row).values(**values))
            boundary = c.execute(oldest_kept).scalar()
            if boundary is not None:
                c.execute(sa.delete(row).where(row.monitor_id == monitor_id, row.id < boundary))

        await self._db.run(insert)

    async def unfinished_starts(self) -> dict[str, datetime]:
        newest = sa.select(sa.func.max(HeartbeatPingRow.id)).group_by(HeartbeatPingRow.monitor_id)
        query = sa.select(HeartbeatPingRow.monitor_id, HeartbeatPingRow.time).where(
            HeartbeatPingRow.kind == PingKind.START.value, HeartbeatPingRow.id.in_(newest)
        )
        rows = await self._db.run(lambda c: list(c.execute(query)))
        return {row.monitor_id: row.time for row in rows}

    async def latest(self, monitor_id: str, limit: int, offset: int = 0) -> list[PingRecord]:
        query = (
            sa.select(*_COLUMNS)
            .where(HeartbeatPingRow.monitor_id == monitor_id)
            .order_by(HeartbeatPingRow.id.desc())
            .offset(offset)
            .limit(limit)
        )
        rows = await self._db.run(lambda c: list(c.execute(query)))
        return [
            PingRecord(
                time=row.time,
                ping=Ping(
                    kind=PingKind(row.kind),
                    exit_status=row.exit_status,
                    body=row.body,
                    body_truncated=bool(row.body_truncated),
                    method=row.method,
                    remote_address=row.remote_address,
                    user_agent=row.user_agent,
                ),
                run_time=None if row.run_time_s is None else timedelta(seconds=row.run_time_s),
            )
            for row in rows
        ]
